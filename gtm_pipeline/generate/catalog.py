"""Canonical enums and the parameters of the simulated business.

Everything the simulation draws from lives here, so the ground truth in the manifest can quote the parameters.
Codes used internally are indexes into the tuples below.
"""

from __future__ import annotations

import numpy as np

# --- canonical enums (lowercase) ---------------------------------------------------------------------------------
CHANNELS = ("paid_search", "paid_social", "organic_search", "email", "events", "referral", "direct", "partner")
SEGMENTS = ("smb", "mid_market", "enterprise")
SIZE_BANDS = ("1-10", "11-50", "51-200", "201-1000", "1001-5000", "5000+")
SIZE_TO_SEGMENT = np.array([0, 0, 1, 1, 2, 2], dtype=np.int64)
SIZE_EMPLOYEES = ((1, 10), (11, 50), (51, 200), (201, 1000), (1001, 5000), (5001, 60000))
INDUSTRIES = ("software", "fintech", "healthcare", "retail", "manufacturing", "media", "education", "logistics")
REGIONS = ("na", "emea", "apac", "latam")
STAGES = ("prospecting", "discovery", "proposal", "negotiation", "closed_won", "closed_lost")
WON, LOST = 4, 5
LEAD_STATUSES = ("new", "working", "sql", "disqualified", "converted")
ST_NEW, ST_WORKING, ST_SQL, ST_DQ, ST_CONVERTED = range(5)
DQ_REASONS = ("no_budget", "no_authority", "no_need", "bad_timing", "competitor", "invalid_contact",
              "student_or_personal")
ACTIVITY_TYPES = ("meeting", "call", "demo", "email")
CAL_STATUSES = ("scheduled", "completed", "no_show", "cancelled")
TEAMS = ("sdr", "ae")
ROUTED_BY = ("engine", "round_robin", "manual")
LOSS_REASONS = ("price", "competitor", "no_decision", "timing", "product_fit")
PRODUCTS = ("team", "business", "enterprise")  # plan sold to each segment
CURRENCY = "USD"

ENUM_VALUES = {
    "channel": CHANNELS, "segment": SEGMENTS, "industry": INDUSTRIES, "region": REGIONS, "stage": STAGES,
    "status": LEAD_STATUSES, "dq_reason": DQ_REASONS, "type": ACTIVITY_TYPES, "calendar_status": CAL_STATUSES,
    "team": TEAMS, "routed_by": ROUTED_BY, "size_band": SIZE_BANDS,
}

# Benign spellings that normalisation must accept (strip, lower-case, spaces and hyphens to underscores, or a
# documented alias in contracts/entities). Generic case/space/hyphen variants are derived in ``benign_variants``.
EXTRA_VARIANTS = {
    "mid_market": ("Mid-Market", "mm"),
    "enterprise": ("ent", "Enterprise"),
    "emea": ("EMEA",),
    "na": ("Na", "amer"),
    "apac": ("APAC",),
    "latam": ("LATAM",),
    "paid_search": ("Paid Search", "ppc"),
    "paid_social": ("Paid Social", "social"),
    "organic_search": ("Organic Search", "seo"),
    "closed_won": (" closed_won ", "Closed Won", "won"),
    "closed_lost": ("Closed Lost", "lost"),
    "cancelled": ("canceled",),
    "no_show": ("No Show", "noshow"),
}


NULL_LIKE = {"NA", "N/A", "NULL", "NONE", "NAN", ""}


def benign_variants(value: str) -> tuple[str, ...]:
    spaced = value.replace("_", " ")
    out = [spaced.title(), value.upper(), f" {value} ", value.replace("_", "-")]
    out.extend(EXTRA_VARIANTS.get(value, ()))
    seen: list[str] = []
    for v in out:
        # never a spelling a CSV reader may take for NULL (e.g. "NA")
        if v != value and v not in seen and v.strip().upper() not in NULL_LIKE:
            seen.append(v)
    return tuple(seen)


# Values that no normalisation can map back: not an alias in contracts/entities, and still unknown after dropping
# case, blanks and punctuation (so no "closed won!!", which slugs to closed_won).
BAD_ENUM_VALUES = {
    "channel": ("tiktok", "paid_serach", "billboard"),
    "segment": ("smbb", "mid_markt", "consumer"),
    "industry": ("sofware", "crypto", "healthcar"),
    "region": ("mars", "eu-west-9", "latm"),
    "stage": ("closd_won", "negotiaton", "stage_7"),
    "status": ("qualifed", "sql2", "hot"),
    "dq_reason": ("budget??", "asdf"),
    "routed_by": ("robot",),
    "type": ("meetng", "lunch"),
    "calendar_status": ("done?", "rescheduled!!"),
}

