"""calendar.events: the meetings, calls and demos of leads and opportunities."""

from __future__ import annotations

import numpy as np

from gtm_pipeline.generate.timeutil import DAY, snap_to_business_hours
from gtm_pipeline.generate.world.base import WorldBase
from gtm_pipeline.generate.world.frames import S_CAL, _choice, _i, nrows, take

_SUBJECTS = {
    "lead": ("Discovery call: {}", "Intro call: {}", "Demo for {}", "Intro email: {}"),
    "opp": ("Meeting: {}", "Check-in call: {}", "Demo for {}", "Follow-up: {}"),
}


class CalendarSim(WorldBase):
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

