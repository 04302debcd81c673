"""The simulated business: one day at a time, with everything that happens later scheduled ahead.

Each new lead's whole life (routing, qualification, opportunity, stage changes, meetings, return visits) is decided
when the lead is created and its records are put into a per-day schedule, so that any day's files can be written as
soon as that day is simulated and memory stays bounded by what is still to come. Records are plain dicts of numpy
arrays ("raw" tables, with codes and epoch seconds); ``format_table`` turns them into the export's text columns.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from . import catalog as C
from .config import GenerateConfig
from .timeutil import (
    DAY,
    ZONE_NAMES,
    epoch_seconds,
    fmt_local,
    fmt_ts,
    ints,
    lookup,
    money,
    opaque_ids,
    seq_ids,
    snap_to_business_hours,
    utc_offsets,
)

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


class World:
    def __init__(self, cfg: GenerateConfig):
        self.cfg = cfg
        self.days = cfg.days
        self.scale = float(cfg.scale)
        self.t0 = epoch_seconds(cfg.start)
        self.t_end = self.t0 + self.days * DAY
        self.sched = Schedule(self.t0, self.days)
        self.companies = Companies()
        self.price_change_day = self.days // 2
        self.owner_change_day = max(1, self.days // 3) if self.days > 1 else None
        self.event_days = [min(self.days - 1, int(frac * self.days)) for frac, *_ in C.EVENTS]
        self.counters = {k: 0 for k in ("lead", "opp", "stage", "session", "anon", "pageview", "form", "event",
                                        "account", "firmo", "intent", "cost")}
        self._build_owners()
        start = self.rng(S_COMPANIES).random(3)
        # low-variance rates: a systematic sample with a seeded start instead of independent draws
        self.acc = {"unassigned": float(start[0]), "dq_missing": float(start[1]), "no_touch": float(start[2])}

    # --- helpers -------------------------------------------------------------------------------------------------
    def rng(self, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, *keys])

    def take_ids(self, kind: str, n: int) -> np.ndarray:
        a = self.counters[kind]
        self.counters[kind] = a + n
        return np.arange(a, a + n, dtype=np.int64)

    def _systematic(self, key: str, n: int, rate: float) -> np.ndarray:
        """Mark exactly about ``rate`` of the next ``n`` items, evenly spread."""
        a = self.acc[key]
        i = np.arange(n + 1)
        marks = np.diff(np.floor(a + i * rate)) >= 1
        self.acc[key] = (a + n * rate) % 1.0
        return marks

    def poisson(self, rng: np.random.Generator, mean: float) -> int:
        return int(rng.poisson(max(0.0, mean)))

    # --- owners --------------------------------------------------------------------------------------------------
    def _build_owners(self) -> None:
        rng = self.rng(S_OWNERS)
        n_sdr = max(4, round(12 * self.scale))
        n_ae = max(3, round(10 * self.scale))
        n = n_sdr + n_ae
        self.owner_team = np.array([0] * n_sdr + [1] * n_ae, dtype=np.int64)
        self.owner_region = np.array([C.SDR_REGION_CYCLE[i % 12] for i in range(n_sdr)]
                                     + [C.AE_REGION_CYCLE[i % 10] for i in range(n_ae)], dtype=np.int64)
        self.owner_segment = np.array([i % 3 for i in range(n_sdr)] + [C.AE_SEGMENT_CYCLE[i % 10] for i in range(n_ae)],
                                      dtype=np.int64)
        combos = rng.permutation(len(C.FIRST_NAMES) * len(C.LAST_NAMES))
        names, emails, tz = [], [], []
        for i in range(n):
            c = int(combos[i % combos.shape[0]])
            first, last = C.FIRST_NAMES[c // len(C.LAST_NAMES)], C.LAST_NAMES[c % len(C.LAST_NAMES)]
            extra = "" if i < combos.shape[0] else str(i // combos.shape[0])
            names.append(f"{first} {last}")
            emails.append(f"{first.lower()}.{last.lower()}{extra}@{C.COMPANY_DOMAIN}")
            zones = C.REGION_TIMEZONES[int(self.owner_region[i])]
            tz.append(TZ_CODE[zones[i % len(zones)]])
        self.owner_name = np.array(names, dtype=object)
        self.owner_email = np.array(emails, dtype=object)
        self.owner_tz = np.array(tz, dtype=np.int64)
        self.owner_capacity = np.where(self.owner_team == 0, rng.integers(15, 31, n), rng.integers(4, 9, n))
        self.owner_cost = np.where(self.owner_team == 0, rng.integers(65, 91, n), rng.integers(130, 181, n)) * 100.0
        width = max(3, len(str(n)))
        self.owner_ids = seq_ids("U", np.arange(1, n + 1), width)
        self.sdr_by_region = [np.flatnonzero((self.owner_team == 0) & (self.owner_region == r)) for r in range(4)]
        sdrs = np.flatnonzero(self.owner_team == 0)
        self.sdr_by_region = [p if p.shape[0] else sdrs for p in self.sdr_by_region]
        self.ae_pool = {}
        for s in range(3):
            seg_aes = np.flatnonzero((self.owner_team == 1) & (self.owner_segment == s))
            for r in range(4):
                p = seg_aes[self.owner_region[seg_aes] == r]
                self.ae_pool[(s, r)] = p if p.shape[0] else seg_aes

    def _pick_sdr(self, rng, region: np.ndarray) -> np.ndarray:
        out = np.empty(region.shape[0], np.int64)
        for r in range(4):
            m = region == r
            pool = self.sdr_by_region[r]
            out[m] = pool[rng.integers(0, pool.shape[0], int(m.sum()))]
        return out

    def _pick_ae(self, rng, segment: np.ndarray, region: np.ndarray) -> np.ndarray:
        out = np.empty(segment.shape[0], np.int64)
        u = rng.random(segment.shape[0])
        for (s, r), pool in self.ae_pool.items():
            m = (segment == s) & (region == r)
            out[m] = pool[(u[m] * pool.shape[0]).astype(np.int64)]
        return out

    def _owner_rows(self, d: int) -> None:
        n = self.owner_team.shape[0]
        if d == 0:
            rows = {"_ts": _i(n, self.t0 + 6 * 3600), "owner": np.arange(n), "capacity": self.owner_capacity.copy()}
            self.sched.add("crm.owners", rows, d)
        if d == self.owner_change_day:
            who = 1  # an SDR whose daily capacity is raised
            self.owner_capacity[who] += 5
            rows = {"_ts": _i(1, self.t0 + d * DAY + 9 * 3600 + 15 * 60), "owner": np.array([who]),
                    "capacity": np.array([self.owner_capacity[who]])}
            self.sched.add("crm.owners", rows, d)

    # --- one day -------------------------------------------------------------------------------------------------
    def simulate_day(self, d: int) -> None:
        t_day = self.t0 + d * DAY
        weekday = (self.cfg.start + timedelta(days=d)).weekday()
        wk = 1.0 if weekday < 5 else 0.55
        trend = 1.0 + 0.10 * d / max(1, self.days - 1)
        self._owner_rows(d)
        clicks = self._ads(d, t_day, wk, trend)
        self._vendor_costs(d, t_day, weekday)
        sessions = self._anonymous_sessions(d, t_day, wk, trend, clicks)
        leads = self._new_leads(d, t_day, weekday, sessions)
        self._create_leads(d, leads, sessions)
        self.sched.add("web.sessions", sessions, d)
        self._intent(d, t_day)
        self._firmo_refresh(d, t_day)

    def _active_campaigns(self, d: int) -> list[int]:
        out = []
        for i, c in enumerate(C.CAMPAIGNS):
            a, b = c[8]
            if a * self.days <= d < max(b * self.days, a * self.days + 1):
                out.append(i)
        return out

    def _ads(self, d: int, t_day: int, wk: float, trend: float) -> dict[int, int]:
        rng = self.rng(S_ADS, d)
        active = self._active_campaigns(d)
        clicks = {}
        rows: dict[str, list[float]] = {"_ts": [], "campaign": [], "impressions": [], "clicks": [], "spend": []}
        for i in active:
            ch, cid, name, src, med, budget, cpc, ctr, _ = C.CAMPAIGNS[i]
            spend = round(budget * self.scale * wk * trend ** 0.5 * float(np.exp(0.12 * rng.standard_normal())), 2)
            k = int(rng.poisson(spend / (cpc * float(np.exp(0.1 * rng.standard_normal())))))
            imp = k + int(rng.poisson(k / (ctr * float(np.exp(0.1 * rng.standard_normal()))))) if k else \
                int(rng.poisson(50 * self.scale))
            clicks[i] = k
            rows["_ts"].append(t_day)
            rows["campaign"].append(i)
            rows["impressions"].append(imp)
            rows["clicks"].append(k)
            rows["spend"].append(spend)
        self.sched.add("ads.spend", {k: np.array(v, dtype=np.float64 if k == "spend" else np.int64)
                                     for k, v in rows.items()}, d)
        return clicks

    def _vendor_costs(self, d: int, t_day: int, weekday: int) -> None:
        rng = self.rng(S_COSTS, d)
        today = self.cfg.start + timedelta(days=d)
        rows = []
        for vendor, ch, category, amount, cadence in C.VENDOR_FEES:
            if (cadence == "monthly" and today.day == 1) or (cadence == "weekly" and weekday == 0):
                rows.append((vendor, ch, category, round(amount * self.scale * float(rng.uniform(0.95, 1.05)), 2)))
        for e, (_, _slug, organiser, (lo, hi)) in enumerate(C.EVENTS):
            if d == self.event_days[e]:
                rows.append((organiser, 4, "sponsorship", round(float(rng.uniform(lo, hi)) * self.scale, 2)))
                rows.append(("TravelDesk", 4, "travel", round(float(rng.uniform(5000, 9000)) * self.scale, 2)))
        if not rows:
            return
        n = len(rows)
        cols = {"_ts": _i(n, t_day) + np.arange(n), "cost": self.take_ids("cost", n),
                "vendor": np.array([r[0] for r in rows], dtype=object), "channel": np.array([r[1] for r in rows]),
                "category": np.array([r[2] for r in rows], dtype=object),
                "amount": np.array([r[3] for r in rows], dtype=np.float64), "day": _i(n, t_day // DAY)}
        self.sched.add("vendors.costs", cols, d)

    def _current_event(self, d: int) -> int:
        past = [e for e, day in enumerate(self.event_days) if day <= d]
        return past[-1] if past else 0

    def _utm(self, rng, channel: np.ndarray, campaign: np.ndarray, d: int):
        """Fill utm source/medium/campaign and a campaign code for channels that have campaigns."""
        n = channel.shape[0]
        campaign = campaign.copy()
        src, med, camp = _o(n), _o(n), _o(n)
        # sessions in paid channels without a campaign (return visits) get one of the channel's live campaigns
        live = self._active_campaigns(d)
        for ch in (0, 1, 3, 7):
            m = (channel == ch) & (campaign < 0)
            if ch == 3:  # email also has the unpaid newsletter
                m &= rng.random(n) < 0.6
            pool = [i for i in live if C.CAMPAIGNS[i][0] == ch] or [i for i, c in enumerate(C.CAMPAIGNS) if c[0] == ch]
            campaign[m] = np.array(pool)[rng.integers(0, len(pool), int(m.sum()))]
        ev = channel == 4
        campaign[ev] = N_ADS_CAMPAIGNS + self._current_event(d)
        has = campaign >= 0
        src[has] = lookup(CAMPAIGN_SOURCES, campaign[has])
        med[has] = lookup(CAMPAIGN_MEDIUMS, campaign[has])
        camp[has] = lookup(CAMPAIGN_NAMES, campaign[has])
        for ch, (sources, weights, medium, cname) in C.ORGANIC_SOURCES.items():
            m = (channel == ch) & ~has
            k = int(m.sum())
            if k:
                src[m] = np.array(sources, dtype=object)[_choice(rng, weights, k)]
                med[m] = medium
                camp[m] = cname
        return campaign, src, med, camp

    def _session_frame(self, rng, d: int, ts, channel, campaign, region, lead_no, anon_no) -> dict:
        n = ts.shape[0]
        campaign, src, med, camp = self._utm(rng, channel, campaign, d)
        country = _o(n)
        for r in range(4):
            m = region == r
            country[m] = np.array(C.COUNTRIES[r], dtype=object)[_choice(rng, C.COUNTRY_WEIGHTS[r], int(m.sum()))]
        return {
            "_ts": ts, "session": self.take_ids("session", n), "anon": anon_no, "lead": lead_no,
            "channel": channel, "campaign": campaign, "utm_source": src, "utm_medium": med, "utm_campaign": camp,
            "landing": _choice(rng, C.LANDING_WEIGHTS, n), "device": _choice(rng, C.DEVICE_WEIGHTS, n),
            "country": country, "region": region,
        }

    def _anonymous_sessions(self, d: int, t_day: int, wk: float, trend: float, clicks: dict[int, int]) -> dict:
        rng = self.rng(S_SESSIONS, d)
        channels: list[np.ndarray] = []
        campaigns: list[np.ndarray] = []
        for i, k in clicks.items():
            m = int(rng.binomial(k, C.LAND_RATE))
            channels.append(np.full(m, C.CAMPAIGNS[i][0]))
            campaigns.append(np.full(m, i))
        for ch, base in C.ORGANIC_SESSIONS.items():
            mean = base * self.scale * wk * trend
            if ch == 4 and any(0 <= d - day <= 1 for day in self.event_days):
                mean += 40 * self.scale
            m = self.poisson(rng, mean)
            channels.append(np.full(m, ch))
            campaigns.append(np.full(m, -1))
        channel = np.concatenate(channels).astype(np.int64)
        campaign = np.concatenate(campaigns).astype(np.int64)
        n = channel.shape[0]
        region = _choice(rng, C.REGION_WEIGHTS, n)
        local_h = np.clip(rng.normal(13.5, 3.2, n), 6.0, 23.0)
        sod = ((local_h - C.REGION_UTC_HOURS[region]) * 3600).astype(np.int64) % DAY
        sod = np.minimum(sod, 81000)
        ts = t_day + sod
        frame = self._session_frame(rng, d, ts, channel, campaign, region, _i(n), self.take_ids("anon", n))
        mobile = frame["device"] == 1
        frame["_converts"] = rng.random(n) < C.FORM_RATE[channel] * np.where(mobile, 0.6, 1.0)
        return frame

    # --- leads ---------------------------------------------------------------------------------------------------
    def _new_leads(self, d: int, t_day: int, weekday: int, sessions: dict) -> dict:
        rng = self.rng(S_CRM_LEADS, d)
        conv = np.flatnonzero(sessions.pop("_converts"))
        n_web = conv.shape[0]
        submit = sessions["_ts"][conv] + rng.integers(90, 900, n_web)
        parts = [{
            "channel": sessions["channel"][conv], "campaign": sessions["campaign"][conv],
            "created": submit + rng.integers(1, 30, n_web), "submit": submit, "region": sessions["region"][conv],
            "session_idx": conv, "anon": sessions["anon"][conv],
        }]
        busy = 1.0 if weekday < 5 else 0.1
        crm = [(7, -1, self.poisson(rng, C.PARTNER_LEADS * self.scale * busy)),
               (5, -1, self.poisson(rng, C.REFERRAL_LEADS * self.scale * busy))]
        for e, day in enumerate(self.event_days):
            if d in (day + 1, day + 2):
                total = int(self.rng(S_EVENTS, e).poisson(C.EVENT_LEADS * self.scale))
                first = int(round(0.6 * total))
                crm.append((4, N_ADS_CAMPAIGNS + e, first if d == day + 1 else total - first))
        for ch, camp, k in crm:
            if k <= 0:
                continue
            parts.append({
                "channel": _i(k, ch), "campaign": _i(k, camp), "created": t_day + rng.integers(13 * 3600, 22 * 3600, k),
                "submit": _i(k), "region": _choice(rng, C.REGION_WEIGHTS, k), "session_idx": _i(k),
                "anon": self.take_ids("anon", k),
            })
        leads = concat(parts)
        order = np.argsort(leads["created"], kind="stable")
        return take(leads, order)

    def _planted(self, p_sql: np.ndarray, lead_no: np.ndarray, created: np.ndarray) -> np.ndarray:
        """The SQL probability with each planted experiment effect applied to the leads of its arm (the same random
        draws either way, so a planted effect changes only the planted arm's leads)."""
        if not self.cfg.planted:
            return p_sql
        from gtm_pipeline.experiments.assignment import arm_of

        ids = seq_ids("L", lead_no)
        for eff in self.cfg.planted:
            exp = eff.experiment
            since = epoch_seconds(exp.starts)
            hit = np.array([t >= since and arm_of(exp, i) == eff.arm for i, t in zip(ids, created.tolist())],
                           dtype=bool)
            p_sql = np.where(hit, np.clip(p_sql * eff.sql_rate_multiplier, 0, 0.95), p_sql)
        return p_sql

    def _create_leads(self, d: int, L: dict, sessions: dict) -> None:
        n = nrows(L)
        if n == 0:
            return
        rng = self.rng(S_LEADS, d)
        comp = self.companies
        lead_no = self.take_ids("lead", n)
        channel, created = L["channel"], L["created"]
        # companies: an existing one for some leads, otherwise a new company (and a new account)
        n_before = comp.n
        existing = (rng.random(n) < C.P_EXISTING_COMPANY) & (n_before > 0)
        company = np.empty(n, np.int64)
        company[existing] = rng.integers(0, max(1, n_before), int(existing.sum()))
        new = ~existing
        m = int(new.sum())
        crng = self.rng(S_COMPANIES, d)
        company[new] = comp.add(crng, _choice(crng, C.INDUSTRY_WEIGHTS, m), _choice(crng, C.SIZE_WEIGHTS, m),
                                L["region"][new])
        industry, size, region = comp.industry[company], comp.size[company], comp.region[company]
        segment = C.SIZE_TO_SEGMENT[size]
        self._create_accounts(d, company[new], created[new], rng)

        # fate: qualification, routing, conversion
        p_sql = np.clip(C.P_SQL[channel] * C.SQL_MULT_SEGMENT[segment], 0, 0.8)
        p_sql = self._planted(p_sql, lead_no, created)
        u = rng.random(n)
        unassigned = self._systematic("unassigned", n, C.UNASSIGNED_RATE)
        is_sql = (u < p_sql) & ~unassigned
        is_dq = (u >= p_sql) & (u < p_sql + C.DQ_SHARE_OF_REST * (1 - p_sql)) & ~unassigned
        latency = np.maximum(1, np.round(_lognormal(rng, C.ROUTE_MEDIAN_S, C.ROUTE_SIGMA, n))).astype(np.int64)
        owner = np.where(unassigned, -1, self._pick_sdr(rng, region))
        assigned = np.where(unassigned, -1, created + latency)
        routed = np.where(unassigned, -1, _choice(rng, C.ROUTED_BY_WEIGHTS, n))
        work_ts = assigned + np.clip(_lognormal(rng, 3 * 3600, 1.0, n), 300, 3 * DAY).astype(np.int64)
        sql_ts = work_ts + _lognormal(rng, 2.5 * DAY, 0.6, n).astype(np.int64)
        dq_ts = work_ts + _lognormal(rng, 3 * DAY, 0.7, n).astype(np.int64)
        converts = is_sql & (rng.random(n) < np.minimum(0.95, C.P_OPP_GIVEN_SQL[segment] * C.OPP_MULT_CHANNEL[channel]))
        opp_ts = sql_ts + _lognormal(rng, 3 * DAY, 0.6, n).astype(np.int64)
        dq_reason = _choice(rng, C.DQ_WEIGHTS, n)
        dq_missing = np.zeros(n, bool)
        dq_missing[is_dq] = self._systematic("dq_missing", int(is_dq.sum()), C.DQ_MISSING_RATE)
        score = np.clip(np.round(rng.normal(42 + 28 * is_sql - 12 * is_dq, 13)), 0, 100).astype(np.int64)
        comp.hot[company[converts]] = True

        # status as of the end of the horizon (one row per lead, delivered on its creation day)
        T = self.t_end
        status = np.full(n, C.ST_NEW, np.int64)
        st_ts = created.copy()
        step = (~unassigned) & (work_ts < T)
        status[step], st_ts[step] = C.ST_WORKING, work_ts[step]
        step = is_sql & (sql_ts < T)
        status[step], st_ts[step] = C.ST_SQL, sql_ts[step]
        step = converts & (opp_ts < T)
        status[step], st_ts[step] = C.ST_CONVERTED, opp_ts[step]
        step = is_dq & (dq_ts < T)
        status[step], st_ts[step] = C.ST_DQ, dq_ts[step]
        shown_dq = np.where((status == C.ST_DQ) & ~dq_missing, dq_reason, -1)

        # people
        first = rng.integers(0, len(C.FIRST_NAMES), n)
        last = rng.integers(0, len(C.LAST_NAMES), n)
        personal = is_dq & (dq_reason == 6)
        fn = np.array(C.FIRST_NAMES, dtype=object)[first]
        ln = np.array(C.LAST_NAMES, dtype=object)[last]
        digits = rng.integers(10, 99, n)
        email = np.array([
            f"{a.lower()}.{b.lower()}{k}@gmail.com" if p else f"{a.lower()}.{b.lower()}@{dom}"
            for a, b, k, p, dom in zip(fn.tolist(), ln.tolist(), digits.tolist(), personal.tolist(),
                                       comp.domain[company].tolist())], dtype=object)
        title_i = rng.integers(0, 5, n)
        title = np.array([C.TITLES[s][t] for s, t in zip(segment.tolist(), title_i.tolist())], dtype=object)
        title[personal] = "Student"

        # utm of the lead: the form fill's session for web leads
        web = L["session_idx"] >= 0
        si = L["session_idx"][web]
        utm = {k: _o(n) for k in ("utm_source", "utm_medium", "utm_campaign")}
        for k in utm:
            utm[k][web] = sessions[k][si]
        sessions["lead"][si] = lead_no[web]

        self.sched.add("crm.leads", {
            "_ts": created, "lead": lead_no, "company": company, "email": email, "channel": channel,
            "campaign": L["campaign"], **utm, "score": score, "status": status, "status_ts": st_ts,
            "dq_reason": shown_dq, "owner": owner, "assigned": assigned, "routed": routed,
        }, d)
        self.sched.add("crm.contacts", {
            "_ts": created, "lead": lead_no, "company": company, "email": email, "first": fn, "last": ln,
            "title": title}, d)
        if web.any():
            wi = np.flatnonzero(web)
            self.sched.add("web.form_fills", {
                "_ts": L["submit"][wi], "form_fill": self.take_ids("form", wi.shape[0]),
                "session": sessions["session"][si], "lead": lead_no[wi],
                "form": _choice(rng, FORM_WEIGHTS, wi.shape[0]),
                "email": email[wi], "company": company[wi], **{k: v[wi] for k, v in utm.items()},
                "channel": channel[wi]}, d)

        # what follows: opportunities, meetings, return visits
        lead = {"lead": lead_no, "company": company, "channel": channel, "segment": segment, "industry": industry,
                "size": size, "region": region, "created": created, "owner": owner, "work_ts": work_ts,
                "sql_ts": sql_ts, "opp_ts": opp_ts, "is_sql": is_sql, "converts": converts,
                "unassigned": unassigned, "anon": L["anon"], "web": web}
        opps = self._create_opportunities(d, take(lead, converts & (opp_ts < T)))
        self._lead_calendar(d, lead)
        self._opp_calendar(d, opps)
        self._return_sessions(d, lead)

    def _create_accounts(self, d: int, company: np.ndarray, created: np.ndarray, rng) -> None:
        comp = self.companies
        m = company.shape[0]
        if m == 0:
            return
        comp.account_no[company] = self.take_ids("account", m)
        seg = C.SIZE_TO_SEGMENT[comp.size[company]]
        comp.ae[company] = self._pick_ae(rng, seg, comp.region[company])
        self.sched.add("crm.accounts", {"_ts": created, "company": company}, d)
        frng = self.rng(S_FIRMO, d, 0)
        observed = created + frng.integers(600, 2 * DAY, m)
        self._firmo_rows(d, frng, company, observed, vendor=0)

    def _firmo_rows(self, d: int, rng, company: np.ndarray, observed: np.ndarray, vendor: int) -> None:
        comp = self.companies
        m = company.shape[0]
        ind, size, reg = comp.industry[company].copy(), comp.size[company].copy(), comp.region[company].copy()
        emp = np.round(comp.employees[company] * rng.uniform(0.9, 1.1, m)).astype(np.int64)
        differ = rng.random(m) >= C.FIRMO_AGREEMENT
        what = rng.random(m)
        s = differ & (what < 0.6)
        size[s] = np.clip(size[s] + np.where(rng.random(int(s.sum())) < 0.5, -1, 1), 0, 5)
        i = differ & (what >= 0.6) & (what < 0.9)
        ind[i] = (ind[i] + rng.integers(1, 8, int(i.sum()))) % 8
        r = differ & (what >= 0.9)
        reg[r] = (reg[r] + rng.integers(1, 4, int(r.sum()))) % 4
        lo = np.array([C.SIZE_EMPLOYEES[k][0] for k in range(6)])[size]
        hi = np.array([C.SIZE_EMPLOYEES[k][1] for k in range(6)])[size]
        emp = np.clip(emp, lo, hi)
        self.sched.add("vendors.firmographics", {
            "_ts": observed, "record": self.take_ids("firmo", m), "company": company, "industry": ind, "size": size,
            "employees": emp, "region": reg, "vendor": _i(m, vendor)}, d)

    def _create_opportunities(self, d: int, L: dict) -> dict:
        n = nrows(L)
        if n == 0:
            return {}
        rng = self.rng(S_OPPS, d)
        seg, ind, ch = L["segment"], L["industry"], L["channel"]
        opp_no = self.take_ids("opp", n)
        created = L["opp_ts"]
        owner = self._pick_ae(rng, seg, L["region"])
        stage0 = np.where(rng.random(n) < 0.6, 0, 1)
        after_change = created >= self.t0 + self.price_change_day * DAY
        list_price = C.LIST_PRICE[seg] * np.where((seg == C.PRICE_CHANGE_SEGMENT) & after_change,
                                                  1 + C.PRICE_CHANGE_PCT, 1.0)
        list_price = np.round(list_price, 2)
        mean = C.DISCOUNT_MEAN[seg]
        discount = rng.beta(2.0, 2.0 * (1 - mean) / mean)
        discount = np.where((seg == 0) & (rng.random(n) < 0.25), 0.0, discount)
        discount = np.round(np.clip(discount, 0.0, 0.4), 2)
        lo = np.array([r[0] for r in C.SEATS_RANGE])[seg]
        hi = np.array([r[1] for r in C.SEATS_RANGE])[seg]
        seats = np.clip(np.floor(np.exp(np.log(lo) + rng.random(n) * (np.log(hi + 1) - np.log(lo)))), lo, hi) \
            .astype(np.int64)
        amount = np.round(list_price * 12 * seats * (1 - discount), 2)
        close_days = np.round(C.CYCLE_MEDIAN_DAYS[seg] * _lognormal(rng, 1.0, 0.25, n)).astype(np.int64)
        close_date = created // DAY + close_days
        net = list_price * (1 - discount)
        p_win = np.minimum(C.WIN_CAP, C.WIN_BASE_SEGMENT[seg] * C.WIN_MULT_INDUSTRY[ind] * C.WIN_MULT_CHANNEL[ch]
                           * (net / C.LIST_PRICE[seg]) ** C.ELASTICITY[seg])
        won = rng.random(n) < p_win
        cycle = (C.CYCLE_MEDIAN_DAYS[seg] * _lognormal(rng, 1.0, C.CYCLE_SIGMA, n) * np.where(won, 1.0, 0.85)
                 * DAY).astype(np.int64)
        cycle = np.maximum(cycle, 2 * DAY)
        close_ts = created + cycle
        opps = {"_ts": created, "opp": opp_no, "company": L["company"], "lead": L["lead"], "owner": owner,
                "stage": stage0, "segment": seg, "list_price": list_price, "discount": discount, "seats": seats,
                "amount": amount, "channel": ch, "close_date": close_date}
        self.sched.add("crm.opportunities", opps, d)

        # stage history: creation, intermediate steps, then won / lost at the end of the cycle
        last_reached = np.where(won, 3, stage0 + np.floor(rng.random(n) * (4 - stage0)).astype(np.int64))
        loss = _choice(rng, C.LOSS_WEIGHTS, n)
        steps = last_reached - stage0  # intermediate changes after creation
        k = 2 + steps  # creation + intermediates + close
        rep = np.repeat(np.arange(n), k)
        pos = np.arange(rep.shape[0]) - np.repeat(np.cumsum(k) - k, k)
        frac = rng.uniform(0.1, 0.9, rep.shape[0])
        # sort fractions within each opportunity so that stage changes are in time order
        order = np.lexsort((frac, rep))
        frac = frac[order]
        frac = np.where(pos == 0, 0.0, np.where(pos == k[rep] - 1, 1.0, frac))
        to_stage = np.where(pos == k[rep] - 1, np.where(won[rep], C.WON, C.LOST), stage0[rep] + pos)
        from_stage = np.where(pos == 0, -1, np.where(pos == k[rep] - 1, last_reached[rep], stage0[rep] + pos - 1))
        changed = created[rep] + (frac * cycle[rep]).astype(np.int64)
        self.sched.add("crm.opportunity_stages", {
            "_ts": changed, "stage_event": self.take_ids("stage", rep.shape[0]), "opp": opp_no[rep],
            "from": from_stage, "to": to_stage, "amount": amount[rep],
            "loss": np.where((to_stage == C.LOST), loss[rep], -1)}, d)
        return {**opps, "close_ts": close_ts, "cycle": cycle, "contact": L["lead"], "lead_owner": L["owner"]}

    # --- calendar ------------------------------------------------------------------------------------------------
    def _calendar_rows(self, d, rng, start, etype, owner, lead, company, opp, subject_kind) -> None:
        n = start.shape[0]
        if n == 0:
            return
        tz = self.owner_tz[owner]
        start = snap_to_business_hours(start, tz, rng)
        dur = np.select([etype == 0, etype == 1, etype == 2],
                        [np.where(rng.random(n) < 0.7, 1800, 2700), rng.integers(5, 21, n) * 60, _i(n, 3600)], 0)
        u = rng.random(n)
        status = np.where(etype == 3, 1, np.where(u < 0.88, 1, np.where(u < 0.95, 2, 3)))
        row_ts = start.copy()
        # meetings and demos booked ahead that fall after the horizon show up as scheduled on the booking day
        future = start >= self.t_end
        booked = future & ((etype == 0) | (etype == 2))
        book_ts = start - rng.integers(1, 6, n) * DAY
        booked &= (book_ts < self.t_end) & (book_ts >= self.t0 + d * DAY)
        row_ts = np.where(booked, book_ts, row_ts)
        status = np.where(booked, 0, status)
        keep = ~future | booked
        names = self.companies.name[company]
        subj = np.array([_SUBJECTS[subject_kind][t].format(c) for t, c in zip(etype.tolist(), names.tolist())],
                        dtype=object)
        cols = {"_ts": row_ts, "event": self.take_ids("event", n), "type": etype, "start": start,
                "end": start + dur, "tz": tz, "owner": owner, "lead": lead, "company": company, "opp": opp,
                "status": status, "subject": subj}
        self.sched.add("calendar.events", take(cols, keep), d)

    def _lead_calendar(self, d: int, L: dict) -> None:
        rng = self.rng(S_CAL, d, 0)
        a = np.flatnonzero(~L["unassigned"])
        etype = np.where(rng.random(a.shape[0]) < 0.6, 3, 1)
        self._calendar_rows(d, rng, L["work_ts"][a], etype, L["owner"][a], L["lead"][a], L["company"][a],
                            _i(a.shape[0]), "lead")
        s = np.flatnonzero(L["is_sql"])
        start = np.maximum(L["sql_ts"][s] - rng.integers(3600, 6 * 3600, s.shape[0]), L["work_ts"][s])
        self._calendar_rows(d, rng, start, _i(s.shape[0], 0), L["owner"][s], L["lead"][s], L["company"][s],
                            _i(s.shape[0]), "lead")

    def _opp_calendar(self, d: int, opp: dict) -> None:
        n = nrows(opp)
        if n == 0:
            return
        rng = self.rng(S_CAL, d, 1)
        k = 3 + rng.poisson(np.minimum(opp["cycle"] / DAY / 8.0, 6.0))
        rep = np.repeat(np.arange(n), k)
        pos = np.arange(rep.shape[0]) - np.repeat(np.cumsum(k) - k, k)
        frac = rng.uniform(0.02, 0.98, rep.shape[0])
        frac = frac[np.lexsort((frac, rep))]
        start = opp["_ts"][rep] + (frac * opp["cycle"][rep]).astype(np.int64)
        etype = np.where(pos == 0, 2, _choice(rng, (0.3, 0.25, 0.15, 0.3), rep.shape[0]))
        self._calendar_rows(d, rng, start, etype, opp["owner"][rep], opp["lead"][rep], opp["company"][rep],
                            opp["opp"][rep], "opp")

    # --- return visits -------------------------------------------------------------------------------------------
    def _return_sessions(self, d: int, L: dict) -> None:
        rng = self.rng(S_RETURN, d)
        n = nrows(L)
        conv = L["converts"]
        no_touch = np.zeros(n, bool)
        for i in np.flatnonzero(conv).tolist():  # about NO_TOUCH_RATE of converting leads, only non-web ones
            self.acc["no_touch"] += C.NO_TOUCH_RATE
            if not L["web"][i] and self.acc["no_touch"] >= 1.0:
                no_touch[i] = True
                self.acc["no_touch"] -= 1.0
        k_pre = np.where(conv & ~no_touch, 2 + rng.poisson(1.2, n), 0)
        k_post = np.where(conv, rng.poisson(1.0, n), 0)
        k_other = np.where(conv, 0, rng.poisson(1.0, n))
        created, opp_ts = L["created"], L["opp_ts"]
        parts = []
        # sessions start by 22:30 UTC so that their page views stay on the same day
        for when, k in (("before_opportunity", k_pre), ("after_opportunity", k_post), ("nurture", k_other)):
            rep = np.repeat(np.arange(n), k)
            m = rep.shape[0]
            if m == 0:
                continue
            if when == "before_opportunity":
                ts = created[rep] + (rng.uniform(0.05, 0.95, m) * (opp_ts[rep] - created[rep])).astype(np.int64)
                ts = np.maximum(ts - np.maximum(ts % DAY - 81000, 0), created[rep] - 3600)
                ts = np.minimum(ts, opp_ts[rep] - 60)
            elif when == "after_opportunity":  # from the next day on, so never a touch before creation
                day0 = opp_ts[rep] // DAY + 1 + rng.integers(0, 30, m)
                ts = day0 * DAY + rng.integers(7 * 3600, 81000, m)
            else:
                ts = created[rep] + rng.integers(3600, 21 * DAY, m)
                ts = ts - np.maximum(ts % DAY - 81000, 0)
            ts = np.maximum(ts, self.t0 + d * DAY)
            channel = _choice(rng, C.RETURN_CHANNEL_WEIGHTS, m)
            parts.append(self._session_frame(rng, d, ts, channel, _i(m), L["region"][rep], L["lead"][rep],
                                             L["anon"][rep]))
        if parts:
            self.sched.add("web.sessions", concat(parts), d)

    # --- vendor data ---------------------------------------------------------------------------------------------
    def _intent(self, d: int, t_day: int) -> None:
        rng = self.rng(S_INTENT, d)
        comp = self.companies
        if comp.n == 0:
            return
        k = self.poisson(rng, C.INTENT_PER_DAY * self.scale)
        company = rng.integers(0, comp.n, k)
        hot = comp.hot[company]
        score = np.clip(np.round(np.where(hot, rng.normal(68, 12, k), rng.normal(42, 15, k))), 0, 100).astype(np.int64)
        self.sched.add("vendors.intent", {
            "_ts": t_day + rng.integers(3600, 7 * 3600, k), "record": self.take_ids("intent", k), "company": company,
            "topic": _choice(rng, np.ones(len(C.INTENT_TOPICS)), k), "score": score}, d)

    def _firmo_refresh(self, d: int, t_day: int) -> None:
        rng = self.rng(S_FIRMO, d, 1)
        comp = self.companies
        if comp.n == 0:
            return
        k = int(rng.binomial(comp.n, 0.01))
        company = rng.integers(0, comp.n, k)
        self._firmo_rows(d, rng, company, t_day + rng.integers(2 * 3600, 10 * 3600, k), vendor=1)

    # --- page views (derived from a day's sessions when it is written) ---------------------------------------------
    def pageviews(self, d: int, S: dict) -> dict:
        rng = self.rng(S_PAGEVIEWS, d)
        n = nrows(S)
        if n == 0:
            return {}
        k = 2 + np.minimum(rng.geometric(0.42, n) - 1, 6)
        rep = np.repeat(np.arange(n), k)
        m = rep.shape[0]
        first = np.zeros(m, bool)
        first[np.cumsum(k) - k] = True
        dwell = np.clip(np.round(_lognormal(rng, 35.0, 0.9, m)), 2, 600).astype(np.int64)
        cum = np.cumsum(dwell) - dwell
        offset = cum - np.repeat(cum[np.cumsum(k) - k], k)
        page = np.where(first, S["landing"][rep], _choice(rng, C.LANDING_WEIGHTS, m))
        url = C.SITE + np.array(C.LANDING_PAGES, dtype=object)[page]
        prev = np.empty(m, dtype=object)
        prev[1:] = url[:-1]
        ext = np.array([C.REFERRERS[c] for c in range(len(C.CHANNELS))], dtype=object)[S["channel"][rep]]
        referrer = np.where(first, ext, prev)
        return {"_ts": S["_ts"][rep] + offset, "pageview": self.take_ids("pageview", m), "session": S["session"][rep],
                "lead": S["lead"][rep], "url": url, "referrer": referrer, "dwell": dwell}

    # --- formatting ----------------------------------------------------------------------------------------------
    def format_table(self, table: str, R: dict, d: int) -> dict:
        """Raw columns -> export columns (text, or typed values for Parquet), in no particular order."""
        comp = self.companies
        if table == "crm.owners":
            o = R["owner"]
            return {"owner_id": self.owner_ids[o], "name": self.owner_name[o], "email": self.owner_email[o],
                    "team": lookup(C.TEAMS, self.owner_team[o]), "segment": lookup(C.SEGMENTS, self.owner_segment[o]),
                    "region": lookup(C.REGIONS, self.owner_region[o]), "capacity_per_day": ints(R["capacity"]),
                    "monthly_cost": money(self.owner_cost[o]), "active": _o(o.shape[0], "true"),
                    "updated_at": fmt_ts(R["_ts"], "crm")}
        if table == "crm.accounts":
            c = R["company"]
            return {"account_id": seq_ids("A", comp.account_no[c]), "name": comp.name[c], "domain": comp.domain[c],
                    "industry": lookup(C.INDUSTRIES, comp.industry[c]), "size_band": lookup(C.SIZE_BANDS, comp.size[c]),
                    "employees": ints(comp.employees[c]), "region": lookup(C.REGIONS, comp.region[c]),
                    "segment": lookup(C.SEGMENTS, C.SIZE_TO_SEGMENT[comp.size[c]]),
                    "created_at": fmt_ts(R["_ts"], "crm"), "owner_id": self.owner_ids_or_none(comp.ae[c])}
        if table == "crm.contacts":
            return {"contact_id": seq_ids("C", R["lead"]), "account_id": seq_ids("A", comp.account_no[R["company"]]),
                    "lead_id": seq_ids("L", R["lead"]), "email": R["email"], "first_name": R["first"],
                    "last_name": R["last"], "title": R["title"], "created_at": fmt_ts(R["_ts"], "crm")}
        if table == "crm.leads":
            c = R["company"]
            return {"lead_id": seq_ids("L", R["lead"]), "created_at": fmt_ts(R["_ts"], "crm"), "email": R["email"],
                    "company": comp.name[c], "account_id": seq_ids("A", comp.account_no[c]),
                    "channel": lookup(C.CHANNELS, R["channel"]), "campaign_id": lookup(CAMPAIGN_IDS, R["campaign"]),
                    "utm_source": R["utm_source"], "utm_medium": R["utm_medium"], "utm_campaign": R["utm_campaign"],
                    "industry": lookup(C.INDUSTRIES, comp.industry[c]), "size_band": lookup(C.SIZE_BANDS, comp.size[c]),
                    "region": lookup(C.REGIONS, comp.region[c]),
                    "segment": lookup(C.SEGMENTS, C.SIZE_TO_SEGMENT[comp.size[c]]), "score": ints(R["score"]),
                    "status": lookup(C.LEAD_STATUSES, R["status"]), "status_changed_at": fmt_ts(R["status_ts"], "crm"),
                    "dq_reason": lookup(C.DQ_REASONS, R["dq_reason"]), "owner_id": self.owner_ids_or_none(R["owner"]),
                    "assigned_at": fmt_ts(R["assigned"], "crm"), "routed_by": lookup(C.ROUTED_BY, R["routed"])}
        if table == "crm.opportunities":
            c, seg = R["company"], R["segment"]
            return {"opportunity_id": seq_ids("O", R["opp"]), "account_id": seq_ids("A", comp.account_no[c]),
                    "lead_id": seq_ids("L", R["lead"]), "owner_id": self.owner_ids_or_none(R["owner"]),
                    "created_at": fmt_ts(R["_ts"], "crm"), "stage": lookup(C.STAGES, R["stage"]),
                    "product": lookup(C.PRODUCTS, seg), "list_price": money(R["list_price"]),
                    "discount": money(R["discount"]), "seats": ints(R["seats"]), "amount": money(R["amount"]),
                    "currency": _o(seg.shape[0], C.CURRENCY), "segment": lookup(C.SEGMENTS, seg),
                    "region": lookup(C.REGIONS, comp.region[c]), "industry": lookup(C.INDUSTRIES, comp.industry[c]),
                    "size_band": lookup(C.SIZE_BANDS, comp.size[c]), "channel": lookup(C.CHANNELS, R["channel"]),
                    "close_date": fmt_ts(R["close_date"] * DAY, "date")}
        if table == "crm.opportunity_stages":
            return {"stage_event_id": seq_ids("SE", R["stage_event"]), "opportunity_id": seq_ids("O", R["opp"]),
                    "from_stage": lookup(C.STAGES, R["from"]), "to_stage": lookup(C.STAGES, R["to"]),
                    "changed_at": fmt_ts(R["_ts"], "crm"), "amount": money(R["amount"]),
                    "loss_reason": lookup(C.LOSS_REASONS, R["loss"])}
        if table == "web.sessions":
            out = {"session_id": opaque_ids("ses_", R["session"], 0x51),
                   "anonymous_id": opaque_ids("anon_", R["anon"], 0xA7),
                   "lead_id": seq_ids("L", R["lead"]), "started_at": fmt_ts(R["_ts"], "iso_z"),
                   "utm_source": R["utm_source"], "utm_medium": R["utm_medium"], "utm_campaign": R["utm_campaign"],
                   "channel": lookup(C.CHANNELS, R["channel"]),
                   "landing_page": C.SITE + np.array(C.LANDING_PAGES, dtype=object)[R["landing"]],
                   "device": lookup(C.DEVICES, R["device"]), "country": R["country"]}
            extra = self.cfg.defects.extra_key_day_offset
            if extra is not None and d >= extra:
                variant = np.array(["ad_a", "ad_b", "ad_c"], dtype=object)[R["session"] % 3]
                out["utm_content"] = np.where((R["campaign"] >= 0) & (R["campaign"] < N_ADS_CAMPAIGNS), variant, None)
            return out
        if table == "web.pageviews":
            return {"pageview_id": opaque_ids("pv_", R["pageview"], 0x3C),
                    "session_id": opaque_ids("ses_", R["session"], 0x51),
                    "lead_id": seq_ids("L", R["lead"]), "viewed_at": fmt_ts(R["_ts"], "iso_z"), "url": R["url"],
                    "referrer": R["referrer"], "time_on_page_s": ints(R["dwell"])}
        if table == "web.form_fills":
            return {"form_fill_id": opaque_ids("ff_", R["form_fill"], 0xF1),
                    "session_id": opaque_ids("ses_", R["session"], 0x51), "lead_id": seq_ids("L", R["lead"]),
                    "submitted_at": fmt_ts(R["_ts"], "iso_z"), "form": lookup(FORMS, R["form"]), "email": R["email"],
                    "company": comp.name[R["company"]], "utm_source": R["utm_source"], "utm_medium": R["utm_medium"],
                    "utm_campaign": R["utm_campaign"], "channel": lookup(C.CHANNELS, R["channel"])}
        if table == "calendar.events":
            tz = R["tz"]
            return {"event_id": opaque_ids("evt_", R["event"], 0xE7), "type": lookup(C.ACTIVITY_TYPES, R["type"]),
                    "subject": R["subject"], "start_at": fmt_local(R["start"], utc_offsets(tz, R["start"])),
                    "end_at": fmt_local(R["end"], utc_offsets(tz, R["end"])), "timezone": lookup(ZONE_NAMES, tz),
                    "organizer_owner_id": self.owner_ids_or_none(R["owner"]), "lead_id": seq_ids("L", R["lead"]),
                    "contact_id": seq_ids("C", R["lead"]), "account_id": seq_ids("A", comp.account_no[R["company"]]),
                    "opportunity_id": seq_ids("O", R["opp"]), "status": lookup(C.CAL_STATUSES, R["status"])}
        if table == "vendors.firmographics":
            c = R["company"]
            return {"record_id": seq_ids("FG", R["record"], 8), "domain": comp.domain[c],
                    "account_id": seq_ids("A", comp.account_no[c]), "industry": lookup(C.INDUSTRIES, R["industry"]),
                    "size_band": lookup(C.SIZE_BANDS, R["size"]), "employees": R["employees"].astype(object),
                    "region": lookup(C.REGIONS, R["region"]), "observed_at": R["_ts"].astype(object),
                    "vendor": lookup(C.FIRMO_VENDORS, R["vendor"])}
        if table == "vendors.intent":
            c = R["company"]
            return {"record_id": seq_ids("IN", R["record"], 8), "account_id": seq_ids("A", comp.account_no[c]),
                    "domain": comp.domain[c], "topic": lookup(C.INTENT_TOPICS, R["topic"]),
                    "intent_score": R["score"].astype(object), "observed_at": fmt_ts(R["_ts"], "iso_z"),
                    "vendor": _o(c.shape[0], C.INTENT_VENDOR)}
        if table == "vendors.costs":
            n = R["cost"].shape[0]
            return {"cost_id": seq_ids("VC", R["cost"] + 1, 6), "date": fmt_ts(R["day"] * DAY, "date"),
                    "vendor": R["vendor"], "channel": lookup(C.CHANNELS, R["channel"]), "category": R["category"],
                    "amount": R["amount"].astype(object), "currency": _o(n, C.CURRENCY)}
        if table == "ads.spend":
            c = R["campaign"]
            return {"date": fmt_ts(R["_ts"], "date"), "channel": lookup(C.CHANNELS, CAMPAIGN_CHANNEL[c]),
                    "campaign_id": lookup(CAMPAIGN_IDS, c), "campaign_name": lookup(CAMPAIGN_NAMES, c),
                    "impressions": ints(R["impressions"]), "clicks": ints(R["clicks"]), "spend": money(R["spend"]),
                    "currency": _o(c.shape[0], C.CURRENCY)}
        raise KeyError(table)

    def owner_ids_or_none(self, owner: np.ndarray) -> np.ndarray:
        table = np.append(self.owner_ids, np.array([None], dtype=object))   # index len(owner_ids): no owner
        return table[np.where(owner < 0, len(self.owner_ids), owner)]


_SUBJECTS = {
    "lead": ("Discovery call: {}", "Intro call: {}", "Demo for {}", "Intro email: {}"),
    "opp": ("Meeting: {}", "Check-in call: {}", "Demo for {}", "Follow-up: {}"),
}


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
