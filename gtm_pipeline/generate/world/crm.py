"""crm: leads, contacts, accounts, opportunities and their stage history; each new lead's whole life is decided
when it is created, so it also schedules its meetings and return visits."""

from __future__ import annotations

import numpy as np

import gtm_pipeline.generate.catalog as C
from gtm_pipeline.experiments.assignment import arm_of
from gtm_pipeline.generate.timeutil import DAY, epoch_seconds, seq_ids
from gtm_pipeline.generate.world.calendar import CalendarSim
from gtm_pipeline.generate.world.frames import (
    FORM_WEIGHTS,
    N_ADS_CAMPAIGNS,
    S_COMPANIES,
    S_CRM_LEADS,
    S_EVENTS,
    S_FIRMO,
    S_LEADS,
    S_OPPS,
    _choice,
    _i,
    _lognormal,
    _o,
    concat,
    nrows,
    take,
)
from gtm_pipeline.generate.world.vendors import VendorSim
from gtm_pipeline.generate.world.web import WebSim


class CrmSim(WebSim, VendorSim, CalendarSim):
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
        # The order of the helpers is the order of the draws from `rng`: keep it, or the bytes change.
        rng = self.rng(S_LEADS, d)
        lead_no = self.take_ids("lead", n)
        channel, created = L["channel"], L["created"]
        company = self._lead_companies(d, L, rng)
        comp = self.companies
        industry, size, region = comp.industry[company], comp.size[company], comp.region[company]
        segment = C.SIZE_TO_SEGMENT[size]
        f = self._lead_fate(rng, channel, segment, region, lead_no, created)
        comp.hot[company[f["converts"]]] = True
        status, st_ts, shown_dq = _lead_status(created, f, self.t_end)
        fn, ln, email, title = _lead_people(rng, f["is_dq"] & (f["dq_reason"] == 6), segment, comp.domain[company])

        # utm of the lead: the form fill's session for web leads
        web = L["session_idx"] >= 0
        si = L["session_idx"][web]
        utm = {k: _o(n) for k in ("utm_source", "utm_medium", "utm_campaign")}
        for k in utm:
            utm[k][web] = sessions[k][si]
        sessions["lead"][si] = lead_no[web]

        self.sched.add("crm.leads", {
            "_ts": created, "lead": lead_no, "company": company, "email": email, "channel": channel,
            "campaign": L["campaign"], **utm, "score": f["score"], "status": status, "status_ts": st_ts,
            "dq_reason": shown_dq, "owner": f["owner"], "assigned": f["assigned"], "routed": f["routed"],
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
                "size": size, "region": region, "created": created, "anon": L["anon"], "web": web,
                **{k: f[k] for k in ("owner", "work_ts", "sql_ts", "opp_ts", "is_sql", "converts", "unassigned")}}
        opps = self._create_opportunities(d, take(lead, f["converts"] & (f["opp_ts"] < self.t_end)))
        self._lead_calendar(d, lead)
        self._opp_calendar(d, opps)
        self._return_sessions(d, lead)

    def _lead_companies(self, d: int, L: dict, rng: np.random.Generator) -> np.ndarray:
        """Each lead's company: an existing one for some leads, otherwise a new company (and a new account)."""
        comp = self.companies
        n, created = nrows(L), L["created"]
        n_before = comp.n
        existing = (rng.random(n) < C.P_EXISTING_COMPANY) & (n_before > 0)
        company = np.empty(n, np.int64)
        company[existing] = rng.integers(0, max(1, n_before), int(existing.sum()))
        new = ~existing
        m = int(new.sum())
        crng = self.rng(S_COMPANIES, d)
        company[new] = comp.add(crng, _choice(crng, C.INDUSTRY_WEIGHTS, m), _choice(crng, C.SIZE_WEIGHTS, m),
                                L["region"][new])
        self._create_accounts(d, company[new], created[new], rng)
        return company

    def _lead_fate(self, rng: np.random.Generator, channel: np.ndarray, segment: np.ndarray, region: np.ndarray,
                   lead_no: np.ndarray, created: np.ndarray) -> dict[str, np.ndarray]:
        """Qualification, routing and conversion of each lead, with the time of every step."""
        n = channel.shape[0]
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
        return {"unassigned": unassigned, "is_sql": is_sql, "is_dq": is_dq, "owner": owner, "assigned": assigned,
                "routed": routed, "work_ts": work_ts, "sql_ts": sql_ts, "dq_ts": dq_ts, "converts": converts,
                "opp_ts": opp_ts, "dq_reason": dq_reason, "dq_missing": dq_missing, "score": score}

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


def _lead_status(created: np.ndarray, f: dict[str, np.ndarray], t_end: int) -> tuple[np.ndarray, ...]:
    """Status as of the end of the horizon (one row per lead, delivered on its creation day), when it was reached
    and the disqualification reason shown (none where the rep left it empty)."""
    status = np.full(created.shape[0], C.ST_NEW, np.int64)
    st_ts = created.copy()
    step = (~f["unassigned"]) & (f["work_ts"] < t_end)
    status[step], st_ts[step] = C.ST_WORKING, f["work_ts"][step]
    step = f["is_sql"] & (f["sql_ts"] < t_end)
    status[step], st_ts[step] = C.ST_SQL, f["sql_ts"][step]
    step = f["converts"] & (f["opp_ts"] < t_end)
    status[step], st_ts[step] = C.ST_CONVERTED, f["opp_ts"][step]
    step = f["is_dq"] & (f["dq_ts"] < t_end)
    status[step], st_ts[step] = C.ST_DQ, f["dq_ts"][step]
    shown_dq = np.where((status == C.ST_DQ) & ~f["dq_missing"], f["dq_reason"], -1)
    return status, st_ts, shown_dq


def _lead_people(rng: np.random.Generator, personal: np.ndarray, segment: np.ndarray,
                 domain: np.ndarray) -> tuple[np.ndarray, ...]:
    """First and last names, work (or, for `personal`, gmail) addresses and job titles of the leads."""
    n = len(personal)
    first = rng.integers(0, len(C.FIRST_NAMES), n)
    last = rng.integers(0, len(C.LAST_NAMES), n)
    fn = np.array(C.FIRST_NAMES, dtype=object)[first]
    ln = np.array(C.LAST_NAMES, dtype=object)[last]
    digits = rng.integers(10, 99, n)
    email = np.array([
        f"{a.lower()}.{b.lower()}{k}@gmail.com" if p else f"{a.lower()}.{b.lower()}@{dom}"
        for a, b, k, p, dom in zip(fn.tolist(), ln.tolist(), digits.tolist(), personal.tolist(),
                                   domain.tolist())], dtype=object)
    title_i = rng.integers(0, 5, n)
    title = np.array([C.TITLES[s][t] for s, t in zip(segment.tolist(), title_i.tolist())], dtype=object)
    title[personal] = "Student"
    return fn, ln, email, title
