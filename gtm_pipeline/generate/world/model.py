"""World: one simulated day across every source, and the export columns of each table."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

import gtm_pipeline.generate.catalog as C
from gtm_pipeline.generate.timeutil import (
    DAY,
    ZONE_NAMES,
    fmt_local,
    fmt_ts,
    ints,
    lookup,
    money,
    opaque_ids,
    seq_ids,
    utc_offsets,
)
from gtm_pipeline.generate.world.crm import CrmSim
from gtm_pipeline.generate.world.frames import (
    CAMPAIGN_CHANNEL,
    CAMPAIGN_IDS,
    CAMPAIGN_NAMES,
    FORMS,
    N_ADS_CAMPAIGNS,
    _o,
)


class World(CrmSim):
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

    # Long on purpose: one branch per table, so each export's columns read side by side with contracts/sources.yaml.
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