# --- market mix --------------------------------------------------------------------------------------------------
SIZE_WEIGHTS = np.array([0.12, 0.30, 0.25, 0.17, 0.11, 0.05])
INDUSTRY_WEIGHTS = np.array([0.24, 0.12, 0.11, 0.12, 0.12, 0.09, 0.08, 0.12])
REGION_WEIGHTS = np.array([0.48, 0.30, 0.14, 0.08])
REGION_UTC_HOURS = np.array([-5, 1, 8, -3])  # rough visitor offset, for time-of-day of web traffic
COUNTRIES = (("US", "CA"), ("GB", "DE", "FR", "NL"), ("AU", "SG", "IN", "JP"), ("BR", "MX"))
COUNTRY_WEIGHTS = ((0.85, 0.15), (0.35, 0.30, 0.20, 0.15), (0.35, 0.25, 0.25, 0.15), (0.6, 0.4))
DEVICES = ("desktop", "mobile", "tablet")
DEVICE_WEIGHTS = np.array([0.68, 0.27, 0.05])

# --- pricing and win model ---------------------------------------------------------------------------------------
LIST_PRICE = np.array([40.0, 60.0, 90.0])  # per seat per month, by segment; also the reference price
PRICE_CHANGE_SEGMENT = 0  # smb list price +8% from mid-horizon on
PRICE_CHANGE_PCT = 0.08
ELASTICITY = np.array([-0.6, -0.45, -1.4])  # constant price elasticity of win probability, by segment
WIN_BASE_SEGMENT = np.array([0.30, 0.26, 0.22])
WIN_MULT_INDUSTRY = np.array([1.0, 1.6, 0.9, 0.45, 0.95, 1.0, 0.85, 1.05])
WIN_MULT_CHANNEL = np.array([1.0, 0.6, 1.0, 0.85, 0.95, 1.45, 0.95, 1.5])
WIN_CAP = 0.9
SEATS_RANGE = ((5, 30), (30, 200), (200, 2000))
DISCOUNT_MEAN = np.array([0.08, 0.14, 0.22])
CYCLE_MEDIAN_DAYS = np.array([20.0, 45.0, 90.0])
CYCLE_SIGMA = 0.45
LOSS_WEIGHTS = np.array([0.22, 0.24, 0.28, 0.14, 0.12])

# --- funnel ------------------------------------------------------------------------------------------------------
FORM_RATE = np.array([0.07, 0.035, 0.06, 0.055, 0.10, 0.12, 0.055, 0.075])  # form fills per anonymous session
P_SQL = np.array([0.24, 0.11, 0.26, 0.20, 0.27, 0.36, 0.25, 0.40])  # by channel
SQL_MULT_SEGMENT = np.array([0.9, 1.05, 1.15])
DQ_SHARE_OF_REST = 0.6
P_OPP_GIVEN_SQL = np.array([0.60, 0.66, 0.70])  # by segment
OPP_MULT_CHANNEL = np.array([1.0, 0.8, 1.0, 0.95, 1.0, 1.1, 1.0, 1.15])
DQ_WEIGHTS = np.array([0.18, 0.12, 0.22, 0.16, 0.10, 0.10, 0.12])
DQ_MISSING_RATE = 0.015
UNASSIGNED_RATE = 0.003
ROUTE_MEDIAN_S = 40.0
ROUTE_SIGMA = 0.857  # ln(120/40) / z(0.9): P(route < 2 min) = 0.9
ROUTED_BY_WEIGHTS = np.array([0.86, 0.11, 0.03])
NO_TOUCH_RATE = 0.003  # share of opportunities without any touch before creation
P_EXISTING_COMPANY = 0.22

# --- traffic and spend (per day at scale 1) ----------------------------------------------------------------------
LANDING_PAGES = ("/", "/pricing", "/product", "/demo", "/customers", "/blog/revops-playbook", "/blog/lead-routing",
                 "/integrations", "/security", "/about")
