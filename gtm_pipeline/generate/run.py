"""generate(): simulate the business day by day and write each day's exports, the manifest last."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gtm_pipeline.errors import ContractError

from .config import GenerateConfig
from .defects import Injector, event_days
from .timeutil import day_string
from .truth import Truth
from .world import TABLES, World, event_time, sort_order, take
from .writer import load_contract

MANIFEST_VERSION = 1


def generate(out_dir: Path, config: GenerateConfig | None = None, progress: bool = True) -> dict:
    """Write ``<out_dir>/<source>/<YYYY-MM-DD>/<table>.<ext>`` for every day and table, then ``manifest.json``.

    The same config always produces the same bytes. Returns the manifest (config, row counts, files with their
    sha256, ground truth and every injected defect).
    """
    config = config or GenerateConfig()
    config.validate()
    out_dir = Path(out_dir)
    contract = load_contract()
    missing = [t for t in TABLES if t not in contract]
    if missing:
        raise ContractError(f"contracts/sources.yaml does not describe {', '.join(missing)}; the generator writes "
                            "these tables, so add them back to the landing spec")
    world = World(config)
    out = _Output(out_dir, contract, Injector(config, contract), Truth(world))
    for d in tqdm(range(config.days), desc="generate", unit="day", disable=not progress):
        world.simulate_day(d)
        raw = world.sched.pop(d)
        sessions = raw.get("web.sessions")
        if sessions:
            sessions = take(sessions, sort_order("web.sessions", sessions))
            raw["web.sessions"] = sessions
            raw["web.pageviews"] = world.pageviews(d, sessions)
        for table in TABLES:
            out.write(world, d, table, raw.get(table) or {})
    manifest = out.manifest(config, world.t0 // 86400)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "manifest.json", "w", encoding="utf-8", newline="\n") as f:
        json.dump(manifest, f, sort_keys=True, indent=2, ensure_ascii=False)  # streamed: the defect list can be long
        f.write("\n")
    return manifest


class _Output:
    """What the run has written so far: the files, their row counts, the injected defects and the ground truth."""

    def __init__(self, out_dir: Path, contract: dict, injector: Injector, truth: Truth):
        self.out_dir, self.contract, self.injector, self.truth = out_dir, contract, injector, truth
        self.row_counts: dict[str, dict[str, dict[str, int]]] = {}
        self.files: dict[str, dict] = {}
        self.defects: list[dict] = []
        self.variants = 0

    def write(self, world: World, d: int, table: str, R: dict) -> None:
        """One table's file of delivery day ``d``: export columns, defects injected, bytes written."""
        spec = self.contract[table]
        columns = list(spec["columns"])
        if R:
            R = take(R, sort_order(table, R))
            block = world.format_table(table, R, d)
            ev = event_days(event_time(table, R), world.t0)
        else:
            block = {c: np.zeros(0, dtype=object) for c in columns}
            ev = np.zeros(0, np.int64)
        self.truth.observe(table, R)
        missing_cols = [c for c in columns if c not in block]
        if missing_cols:
            raise ContractError(f"contracts/sources.yaml lists {missing_cols} for {table}, which the generator "
                                "does not produce; update the generator together with the landing spec")
        columns += [c for c in block if c not in columns]
        out = self.injector.process(d, table, block, ev, columns)
        rel = self.injector.file_of(d, table)
        path = self.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(out.data)
        self.files[rel] = {"rows": out.rows, "bytes": len(out.data), "sha256": hashlib.sha256(out.data).hexdigest()}
        day_text = day_string(world.t0 // 86400 + d)
        self.row_counts.setdefault(spec["source"], {}).setdefault(spec["table"], {})[day_text] = out.rows
        self.defects.extend(out.defects)
        self.variants += out.variants

    def manifest(self, config: GenerateConfig, t0_day: int) -> dict:
        totals = {src: sum(sum(days.values()) for days in tables.values()) for src, tables in self.row_counts.items()}
        by_kind: dict[str, int] = {}
        for dfx in self.defects:
            by_kind[dfx["kind"]] = by_kind.get(dfx["kind"], 0) + 1
        return {
            "manifest_version": MANIFEST_VERSION,
            "config": config.as_dict(),
            "conventions": {**_CONVENTIONS, "out_of_range_days": [day_string(t0_day + d)
                                                                   for d in self.injector.out_of_range_days]},
            "row_counts": self.row_counts,
            "totals": {"rows": sum(totals.values()), "by_source": totals},
            "files": self.files,
            "benign_variants": self.variants,
            "defect_counts": by_kind,
            "defects": self.defects,
            "truth": self.truth.result(),
        }


_CONVENTIONS = {
    "layout": "<source>/<YYYY-MM-DD>/<table>.<format>; the folder is the delivery day",
    "line": "1-based physical line for CSV (the header is line 1) and JSONL; 0-based row index for Parquet",
    "records": "one row per record, delivered on its event day: leads, calendar events and opportunities "
               "carry their state as of the end of the horizon (leads: latest status; opportunities: the "
               "stage at creation, later changes are in opportunity_stages); crm/owners is re-delivered "
               "with a newer updated_at when a rep changes; meetings booked for after the horizon are "
               "delivered on their booking day with status scheduled",
    "benign_variants": "enum cells sometimes use another spelling (case, spaces, hyphens, surrounding "
                       "blanks, or an alias from contracts/entities); not defects",
    "timestamps": "crm 'YYYY-MM-DD HH:MM:SS' UTC; web ISO-8601 with Z; calendar ISO-8601 with the "
                  "organiser's UTC offset; vendors/firmographics observed_at Parquet timestamp (UTC), "
                  "vendors/intent observed_at ISO-8601 text; ads and vendors/costs dates 'YYYY-MM-DD'",
}
