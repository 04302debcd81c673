"""The simulation's state: clock, random streams, id counters, the owners (sales reps) and their routing."""

from __future__ import annotations

import numpy as np

import gtm_pipeline.generate.catalog as C
from gtm_pipeline.generate.config import GenerateConfig
from gtm_pipeline.generate.timeutil import DAY, epoch_seconds, seq_ids
from gtm_pipeline.generate.world.frames import S_COMPANIES, S_OWNERS, TZ_CODE, Companies, Schedule, _i


class WorldBase:
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


    def owner_ids_or_none(self, owner: np.ndarray) -> np.ndarray:
        table = np.append(self.owner_ids, np.array([None], dtype=object))   # index len(owner_ids): no owner
        return table[np.where(owner < 0, len(self.owner_ids), owner)]
