"""Ground truth: the simulation's parameters and the values realised in the clean data (before any defect).

Definitions (all over the generated horizon): leads = leads created; SQLs = leads whose status at the end of the
horizon is sql or converted; opportunities (SQOs) = opportunities created; wins / losses = closed_won / closed_lost
stage events; win rate = wins / (wins + losses) among opportunities closed in the horizon; spend = ad spend + vendor
costs attributed to the channel; CAC = spend / wins; CAC per SQO = spend / opportunities; SQL rate = SQLs / leads;
SQL-to-win = wins / SQLs. A touch is a web session or form fill carrying the lead's id.
"""

from __future__ import annotations

import numpy as np

import gtm_pipeline.generate.catalog as C
from gtm_pipeline.generate.timeutil import DAY, day_string
from gtm_pipeline.generate.world.frames import CAMPAIGN_CHANNEL


def _r(x: float | None, nd: int = 6):
    if x is None:
        return None
    x = float(x)
    if not np.isfinite(x):
        return None
    return round(x, nd)


def _div(a: float, b: float):
    return _r(a / b) if b else None


class _Grow:
    """An int64/float64 array indexed by record number that grows on demand."""

    def __init__(self, fill, dtype):
        self.fill, self.dtype = fill, dtype
        self.a = np.full(1024, fill, dtype)

    def ensure(self, n: int) -> None:
        if n > self.a.shape[0]:
            b = np.full(max(n, 2 * self.a.shape[0]), self.fill, self.dtype)
            b[: self.a.shape[0]] = self.a
            self.a = b


