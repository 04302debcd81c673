"""What every part of the simulation shares: random stream ids, campaign tables, column-dict helpers, the
per-day schedule of records still to deliver and the growing set of companies."""

from __future__ import annotations

import numpy as np

import gtm_pipeline.generate.catalog as C
from gtm_pipeline.generate.timeutil import DAY, ZONE_NAMES

# Independent random streams: (seed, stream, day[, extra]) so that one part of the simulation does not shift another.
S_OWNERS, S_ADS, S_COSTS, S_SESSIONS, S_CRM_LEADS, S_LEADS, S_OPPS, S_CAL, S_RETURN, S_INTENT, S_FIRMO, \
    S_PAGEVIEWS, S_EVENTS, S_COMPANIES = range(1, 15)

N_ADS_CAMPAIGNS = len(C.CAMPAIGNS)
CAMPAIGN_IDS = tuple(c[1] for c in C.CAMPAIGNS) + tuple(f"EV-{5001 + i}" for i in range(len(C.EVENTS)))
CAMPAIGN_NAMES = tuple(c[2] for c in C.CAMPAIGNS) + tuple(e[1] for e in C.EVENTS)
CAMPAIGN_SOURCES = tuple(c[3] for c in C.CAMPAIGNS) + tuple(e[1] for e in C.EVENTS)
CAMPAIGN_MEDIUMS = tuple(c[4] for c in C.CAMPAIGNS) + ("event",) * len(C.EVENTS)
CAMPAIGN_CHANNEL = np.array([c[0] for c in C.CAMPAIGNS] + [4] * len(C.EVENTS), dtype=np.int64)
FORMS = ("demo_request", "contact_sales", "free_trial", "content_download", "webinar_registration")
FORM_WEIGHTS = np.array([0.35, 0.15, 0.2, 0.2, 0.1])
TZ_CODE = {name: i for i, name in enumerate(ZONE_NAMES)}

TABLES = ("crm.owners", "crm.accounts", "crm.contacts", "crm.leads", "crm.opportunities", "crm.opportunity_stages",
          "web.sessions", "web.pageviews", "web.form_fills", "calendar.events", "vendors.firmographics",
          "vendors.intent", "vendors.costs", "ads.spend")


def concat(parts: list[dict]) -> dict:
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def take(cols: dict, idx) -> dict:
    return {k: v[idx] for k, v in cols.items()}


def nrows(cols: dict) -> int:
    return 0 if not cols else len(next(iter(cols.values())))


def _i(n: int, fill: int = -1) -> np.ndarray:
    return np.full(n, fill, dtype=np.int64)


def _o(n: int, fill=None) -> np.ndarray:
    return np.full(n, fill, dtype=object)