LANDING_WEIGHTS = np.array([0.25, 0.15, 0.14, 0.08, 0.07, 0.10, 0.08, 0.06, 0.04, 0.03])
SITE = "https://www.northbeam.io"
ORGANIC_SESSIONS = {2: 150.0, 6: 100.0, 5: 30.0, 3: 25.0, 4: 6.0}  # channel code -> anonymous sessions per day
ORGANIC_SOURCES = {
    2: (("google", "bing", "duckduckgo"), (0.82, 0.13, 0.05), "organic", None),
    5: (("g2.com", "capterra.com", "techradar.com", "reddit.com", "news.ycombinator.com"),
        (0.35, 0.25, 0.15, 0.15, 0.10), "referral", None),
    3: (("newsletter",), (1.0,), "email", "weekly_digest"),
}
REFERRERS = {0: "https://www.google.com/", 1: "https://www.linkedin.com/", 2: "https://www.google.com/",
             3: None, 4: None, 5: "https://www.g2.com/", 6: None, 7: "https://partners.northbeam.io/"}
LAND_RATE = 0.85  # share of ad clicks that start a tracked session
RETURN_CHANNEL_WEIGHTS = np.array([0.08, 0.05, 0.15, 0.35, 0.0, 0.04, 0.30, 0.03])

# Paid campaigns: channel, id, name, utm_source, utm_medium, daily budget (USD at scale 1), cpc, ctr, active span.
# Budgets are sized so every channel pays back within the spec's 36-month bound while paid social stays the clearly
# inefficient channel (CAC per SQO well above 1.2x the blended baseline), as channel.invest needs something to pause.
CAMPAIGNS = (
    (0, "G-1001", "ps_brand_na", "google", "cpc", 300.0, 3.0, 0.09, (0.0, 1.0)),
    (0, "G-1002", "ps_generic_crm_na", "google", "cpc", 550.0, 7.5, 0.035, (0.0, 1.0)),
    (0, "G-1003", "ps_competitor_emea", "google", "cpc", 300.0, 9.0, 0.03, (0.0, 0.7)),
    (0, "G-1004", "ps_generic_apac", "bing", "cpc", 200.0, 5.0, 0.04, (0.3, 1.0)),
    (1, "S-2001", "li_abm_enterprise", "linkedin", "paid_social", 180.0, 14.0, 0.005, (0.0, 1.0)),
    (1, "S-2002", "li_lead_gen_forms", "linkedin", "paid_social", 120.0, 11.0, 0.006, (0.0, 1.0)),
    (1, "S-2003", "meta_retargeting", "facebook", "paid_social", 60.0, 3.5, 0.009, (0.2, 1.0)),
    (3, "E-3001", "newsletter_sponsorship_saasweekly", "saasweekly", "email", 180.0, 2.2, 0.012, (0.0, 1.0)),
    (3, "E-3002", "nurture_q3", "hubspot", "email", 60.0, 0.8, 0.02, (0.0, 1.0)),
    (7, "P-4001", "partner_comarketing_acmecloud", "acmecloud", "partner", 120.0, 4.0, 0.01, (0.0, 1.0)),
    (7, "P-4002", "partner_marketplace_listing", "marketplace", "partner", 60.0, 2.5, 0.015, (0.0, 1.0)),
)

# Marketing events (sponsorships): horizon fraction, name, sponsorship range (USD at scale 1).
EVENTS = (
    (0.12, "saas_summit_2026", "SaaS Summit LLC", (7000.0, 10500.0)),
    (0.45, "revops_world", "RevOps World Inc", (5500.0, 9000.0)),
    (0.78, "gtm_live_emea", "GTM Live Ltd", (6000.0, 10000.0)),
)
EVENT_LEADS = 90.0  # leads uploaded after each event, at scale 1
PARTNER_LEADS = 2.5  # partner-registered leads per weekday
REFERRAL_LEADS = 0.8  # customer referrals entered in CRM per weekday

# Monthly / weekly vendor invoices: vendor, channel, category, amount (USD at scale 1), cadence.
VENDOR_FEES = (
    ("ContactPoint Data", 3, "data", 4000.0, "monthly"),
    ("AllianceHub", 7, "partner_fee", 8000.0, "monthly"),
    ("RankForge", 2, "software", 1500.0, "monthly"),
    ("KickbackHQ", 5, "referral_reward", 300.0, "weekly"),
)
FIRMO_VENDORS = ("FirmoGraph", "DataHarbor")
INTENT_VENDOR = "SignalScope"
INTENT_TOPICS = ("crm software", "sales engagement", "revenue intelligence", "marketing automation",
                 "data enrichment", "pricing optimization")
