"""The version timeline from Dagster's event log: the source of truth for "age of the published version".

A metric publishes through write-audit-publish: a successful publish materializes with metadata ``published: true``,
``published_at`` (when readers started to see it) and ``data_time`` (how far its inputs are complete; a timestamp)
plus ``blocked_inputs`` when blocked upstream partitions stopped that data time; a blocked publish materializes with
``published: false`` and keeps the previous version in force, so it does not reset the age (docs/design.md §4: a blocked
publish burns freshness budget). An asset that does not use the convention (no ``published`` key) publishes whenever
it materializes; without ``data_time`` its data is taken to be as old as the publication.

The event log is readable while a run holds the DuckDB write lock, which is why the sensor and the exporter use it
rather than ``ops.publications``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from gtm_pipeline.slo.history import History

_PAGE = 500


def _value(md: dict, key: str):
    v = md.get(key)
    return getattr(v, "value", v)


def parse_published_at(value, fallback: float) -> float:
    """ISO text (naive = UTC), epoch seconds or a datetime -> epoch seconds; ``fallback`` if absent/unreadable."""
    if value is None:
        return fallback
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime):
        dt = value
    else:
        try:
            dt = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return fallback
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def classify(record) -> tuple[bool, float]:
    """(published?, time): the publication time for a publish, the materialization time for a blocked one."""
    md = record.asset_materialization.metadata if record.asset_materialization else {}
    published = _value(md, "published")
    if published is False or (isinstance(published, str) and published.lower() == "false"):
        return False, record.timestamp
    return True, parse_published_at(_value(md, "published_at"), record.timestamp)


def data_time_of(record, published_at: float) -> tuple[float, tuple[str, ...]]:
    """(data time, blocked inputs) of a published version; the publication time when the asset records none."""
    md = record.asset_materialization.metadata if record.asset_materialization else {}
    # A write-audit-publish asset that could not name a data time (an input never published, or one written before
    # data time existed) is not vouched for: as old as the epoch, i.e. stale, never fresh by default.
    default = 0.0 if "published" in md else published_at
    data_time = parse_published_at(_value(md, "data_time"), default)
    blocking = _value(md, "blocked_inputs") or ()
    if isinstance(blocking, str):
        blocking = tuple(b.strip() for b in blocking.split(",") if b.strip())
    return data_time, tuple(str(b) for b in blocking)


def sync_asset(history: History, instance: dg.DagsterInstance, asset_key: str) -> int:
    """Copy materializations of ``asset_key`` newer than the stored cursor into the history. Returns rows added."""
    key = dg.AssetKey.from_user_string(asset_key)
    cursor = history.cursor(asset_key)
    if cursor:
        latest = instance.fetch_materializations(key, limit=1)
        if not latest.records or latest.records[0].storage_id < cursor:
            cursor = 0  # a different (new or reset) event log: re-read it all; stored rows are deduplicated
    added = 0
    page_cursor = None
    while True:
        res = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, after_storage_id=cursor or None),
                                              limit=_PAGE, cursor=page_cursor, ascending=True)
        published, blocked = [], []
        last = cursor
        for rec in res.records:
            ok, t = classify(rec)
            if ok:
                d, blocking = data_time_of(rec, t)
                published.append((t, rec.timestamp, rec.run_id, rec.storage_id, d, blocking))
            else:
                blocked.append((t, rec.run_id, rec.storage_id))
            last = max(last, rec.storage_id)
        if res.records:
            added += history.add_events(asset_key, published, blocked, last)
        if not res.has_more:
            return added
        page_cursor = res.cursor
