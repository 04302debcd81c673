"""Benign spelling variants and injected defects, and the assembly of each file's final rows.

Every record gets at most one defect. Each injected defect is recorded with the file and line where it ended up
(1-based physical line for CSV incl. the header and for JSONL; 0-based row index for Parquet), so tests and the
pipeline can find it. Late records and next-day duplicates are carried to the day they are delivered on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import gtm_pipeline.generate.catalog as C
from gtm_pipeline.generate.config import GenerateConfig
from gtm_pipeline.generate.timeutil import DAY, day_string, fmt_ts
from gtm_pipeline.generate.writer import csv_header, csv_lines, jsonl_lines, parquet_bytes, text_bytes

KINDS = ("bad_enum", "out_of_range", "missing_owner", "duplicate", "malformed", "wrong_type", "late")
S_VARIANTS, S_DEFECTS, S_CHOOSE = 101, 102, 103


@dataclass(frozen=True)
class Spec:
    key: str  # the record's id column
    event: str  # the record's event-time column
    enums: dict  # column -> vocabulary name in catalog.ENUM_VALUES / BAD_ENUM_VALUES
    wrong_type: tuple = ()  # (column, (bad values, ...)), ...


SPECS = {
    "crm.accounts": Spec("account_id", "created_at", {"industry": "industry", "region": "region", "segment": "segment"},
                         (("employees", ("about 500", "many")), ("created_at", ("yesterday",)))),
    "crm.contacts": Spec("contact_id", "created_at", {}, (("created_at", ("yesterday",)),)),
    "crm.leads": Spec("lead_id", "created_at",
                      {"channel": "channel", "industry": "industry", "region": "region", "segment": "segment",
                       "status": "status", "dq_reason": "dq_reason", "routed_by": "routed_by"},
                      (("score", ("high", "very high")), ("created_at", ("yesterday",)))),
    "crm.opportunities": Spec("opportunity_id", "created_at",
                              {"stage": "stage", "segment": "segment", "region": "region", "industry": "industry",
                               "channel": "channel"},
                              (("seats", ("ten",)), ("amount", ("12k",)), ("discount", ("ten percent",)),
                               ("created_at", ("yesterday",)))),
    "crm.opportunity_stages": Spec("stage_event_id", "changed_at", {"from_stage": "stage", "to_stage": "stage"},
                                   (("amount", ("12k",)), ("changed_at", ("yesterday",)))),
    "web.sessions": Spec("session_id", "started_at", {"channel": "channel"}, (("started_at", ("yesterday",)),)),
    "web.pageviews": Spec("pageview_id", "viewed_at", {},
                          (("time_on_page_s", ("long",)), ("viewed_at", ("yesterday",)))),
    "web.form_fills": Spec("form_fill_id", "submitted_at", {"channel": "channel"},
                           (("submitted_at", ("yesterday",)),)),
    "calendar.events": Spec("event_id", "start_at", {"type": "type", "status": "calendar_status"},
                            (("start_at", ("yesterday",)),)),
    "vendors.firmographics": Spec("record_id", "observed_at", {"industry": "industry", "region": "region"}),
    "vendors.intent": Spec("record_id", "observed_at", {}),
    "vendors.costs": Spec("cost_id", "date", {"channel": "channel"}),
    "ads.spend": Spec("campaign_id", "date", {"channel": "channel"},
                      (("impressions", ("lots",)), ("clicks", ("many",)), ("spend", ("12k",)),
                       ("date", ("yesterday",)))),
}
TABLE_INDEX = {t: i for i, t in enumerate(sorted(SPECS) + ["crm.owners"])}
_VARIANTS: dict[str, tuple[str, ...]] = {}


def _variants_of(value: str) -> tuple[str, ...]:
    if value not in _VARIANTS:
        _VARIANTS[value] = C.benign_variants(value)
    return _VARIANTS[value]


@dataclass
class FileOut:
    data: bytes
    rows: int
    defects: list[dict] = field(default_factory=list)
    variants: int = 0


class Injector:
    def __init__(self, cfg: GenerateConfig, contract: dict[str, dict]):
        self.cfg = cfg
        self.rates = cfg.defects
        self.contract = contract
        self.days = cfg.days
        self.t0_day = (cfg.start.toordinal() - 719163)  # days since 1970-01-01
        rng = np.random.default_rng([cfg.seed, S_CHOOSE])
        k = min(self.rates.out_of_range_days, self.days) if self.rates.out_of_range > 0 else 0
        pool = np.arange(1, self.days) if self.days > 1 else np.arange(1)
        self.out_of_range_days = sorted(rng.choice(pool, size=min(k, pool.shape[0]), replace=False).tolist()) \
            if k else []
        self.encoding_left = self.rates.wrong_encoding
        self.encoding_from = self.days // 2
        self.carry: dict[tuple[int, str], list[tuple[dict, dict | None]]] = {}

    def rng(self, stream: int, d: int, table: str) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, stream, d, TABLE_INDEX[table]])

    def file_of(self, d: int, table: str) -> str:
        c = self.contract[table]
        return f"{c['source']}/{day_string(self.t0_day + d)}/{c['table']}.{c['format']}"

    # --- benign variants -----------------------------------------------------------------------------------------
    def variants(self, d: int, table: str, block: dict[str, np.ndarray]) -> int:
        spec = SPECS.get(table)
        if spec is None or self.cfg.variant_rate <= 0:
            return 0
        rng = self.rng(S_VARIANTS, d, table)
        count = 0
        for col in spec.enums:
            values = block[col]
            hit = np.flatnonzero(rng.random(values.shape[0]) < self.cfg.variant_rate)
            pick = rng.integers(0, 1 << 30, hit.shape[0])
            for i, p in zip(hit.tolist(), pick.tolist()):
                v = values[i]
                if v is None:
                    continue
                opts = _variants_of(v)
                if opts:
                    values[i] = opts[p % len(opts)]
                    count += 1
        return count

    # --- one file ------------------------------------------------------------------------------------------------
    def process(self, d: int, table: str, block: dict[str, np.ndarray], ev_day: np.ndarray,
                columns: list[str]) -> FileOut:
        c = self.contract[table]
        fmt = c["format"]
        n = len(block[columns[0]]) if columns else 0
        n_variants = self.variants(d, table, block)
        spec = SPECS.get(table)
        rel = self.file_of(d, table)
        rename = {}
        if table == "crm.opportunities" and self.rates.drift_day_offset is not None \
                and d == self.rates.drift_day_offset:
            rename = {"amount": "amount_usd"}
        rng = self.rng(S_DEFECTS, d, table)

        row_defect: dict[int, dict] = {}
        quoted: dict[str, set[int]] = {}  # pre-assembly row -> value defects written as JSON strings
        line_mods: dict[int, str] = {}
        late = np.zeros(n, bool)
        dups: list[int] = []
        dup_records: list[tuple[int, dict]] = []  # (original row, the copy's defect record)
        latin1: set[int] = set()

        def record(kind, column, value, note):
            return {"kind": kind, "source": c["source"], "table": c["table"], "column": column, "value": value,
                    "note": note}

        if spec is not None and n:
            rates = self._rates(d, table, fmt, spec)
            cum = np.cumsum(rates)
            u = rng.random(n)
            kind_of = np.searchsorted(cum, u, side="right")
            oor = KINDS.index("out_of_range")
            if rates[oor] > 0 and not (kind_of == oor).any():
                kind_of[int(rng.integers(0, n))] = oor  # a chosen out-of-range day always has at least one
            for i in np.flatnonzero(kind_of < len(KINDS)).tolist():
                kind = KINDS[kind_of[i]]
                dfx = None
                if kind == "bad_enum":
                    cols = [col for col in spec.enums if block[col][i] is not None]
                    if cols:
                        col = cols[int(rng.integers(0, len(cols)))]
                        bad = C.BAD_ENUM_VALUES[spec.enums[col]]
                        value = bad[int(rng.integers(0, len(bad)))]
                        block[col][i] = value
                        quoted.setdefault(col, set()).add(i)
                        dfx = record(kind, col, value, f"{col} is not in the {spec.enums[col]} vocabulary")
                elif kind == "wrong_type":
                    cands = [(col, vals) for col, vals in spec.wrong_type if block[col][i] is not None]
                    if cands:
                        col, vals = cands[int(rng.integers(0, len(cands)))]
                        value = vals[int(rng.integers(0, len(vals)))]
                        block[col][i] = value
                        quoted.setdefault(col, set()).add(i)
                        dfx = record(kind, col, value, f"{col} holds text of the wrong type")
                elif kind == "out_of_range":
                    dfx = self._out_of_range(rng, block, i, record)
                elif kind == "missing_owner":
                    block["owner_id"][i] = None
                    dfx = record(kind, "owner_id", "", "opportunity without an owner")
                elif kind == "malformed":
                    choices = ("truncated",) if fmt == "jsonl" else ("missing_field", "extra_field",
                                                                      "unterminated_quote")
                    line_mods[i] = choices[int(rng.integers(0, len(choices)))]
                    dfx = record(kind, None, None, line_mods[i].replace("_", " "))
                elif kind == "duplicate":
                    same_file = rng.random() < 0.5 or d + 1 >= self.days or (
                        table == "web.sessions" and self.rates.extra_key_day_offset is not None
                        and d + 1 == self.rates.extra_key_day_offset)
                    key = block[spec.key][i]
                    if same_file:
                        dups.append(i)
                        dup_records.append((i, record(kind, spec.key, key, "")))
                    else:
                        row = {col: block[col][i] for col in block}
                        dup = record(kind, spec.key, key, "")
                        self.carry.setdefault((d + 1, table), []).append((row, dup))
                        dup_records.append((i, dup))
                    continue
                elif kind == "late":
                    k = int(rng.integers(2, 7))
                    if ev_day[i] == d and d + k < self.days:
                        late[i] = True
                        value = block[spec.event][i]
                        if table == "vendors.firmographics":
                            value = fmt_ts(np.array([value]), "iso_z")[0]
                        row = {col: block[col][i] for col in block}
                        self.carry.setdefault((d + k, table), []).append(
                            (row, record(kind, spec.event, value,
                                         f"event day {day_string(self.t0_day + d)} delivered {k} days late")))
                    continue
                if dfx is not None:
                    row_defect[i] = dfx
            if table == "crm.contacts" and self.encoding_left > 0 and d >= self.encoding_from:
                taken = set(row_defect) | {j for j, _ in dup_records}
                clean = [i for i in range(n) if i not in taken and not late[i]]
                if clean:
                    i = clean[int(rng.integers(0, len(clean)))]
                    block["last_name"][i] = "M\u00fcller"
                    latin1.add(i)
                    row_defect[i] = record("malformed", "last_name", "M\u00fcller",
                                           "line encoded as latin-1, not UTF-8 (invalid UTF-8 byte 0xFC)")
                    self.encoding_left -= 1

        # assemble: kept rows, rows delivered today from earlier days, then same-file duplicate copies
        kept = np.flatnonzero(~late)
        pos = np.full(n, -1, np.int64)
        pos[kept] = np.arange(kept.shape[0])
        carried = self.carry.pop((d, table), [])
        all_cols = list(columns)
        final = {}
        for col in all_cols:
            parts = [block[col][kept]]
            if carried:
                parts.append(np.array([r.get(col) for r, _ in carried] + [None], dtype=object)[:-1])
            if dups:
                parts.append(block[col][np.array(dups, dtype=np.int64)])
            final[col] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        n_final = kept.shape[0] + len(carried) + len(dups)
        first_line = 2 if fmt == "csv" else 1 if fmt == "jsonl" else 0

        placed: list[tuple[int, dict]] = []
        for i, dfx in row_defect.items():
            placed.append((int(pos[i]), dfx))
        for j, (_, dfx) in enumerate(carried):
            if dfx is not None:
                placed.append((kept.shape[0] + j, dfx))
        dup_pos = {}
        for j, i in enumerate(dups):
            dup_pos[i] = kept.shape[0] + len(carried) + j
        for i, dfx in dup_records:
            unit = "row" if fmt == "parquet" else "line"
            again = "appended to the same file" if i in dup_pos else "re-delivered in the next day's file"
            dfx["note"] = f"exact copy of {rel} {unit} {int(pos[i]) + first_line}, {again}"
            if i in dup_pos:
                placed.append((dup_pos[i], dfx))

        quoted_final = {col: {int(pos[i]) for i in rows if pos[i] >= 0} for col, rows in quoted.items()}
        latin1_final = {int(pos[i]) for i in latin1}

        out_cols = [rename.get(col, col) for col in all_cols]
        if fmt == "csv":
            lines = csv_lines(all_cols, final)
            header = csv_header(out_cols)
        elif fmt == "jsonl":
            final_renamed = {rename.get(k, k): v for k, v in final.items()}
            quoted_renamed = {rename.get(k, k): v for k, v in quoted_final.items()}
            lines = jsonl_lines(table, out_cols, final_renamed, quoted_renamed)
            header = None
        else:
            data = parquet_bytes(table, out_cols, {rename.get(k, k): v for k, v in final.items()})
            lines, header = None, None

        defects_out = []
        if lines is not None:
            for i, variant in line_mods.items():
                p = int(pos[i])
                line = lines[p]
                if variant == "truncated":
                    line = line[: max(1, len(line) // 2)]
                elif variant == "missing_field":
                    line = line.rsplit(",", 1)[0]
                elif variant == "extra_field":
                    line = line + ",unexpected"
                else:
                    cut = line.find(",") + 1
                    line = line[:cut] + '"' + line[cut:]
                lines[p] = line
                row_defect[i]["value"] = line
            data = text_bytes(header, lines, latin1_final)

        day_text = day_string(self.t0_day + d)
        for p, dfx in sorted(placed, key=lambda x: x[0]):
            if dfx.get("column") in rename:
                dfx["column"] = rename[dfx["column"]]
            dfx.update({"day": day_text, "file": rel, "line": p + first_line})
            defects_out.append(dfx)
        if rename:
            defects_out.insert(0, {"kind": "schema_drift", "source": c["source"], "table": c["table"],
                                   "day": day_text, "file": rel, "line": 1, "column": "amount_usd",
                                   "value": "amount_usd",
                                   "note": "column amount renamed to amount_usd (a known alias) in this file"})
        extra = [col for col in all_cols if col not in c["columns"]]
        if extra and n_final:
            defects_out.insert(0, {"kind": "schema_drift", "source": c["source"], "table": c["table"],
                                   "day": day_text, "file": rel, "line": first_line, "column": extra[0],
                                   "value": extra[0],
                                   "note": f"extra key {extra[0]} (not in the landing spec) on every line of this "
                                           "file and of later files"})
        return FileOut(data=data, rows=n_final, defects=defects_out, variants=n_variants)

    def _rates(self, d: int, table: str, fmt: str, spec: Spec) -> np.ndarray:
        r = self.rates
        text = fmt in ("csv", "jsonl")
        opp = table == "crm.opportunities"
        return np.array([
            r.bad_enum if spec.enums else 0.0,
            r.out_of_range if opp and d in self.out_of_range_days else 0.0,
            r.missing_owner if opp else 0.0,
            r.duplicate,
            r.malformed if text else 0.0,
            r.wrong_type if text and spec.wrong_type else 0.0,
            r.late,
        ])

    @staticmethod
    def _out_of_range(rng, block, i, record):
        amount = block["amount"][i]
        options = ["discount", "seats"]
        if amount is not None and float(amount) * 1000 > 5_000_000:
            options.insert(0, "amount")
        what = options[int(rng.integers(0, len(options)))]
        if what == "amount":
            value = f"{float(amount) * 1000:.2f}"
            note = "amount multiplied by 1000 (above $5M)"
        elif what == "discount":
            value = "1.50"
            note = "discount above 1"
        else:
            value = "-3"
            note = "negative seats"
        block[what][i] = value
        return record("out_of_range", what, value, note)


def event_days(ts: np.ndarray, t0: int) -> np.ndarray:
    return (np.asarray(ts, dtype=np.int64) - t0) // DAY