INTENT_PER_DAY = 35.0
FIRMO_AGREEMENT = 0.92

# --- people and companies ----------------------------------------------------------------------------------------
FIRST_NAMES = ("James", "Maria", "Chen", "Aisha", "Lukas", "Sofia", "Raj", "Emma", "Diego", "Hana", "Oliver", "Priya",
               "Mateo", "Yuki", "Noah", "Amara", "Elena", "Kwame", "Lena", "Arjun", "Grace", "Tomas", "Zara", "Felix",
               "Ines", "Omar", "Clara", "Ivan", "Mei", "Samuel", "Nora", "Hugo", "Leila", "Daniel", "Freya", "Kofi",
               "Ana", "Marco", "Sara", "Victor")
LAST_NAMES = ("Smith", "Garcia", "Wang", "Khan", "Schmidt", "Rossi", "Patel", "Brown", "Silva", "Tanaka", "Jones",
              "Nguyen", "Lopez", "Kim", "Murphy", "Okafor", "Novak", "Fischer", "Cohen", "Singh", "Martin", "Haddad",
              "Larsen", "Moreau", "Costa", "Ivanova", "Yamada", "Walker", "Bauer", "Reyes", "Sato", "Mensah",
              "Dubois", "Ali", "Berg", "Clarke", "Kowalski", "Romero", "Hughes", "Weber")
TITLES = (("Founder", "Head of Sales", "Marketing Manager", "Operations Lead", "CEO"),
          ("VP Marketing", "Head of RevOps", "Sales Director", "Demand Gen Manager", "CRO"),
          ("VP Sales Operations", "Director of Marketing Ops", "CIO", "Head of GTM Systems", "SVP Revenue"))
NAME_PREFIXES = ("North", "Blue", "Bright", "Silver", "Iron", "Green", "Red", "Clear", "Swift", "Deep", "High",
                 "Cloud", "Stone", "Quantum", "Summit", "Harbor", "Maple", "Cedar", "Pine", "River", "Atlas", "Nova",
                 "Apex", "Vertex", "Lumen", "Orbit", "Pixel", "Signal", "Vector", "Polar", "Solar", "Lunar", "Coral",
                 "Granite", "Amber", "Echo", "Falcon", "Golden", "Hyper", "Metro")
NAME_ROOTS = ("wave", "peak", "field", "stack", "bridge", "path", "point", "works", "line", "gate", "forge", "spring",
              "light", "core", "loop", "mark", "scale", "craft", "leaf", "mont", "wind", "rock", "tide", "port",
              "view", "ware", "sight", "flow", "base", "grid")
NAME_QUALIFIERS = ("Alpha", "Beta", "Delta", "Sigma", "Omega", "Prime", "One", "Plus", "Pro", "Nexus", "Union",
                   "Global")
INDUSTRY_SUFFIXES = (("Software", "Labs", "Systems", "Technologies"), ("Pay", "Capital", "Finance", "Ledger"),
                     ("Health", "Medical", "Care", "Bio"), ("Retail", "Goods", "Stores", "Market"),
                     ("Manufacturing", "Industries", "Components", "Fabrication"),
                     ("Media", "Studios", "Publishing", "Digital"), ("Learning", "Academy", "Education", "Edu"),
                     ("Logistics", "Freight", "Shipping", "Transport"))
LEGAL_SUFFIXES = ((", Inc.", " LLC"), (" GmbH", " Ltd", " B.V."), (" Pty Ltd", " Pte. Ltd."), (" S.A.", " Ltda."))
TLDS = (".com", ".io", ".co", ".net")

# Owners: timezone names per region (offset rules live in timeutil).
REGION_TIMEZONES = (("America/New_York", "America/Chicago", "America/Los_Angeles"),
                    ("Europe/London", "Europe/Berlin"), ("Asia/Singapore", "Australia/Sydney"),
                    ("America/Sao_Paulo",))
SDR_REGION_CYCLE = (0, 1, 2, 3, 0, 1, 0, 2, 1, 0, 3, 0)
AE_SEGMENT_CYCLE = (0, 1, 2, 0, 1, 2, 0, 1, 2, 0)
AE_REGION_CYCLE = (0, 1, 0, 2, 0, 1, 3, 1, 0, 2)
COMPANY_DOMAIN = "northbeam.io"
