"""web.sessions (anonymous and return visits) and web.pageviews."""

from __future__ import annotations

import numpy as np

import gtm_pipeline.generate.catalog as C
from gtm_pipeline.generate.timeutil import DAY, lookup
from gtm_pipeline.generate.world.ads import AdsSim
from gtm_pipeline.generate.world.frames import (
    CAMPAIGN_MEDIUMS,
    CAMPAIGN_NAMES,
    CAMPAIGN_SOURCES,
    N_ADS_CAMPAIGNS,
    S_PAGEVIEWS,
    S_RETURN,
    S_SESSIONS,
    _choice,
    _i,
    _lognormal,
    _o,
    concat,
    nrows,
)


class WebSim(AdsSim):
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