def _choice(rng: np.random.Generator, weights, n: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    cdf = np.cumsum(w / w.sum())
    cdf[-1] = 1.0
    return np.searchsorted(cdf, rng.random(n), side="right").astype(np.int64)


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> np.ndarray:
    return np.exp(np.log(median) + sigma * rng.standard_normal(n))


class Schedule:
    """Raw rows waiting for their delivery day: day -> table -> list of column dicts."""

    def __init__(self, t0: int, days: int):
        self.t0, self.days = t0, days
        self.pending: dict[int, dict[str, list[dict]]] = {}

    def add(self, table: str, cols: dict, current_day: int) -> None:
        n = nrows(cols)
        if n == 0:
            return
        day = (cols["_ts"] - self.t0) // DAY
        if (day < current_day).any():
            raise AssertionError(f"{table}: a record was scheduled before day {current_day}")
        keep = day < self.days
        if not keep.all():
            cols, day = take(cols, keep), day[keep]
            if day.shape[0] == 0:
                return
        order = np.argsort(day, kind="stable")
        sday = day[order]
        uniq, starts = np.unique(sday, return_index=True)
        bounds = list(starts[1:]) + [sday.shape[0]]
        for u, a, b in zip(uniq.tolist(), starts.tolist(), bounds):
            self.pending.setdefault(u, {}).setdefault(table, []).append(take(cols, order[a:b]))

    def pop(self, day: int) -> dict[str, dict]:
        return {t: concat(parts) for t, parts in self.pending.pop(day, {}).items()}


class Companies:
    """Every company seen so far (grows as leads arrive); account data is indexed by company number."""

    def __init__(self):
        cap = 1024
        self.n = 0
        self.industry = np.zeros(cap, np.int64)
        self.size = np.zeros(cap, np.int64)
        self.region = np.zeros(cap, np.int64)
        self.employees = np.zeros(cap, np.int64)
        self.account_no = np.full(cap, -1, np.int64)
        self.ae = np.full(cap, -1, np.int64)
        self.hot = np.zeros(cap, bool)
        self.name = np.full(cap, None, object)
        self.domain = np.full(cap, None, object)

    _FILL = {"industry": 0, "size": 0, "region": 0, "employees": 0, "account_no": -1, "ae": -1, "hot": False,
             "name": None, "domain": None}

    def _grow(self, need: int) -> None:
        cap = self.industry.shape[0]
        if need <= cap:
            return
        new = max(need, cap * 2)
        for attr, fill in self._FILL.items():
            old = getattr(self, attr)
            arr = np.full(new, fill, old.dtype)
            arr[:cap] = old
            setattr(self, attr, arr)

    def add(self, rng: np.random.Generator, industry, size, region) -> np.ndarray:
        m = len(industry)
        self._grow(self.n + m)
        idx = np.arange(self.n, self.n + m)
        self.industry[idx], self.size[idx], self.region[idx] = industry, size, region
        lo = np.array([C.SIZE_EMPLOYEES[s][0] for s in size], dtype=np.float64)
        hi = np.array([C.SIZE_EMPLOYEES[s][1] for s in size], dtype=np.float64)
        self.employees[idx] = np.floor(np.exp(np.log(lo) + rng.random(m) * (np.log(hi + 1) - np.log(lo)))) \
            .clip(lo, hi).astype(np.int64)
        legal = rng.random(m)
        tld = _choice(rng, (0.7, 0.15, 0.1, 0.05), m)
        names, domains = [], []
        for j, k in enumerate(idx.tolist()):
            core_i = (k * 7919) % 1200
            core = C.NAME_PREFIXES[core_i // 30] + C.NAME_ROOTS[core_i % 30]
            cycle = k // 1200
            qual = ""
            if cycle:
                qual = " " + C.NAME_QUALIFIERS[(cycle - 1) % len(C.NAME_QUALIFIERS)]
                if cycle > len(C.NAME_QUALIFIERS):
                    qual += f" {(cycle - 1) // len(C.NAME_QUALIFIERS) + 1}"
            r = int(region[j])
            display = core
            if r == 1 and k % 9 == 0:
                display = core.replace("o", "\u00f6", 1)  # e.g. "Nörthwave": UTF-8 in the exports
            suffix = C.INDUSTRY_SUFFIXES[int(industry[j])][k % 4]
            legal_opts = C.LEGAL_SUFFIXES[r]
            lsuf = legal_opts[k % len(legal_opts)] if legal[j] < 0.3 else ""
            names.append(f"{display}{qual} {suffix}{lsuf}")
            domains.append((core + qual.replace(" ", "")).lower() + C.TLDS[int(tld[j])])
        self.name[idx] = names
        self.domain[idx] = domains
        self.n += m
        return idx


def sort_order(table: str, R: dict) -> np.ndarray:
    """Export order: event time, then the record number."""
    key = {"crm.owners": "owner", "crm.accounts": "company", "crm.contacts": "lead", "crm.leads": "lead",
           "crm.opportunities": "opp", "crm.opportunity_stages": "stage_event", "web.sessions": "session",
           "web.pageviews": "pageview", "web.form_fills": "form_fill", "calendar.events": "event",
           "vendors.firmographics": "record", "vendors.intent": "record", "vendors.costs": "cost",
           "ads.spend": "campaign"}[table]
    return np.lexsort((R[key], R["_ts"]))


def event_time(table: str, R: dict) -> np.ndarray:
    """Epoch seconds of each record's event (calendar: the meeting's start, not its booking)."""
    if table == "calendar.events":
        return R["start"]
    return R["_ts"]
