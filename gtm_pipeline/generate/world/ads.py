"""ads.spend: daily spend, impressions and clicks of the live campaigns."""

from __future__ import annotations

import numpy as np

import gtm_pipeline.generate.catalog as C
from gtm_pipeline.generate.world.base import WorldBase
from gtm_pipeline.generate.world.frames import S_ADS


class AdsSim(WorldBase):
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

    def _current_event(self, d: int) -> int:
        past = [e for e, day in enumerate(self.event_days) if day <= d]
        return past[-1] if past else 0
