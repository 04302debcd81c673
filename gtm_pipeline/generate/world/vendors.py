"""vendors.costs, vendors.intent and vendors.firmographics."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

import gtm_pipeline.generate.catalog as C
from gtm_pipeline.generate.timeutil import DAY
from gtm_pipeline.generate.world.base import WorldBase
from gtm_pipeline.generate.world.frames import S_COSTS, S_FIRMO, S_INTENT, _choice, _i


class VendorSim(WorldBase):
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