class Truth:
    def __init__(self, world):
        self.world = world
        nch = len(C.CHANNELS)
        self.ads = np.zeros(nch)
        self.vendor = np.zeros(nch)
        self.leads = np.zeros(nch, np.int64)
        self.sqls = np.zeros(nch, np.int64)
        self.latency: list[np.ndarray] = []
        self.unassigned = 0
        self.dq = 0
        self.dq_with_reason = 0
        self.sdr_load: dict[int, int] = {}
        self.opp_parts: list[dict] = []
        self.first_touch = _Grow(np.iinfo(np.int64).max, np.int64)
        self.outcome = _Grow(-1, np.int64)  # opp -> stage code of the close (4 won, 5 lost)
        self.close_ts = _Grow(-1, np.int64)
        self.booked = _Grow(0.0, np.float64)
        self.stage = _Grow(-1, np.int64)

    def observe(self, table: str, R: dict) -> None:
        if not R or R["_ts"].shape[0] == 0:
            return
        if table == "ads.spend":
            np.add.at(self.ads, CAMPAIGN_CHANNEL[R["campaign"]], R["spend"])
        elif table == "vendors.costs":
            np.add.at(self.vendor, R["channel"], R["amount"])
        elif table == "crm.leads":
            np.add.at(self.leads, R["channel"], 1)
            sql = (R["status"] == C.ST_SQL) | (R["status"] == C.ST_CONVERTED)
            np.add.at(self.sqls, R["channel"][sql], 1)
            assigned = R["owner"] >= 0
            self.unassigned += int((~assigned).sum())
            self.latency.append(R["assigned"][assigned] - R["_ts"][assigned])
            for o, k in zip(*np.unique(R["owner"][assigned], return_counts=True)):
                self.sdr_load[int(o)] = self.sdr_load.get(int(o), 0) + int(k)
            dq = R["status"] == C.ST_DQ
            self.dq += int(dq.sum())
            self.dq_with_reason += int((dq & (R["dq_reason"] >= 0)).sum())
        elif table == "crm.opportunities":
            comp = self.world.companies
            c = R["company"]
            self.opp_parts.append({"opp": R["opp"], "lead": R["lead"], "created": R["_ts"], "channel": R["channel"],
                                   "segment": R["segment"], "industry": comp.industry[c], "size": comp.size[c],
                                   "amount": R["amount"], "discount": R["discount"], "list_price": R["list_price"]})
        elif table == "crm.opportunity_stages":
            opp = R["opp"]
            for g in (self.outcome, self.close_ts, self.booked, self.stage):
                g.ensure(int(opp.max()) + 1)
            closed = (R["to"] == C.WON) | (R["to"] == C.LOST)
            self.outcome.a[opp[closed]] = R["to"][closed]
            self.close_ts.a[opp[closed]] = R["_ts"][closed]
            won = R["to"] == C.WON
            self.booked.a[opp[won]] = R["amount"][won]
            np.maximum.at(self.stage.a, opp, R["to"])
        elif table in ("web.sessions", "web.form_fills"):
            lead = R["lead"]
            m = lead >= 0
            if m.any():
                self.first_touch.ensure(int(lead[m].max()) + 1)
                np.minimum.at(self.first_touch.a, lead[m], R["_ts"][m])

    # --- results -------------------------------------------------------------------------------------------------
    def result(self) -> dict:
        w = self.world
        if self.opp_parts:
            opp_rows = {k: np.concatenate([p[k] for p in self.opp_parts]) for k in self.opp_parts[0]}
        else:
            opp_rows = {k: np.zeros(0, np.int64) for k in ("opp", "lead", "created", "channel", "segment", "industry",
                                                           "size", "amount", "discount", "list_price")}
        n_opp = opp_rows["opp"].shape[0]
        for g in (self.outcome, self.close_ts, self.booked, self.stage):
            g.ensure(int(opp_rows["opp"].max()) + 1 if n_opp else 1)
        outcome = self.outcome.a[opp_rows["opp"]]
        won = outcome == C.WON
        lost = outcome == C.LOST
        closed = won | lost
        nch = len(C.CHANNELS)
        opps = np.bincount(opp_rows["channel"], minlength=nch)
        wins = np.bincount(opp_rows["channel"][won], minlength=nch)
        spend = self.ads + self.vendor

        channels = {}
        for i, ch in enumerate(C.CHANNELS):
            channels[ch] = {
                "ad_spend": _r(self.ads[i], 2), "vendor_costs": _r(self.vendor[i], 2), "spend": _r(spend[i], 2),
                "leads": int(self.leads[i]), "sqls": int(self.sqls[i]), "opportunities": int(opps[i]),
                "wins": int(wins[i]), "cac": _div(spend[i], wins[i]), "cac_per_sqo": _div(spend[i], opps[i]),
                "sql_rate": _div(self.sqls[i], self.leads[i]), "sql_to_win": _div(wins[i], self.sqls[i]),
                "win_rate": _div(wins[i], int((closed & (opp_rows["channel"] == i)).sum())),
            }
        total_spend = float(spend.sum())
        overall_cps = total_spend / n_opp if n_opp else None
        paid = [ch for ch in C.CHANNELS if channels[ch]["spend"] and channels[ch]["cac_per_sqo"] is not None]
        overall_s2w = wins.sum() / self.sqls.sum() if self.sqls.sum() else None
        for ch in C.CHANNELS:
            cps = channels[ch]["cac_per_sqo"]
            channels[ch]["cac_per_sqo_vs_overall"] = _div(cps, overall_cps) if cps is not None and overall_cps else None

        def rates(codes: np.ndarray, labels: tuple) -> dict:
            out = {}
            for i, lab in enumerate(labels):
                m = codes == i
                k = int((closed & m).sum())
                out[lab] = {"wins": int((won & m).sum()), "closed": k, "win_rate": _div(int((won & m).sum()), k)}
            return out

        overall_wr = won.sum() / closed.sum() if closed.sum() else None
        by_industry = rates(opp_rows["industry"], C.INDUSTRIES)
        months = {}
        close_ts = self.close_ts.a[opp_rows["opp"]]
        month = np.array([day_string(t // DAY)[:7] if t >= 0 else "" for t in close_ts.tolist()], dtype=object)
        for mo in sorted(set(month[closed].tolist())):
            mm = closed & (month == mo)
            months[mo] = {lab: _div(int((won & mm & (opp_rows["industry"] == i)).sum()),
                                    int((mm & (opp_rows["industry"] == i)).sum()))
                          for i, lab in enumerate(C.INDUSTRIES)}
            months[mo]["all"] = _div(int((won & mm).sum()), int(mm.sum()))

        lat = np.concatenate(self.latency) if self.latency else np.zeros(0, np.int64)
        n_leads = int(self.leads.sum())
        loads = np.array(sorted(self.sdr_load.get(int(o), 0) for o in np.flatnonzero(w.owner_team == 0)), float)
        gini = None
        if loads.sum() > 0:
            k = loads.shape[0]
            gini = float((2 * np.arange(1, k + 1) - k - 1).dot(loads) / (k * loads.sum()))

        self.first_touch.ensure(int(opp_rows["lead"].max()) + 1 if n_opp else 1)
        touched = self.first_touch.a[opp_rows["lead"]] < opp_rows["created"]

        open_ = ~closed
        stage_now = self.stage.a[opp_rows["opp"]]
        open_by_stage = {C.STAGES[s]: {"count": int((open_ & (stage_now == s)).sum()),
                                       "amount": _r(opp_rows["amount"][open_ & (stage_now == s)].sum(), 2)}
                         for s in range(4)}
        seg_stats = {}
        for i, seg in enumerate(C.SEGMENTS):
            m = opp_rows["segment"] == i
            seg_stats[seg] = {
                "elasticity": float(C.ELASTICITY[i]), "list_price": float(C.LIST_PRICE[i]),
                "win_base": float(C.WIN_BASE_SEGMENT[i]), "cycle_median_days": float(C.CYCLE_MEDIAN_DAYS[i]),
                "opportunities": int(m.sum()), "mean_discount": _r(opp_rows["discount"][m].mean()) if m.any() else None,
                "open_pipeline": _r(opp_rows["amount"][m & open_].sum(), 2),
                "bookings": _r(opp_rows["amount"][m & won].sum(), 2),
            }
        win_seg = rates(opp_rows["segment"], C.SEGMENTS)
        for seg in C.SEGMENTS:
            seg_stats[seg].update(win_seg[seg])

        rated = {k: v["win_rate"] for k, v in by_industry.items() if v["win_rate"] is not None
                 and overall_wr is not None}
        # rated is empty without an overall win rate, so no industry is above or below it then
        above = [k for k, v in rated.items() if v >= overall_wr + 0.06] if overall_wr is not None else []
        below = [k for k, v in rated.items() if v <= overall_wr - 0.06] if overall_wr is not None else []
        best_ind = max(by_industry, key=lambda k: by_industry[k]["win_rate"] or -1)
        worst_ind = min(by_industry, key=lambda k: by_industry[k]["win_rate"] if by_industry[k]["win_rate"]
                        is not None else 2)
        cps = {ch: channels[ch]["cac_per_sqo"] for ch in paid}
        return {
            "definitions": __doc__.split("\n\n", 1)[1].replace("\n", " ").strip(),
            "horizon": {"start": day_string(w.t0 // DAY), "end": day_string(w.t_end // DAY - 1), "days": w.days},
            "parameters": {
                "elasticity": {s: float(C.ELASTICITY[i]) for i, s in enumerate(C.SEGMENTS)},
                "list_price": {s: float(C.LIST_PRICE[i]) for i, s in enumerate(C.SEGMENTS)},
                "reference_price": {s: float(C.LIST_PRICE[i]) for i, s in enumerate(C.SEGMENTS)},
                "price_change": {"segment": C.SEGMENTS[C.PRICE_CHANGE_SEGMENT], "pct": C.PRICE_CHANGE_PCT,
                                 "from_date": day_string(w.t0 // DAY + w.price_change_day),
                                 "new_list_price": round(float(C.LIST_PRICE[C.PRICE_CHANGE_SEGMENT])
                                                         * (1 + C.PRICE_CHANGE_PCT), 2)},
                "win_probability": "min(0.9, win_base[segment] * industry_mult * channel_mult "
                                   "* (net_price / reference_price) ** elasticity[segment])",
                "win_base": {s: float(C.WIN_BASE_SEGMENT[i]) for i, s in enumerate(C.SEGMENTS)},
                "industry_mult": {s: float(C.WIN_MULT_INDUSTRY[i]) for i, s in enumerate(C.INDUSTRIES)},
                "channel_mult": {s: float(C.WIN_MULT_CHANNEL[i]) for i, s in enumerate(C.CHANNELS)},
                "cycle_median_days": {s: float(C.CYCLE_MEDIAN_DAYS[i]) for i, s in enumerate(C.SEGMENTS)},
                "routing_latency": {"distribution": "lognormal", "median_s": C.ROUTE_MEDIAN_S,
                                    "sigma": C.ROUTE_SIGMA},
                "unassigned_rate": C.UNASSIGNED_RATE, "dq_reason_missing_rate": C.DQ_MISSING_RATE,
                "no_touch_rate": C.NO_TOUCH_RATE,
            },
            "channels": channels,
            "channel_summary": {
                "total_spend": _r(total_spend, 2), "cac_per_sqo_overall": _r(overall_cps),
                "sql_to_win_overall": _r(overall_s2w),
                "lowest_cac_per_sqo_paid": min(cps, key=lambda ch: cps[ch]) if cps else None,
                "highest_cac_per_sqo_paid": max(cps, key=lambda ch: cps[ch]) if cps else None,
                "efficient": [ch for ch in paid if overall_cps and overall_s2w is not None
                              and channels[ch]["cac_per_sqo"] <= 0.9 * overall_cps
                              and (channels[ch]["sql_to_win"] or 0) >= overall_s2w + 0.02],
                "inefficient": [ch for ch in paid
                                if overall_cps and channels[ch]["cac_per_sqo"] >= 1.3 * overall_cps],
                "rule": "efficient: spend > 0, CAC per SQO <= 0.9x overall and SQL-to-win >= overall + 2 pp; "
                        "inefficient: CAC per SQO >= 1.3x overall (overall = total spend / all SQOs)",
            },
            "win_rate": {"overall": _r(overall_wr), "wins": int(won.sum()), "losses": int(lost.sum()),
                         "by_segment": win_seg, "by_industry": by_industry,
                         "by_size_band": rates(opp_rows["size"], C.SIZE_BANDS),
                         "by_industry_month": months,
                         "best_industry": best_ind, "worst_industry": worst_ind,
                         "industries_6pp_above": above, "industries_6pp_below": below},
            "segments": seg_stats,
            "routing": {
                "leads": n_leads, "median_latency_s": _r(np.median(lat)) if lat.shape[0] else None,
                "p_route_under_120s": _div(int((lat < 120).sum()), lat.shape[0]),
                "unassigned_rate": _div(self.unassigned, n_leads), "sdr_load_gini": _r(gini),
            },
            "dq_reason_coverage": _div(self.dq_with_reason, self.dq),
            "disqualified_leads": self.dq,
            "attribution": {"opportunities": n_opp, "with_touch_before_creation": int(touched.sum()),
                            "validity": _div(int(touched.sum()), n_opp)},
            "bookings_total": _r(opp_rows["amount"][won].sum(), 2),
            "open_pipeline": {"count": int(open_.sum()), "amount": _r(opp_rows["amount"][open_].sum(), 2),
                              "by_stage": open_by_stage},
            "totals": {"leads": n_leads, "sqls": int(self.sqls.sum()), "opportunities": n_opp,
                       "wins": int(won.sum()), "losses": int(lost.sum())},
        }
