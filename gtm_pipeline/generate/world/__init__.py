"""The simulated business: one day at a time, with everything that happens later scheduled ahead.

Each new lead's whole life (routing, qualification, opportunity, stage changes, meetings, return visits) is decided
when the lead is created and its records are put into a per-day schedule, so that any day's files can be written as
soon as that day is simulated and memory stays bounded by what is still to come. Records are plain dicts of numpy
arrays ("raw" tables, with codes and epoch seconds); ``format_table`` turns them into the export's text columns.

The simulation is split by source: ``base`` (the clock, random streams, owners), ``ads``, ``web``, ``vendors``,
``calendar`` and ``crm`` add each source's records, and ``model.World`` runs a day and formats its exports.
"""

from gtm_pipeline.generate.world.frames import CAMPAIGN_CHANNEL, TABLES, event_time, sort_order, take
from gtm_pipeline.generate.world.model import World

__all__ = ["CAMPAIGN_CHANNEL", "TABLES", "World", "event_time", "sort_order", "take"]
