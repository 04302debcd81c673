"""Plumbing once (docs/style.md, issue 16 §3): the warehouse's catalog and its transactions are asked in one place,
`gtm_pipeline/warehouse.py` (`existing_tables`, `table_exists`, `transaction`). A copy elsewhere drifts: the six
inline BEGIN/COMMIT/ROLLBACK blocks once differed in whether an interrupt rolled back."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

PACKAGE = REPO / "gtm_pipeline"
# The SLO history is SQLite, not the warehouse: its BEGIN IMMEDIATE is SQLite's write lock, not a DuckDB transaction.
NOT_THE_WAREHOUSE = {"gtm_pipeline/slo/history.py"}
RULES = [
    (re.compile(r"information_schema\.tables"), "warehouse.existing_tables(con, schema) or table_exists(...)"),
    (re.compile(r"""execute\(\s*["'](BEGIN|COMMIT|ROLLBACK)\b"""), "with warehouse.transaction(con): ..."),
]


def offenders(text: str, rel: str) -> list[str]:
    out = []
    for rx, fix in RULES:
        for m in rx.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append(f"{rel}:{line}: {m.group(0)!r}; use {fix}")
    return out


def test_catalog_and_transactions_live_in_the_warehouse_module():
    found = []
    for p in sorted(PACKAGE.rglob("*.py")):
        rel = p.relative_to(REPO).as_posix()
        if rel == "gtm_pipeline/warehouse.py" or rel in NOT_THE_WAREHOUSE:
            continue
        found += offenders(p.read_text(), rel)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("text", ['con.execute("BEGIN TRANSACTION")', "con.execute('ROLLBACK')",
                                  'q("SELECT 1 FROM information_schema.tables WHERE table_schema = ?")'])
def test_the_check_sees_a_copy(text):
    assert offenders(text, "x.py")
