"""The floor: DuckDB reading every landing file of a size once, the least any pipeline over those bytes can cost."""

from __future__ import annotations

import math
import time
from pathlib import Path

from gtm_pipeline.bench.config import FLOOR_ROUNDS
from gtm_pipeline.bench.sampling import ru_maxrss
from gtm_pipeline.config import load_settings
from gtm_pipeline.ingest.landing import load_landing_spec


def floor_queries(landing: Path) -> list[str]:
    """One ``count(*)`` per landing export over a glob of all its days: the same bytes the pipeline reads.

    The plainest read DuckDB can do, so the ratio is strict: every value read as text (as ingestion does), tolerant
    of the generated defects (``ignore_errors``: malformed lines, latin-1 bytes), and no ``union_by_name`` (it
    sniffs every file's header and triples the time; renamed columns do not change a count).
    """
    spec = load_landing_spec(load_settings().contracts_dir)
    out = []
    for t in spec.tables():
        if not any((landing / t.source).glob(f"*/{t.name}.{t.format}")):
            continue
        glob = (landing / t.source / "*" / f"{t.name}.{t.format}").as_posix().replace("'", "''")
        if t.format == "csv":
            src = f"read_csv('{glob}', header=true, all_varchar=true, ignore_errors=true, strict_mode=false)"
        elif t.format == "jsonl":
            src = f"read_json('{glob}', format='newline_delimited', ignore_errors=true)"
        else:
            src = f"read_parquet('{glob}')"
        out.append(f"SELECT count(*) FROM {src}")
    return out


def job_floor(job: dict) -> dict:
    """The floor, best of FLOOR_ROUNDS reads (each on a fresh connection): a floor is a lower bound, and the fastest
    read is the one least disturbed by other work on the machine."""
    import duckdb

    queries = floor_queries(Path(job["landing"]))
    best, rows = math.inf, 0
    for _ in range(FLOOR_ROUNDS):
        t0 = time.perf_counter()
        con = duckdb.connect()
        rows = sum(con.execute(sql).fetchall()[0][0] for sql in queries)
        con.close()
        best = min(best, time.perf_counter() - t0)
    return {"seconds": best, "rows": int(rows), "queries": len(queries), "ru_maxrss": ru_maxrss()}
