"""Enrichment (issue 19 §1, Layer A): one firmographic profile per account, and how often vendors disagree with it.

``metrics.account_profile``: per account and field (industry, size band, region) the value the product uses -- the
CRM's (``clean.account``) when it has one, otherwise the newest vendor value (``clean.firmographic`` by
``observed_at``; ties by vendor, then record id, so the pick never depends on the order rows arrived in) -- with its
source (``crm`` or ``vendor:<name>``), so a score built on a vendor's guess says so.

``metrics.enrichment_conflict_rate``: per field and vendor (and over every vendor, ``all``), among the accounts where
the CRM and the vendor's newest record both have a value, how many differ. A vendor's row for an account the CRM
does not have, or a field one side leaves empty, is not a comparison.
"""

from __future__ import annotations

from gtm_pipeline.metrics.registry import BuildContext, computation

FIELDS = ("industry", "size_band", "region")


def _newest(firm: str, field: str, by_vendor: bool) -> str:
    """The newest non-empty value of ``field`` per account (and vendor): the record that wins a tie is fixed."""
    part = "account_id, vendor" if by_vendor else "account_id"
    return (f"SELECT account_id, vendor, CAST({field} AS VARCHAR) AS v FROM {firm} "
            f"WHERE {field} IS NOT NULL AND account_id IS NOT NULL "
            f"QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY observed_at DESC NULLS LAST, vendor, "
            f"record_id) = 1")


@computation(
    "account_profile", reads=("clean.account", "clean.firmographic"), order_by="account_id",
    columns=("account_id", *(c for f in FIELDS for c in (f, f"{f}_source")), "vendor_fields", "fields"),
)
def account_profile(con, ctx: BuildContext) -> str:
    acc, firm = ctx.table("clean.account"), ctx.table("clean.firmographic")
    ctes = ", ".join(f"n_{f} AS ({_newest(firm, f, by_vendor=False)})" for f in FIELDS)
    cols = ", ".join(
        f"coalesce(CAST(a.{f} AS VARCHAR), n_{f}.v) AS {f}, "
        f"CASE WHEN a.{f} IS NOT NULL THEN 'crm' WHEN n_{f}.v IS NOT NULL THEN 'vendor:' || "
        f"coalesce(n_{f}.vendor, 'unknown') END AS {f}_source" for f in FIELDS)
    joins = " ".join(f"LEFT JOIN n_{f} ON n_{f}.account_id = a.account_id" for f in FIELDS)
    # How much of the profile rests on a vendor's word: fields filled from a vendor, of the fields there are.
    vendor = " + ".join(f"CAST(a.{f} IS NULL AND n_{f}.v IS NOT NULL AS INTEGER)" for f in FIELDS)
    return (f"WITH {ctes} SELECT a.account_id, {cols}, {vendor} AS vendor_fields, {len(FIELDS)} AS fields "
            f"FROM {acc} a {joins}")


@computation(
    "enrichment_conflict_rate", reads=("clean.account", "clean.firmographic"), order_by="field, vendor",
    columns=("field", "vendor", "compared", "conflicts"),
)
def enrichment_conflict_rate(con, ctx: BuildContext) -> str:
    acc, firm = ctx.table("clean.account"), ctx.table("clean.firmographic")
    pairs = " UNION ALL ".join(
        f"SELECT '{f}' AS field, coalesce(n.vendor, 'unknown') AS vendor, n.v AS vendor_value, "
        f"CAST(a.{f} AS VARCHAR) AS crm_value FROM ({_newest(firm, f, by_vendor=True)}) n "
        f"JOIN {acc} a ON a.account_id = n.account_id WHERE a.{f} IS NOT NULL" for f in FIELDS)
    return f"""
        WITH pairs AS ({pairs})
        SELECT field, coalesce(vendor, 'all') AS vendor, count(*) AS compared,
               count(*) FILTER (WHERE vendor_value <> crm_value) AS conflicts
        FROM pairs GROUP BY GROUPING SETS ((field, vendor), (field))"""
