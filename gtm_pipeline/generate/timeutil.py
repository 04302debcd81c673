"""Vectorised helpers: timestamps as int64 epoch seconds, their text forms, time-zone offsets and record ids.

Offsets come from fixed daylight-saving rules (US, EU, south-east Australia) rather than the system's tz database,
so the output is the same on every machine.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

DAY = 86400
_EPOCH = date(1970, 1, 1)


def epoch_seconds(d: date) -> int:
    return (d - _EPOCH).days * DAY


def day_string(day_number: int) -> str:
    """Days since 1970-01-01 -> 'YYYY-MM-DD'."""
    return (_EPOCH + timedelta(days=int(day_number))).isoformat()


_HMS: np.ndarray | None = None


def _hms() -> np.ndarray:
    global _HMS
    if _HMS is None:
        _HMS = np.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(DAY)], dtype=object)
    return _HMS


def _dates(days: np.ndarray) -> np.ndarray:
    uniq, inv = np.unique(days, return_inverse=True)
    return np.array([day_string(u) for u in uniq], dtype=object)[inv]


def fmt_ts(ts: np.ndarray, style: str) -> np.ndarray:
    """Epoch seconds -> text; negative means missing (None). style: 'crm' | 'iso_z' | 'date'."""
    ts = np.asarray(ts, dtype=np.int64)
    out = np.full(ts.shape[0], None, dtype=object)
    ok = ts >= 0
    if not ok.any():
        return out
    t = ts[ok]
    days = t // DAY
    dates = _dates(days)
    if style == "date":
        out[ok] = dates
        return out
    hms = _hms()[t % DAY]
    if style == "crm":
        out[ok] = dates + " " + hms
    elif style == "iso_z":
        out[ok] = dates + "T" + hms + "Z"
    else:
        raise ValueError(style)
    return out


def fmt_local(ts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """UTC epoch seconds + UTC offsets (seconds) -> 'YYYY-MM-DDTHH:MM:SS+HH:MM' local time."""
    ts = np.asarray(ts, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    out = np.full(ts.shape[0], None, dtype=object)
    if ts.shape[0] == 0:
        return out
    local = ts + offsets
    dates = _dates(local // DAY)
    hms = _hms()[local % DAY]
    sign = np.where(offsets < 0, "-", "+").astype(object)
    a = np.abs(offsets)
    off_text = np.array([f"{h:02d}:{m:02d}" for h, m in zip((a // 3600).tolist(), (a // 60 % 60).tolist())],
                        dtype=object)
    out[:] = dates + "T" + hms + sign + off_text
    return out


def hms_of(seconds_of_day: int) -> str:
    return str(_hms()[int(seconds_of_day) % DAY])


# --- time zones --------------------------------------------------------------------------------------------------
# name -> (daylight-saving rule, standard offset in hours)
ZONES = {
    "America/New_York": ("us", -5), "America/Chicago": ("us", -6), "America/Los_Angeles": ("us", -8),
    "Europe/London": ("eu", 0), "Europe/Berlin": ("eu", 1), "Asia/Singapore": (None, 8),
    "Australia/Sydney": ("au", 10), "America/Sao_Paulo": (None, -3),
}
ZONE_NAMES = tuple(ZONES)


def _nth_sunday(year: int, month: int, n: int) -> date:
    d = date(year, month, 1)
    d += timedelta(days=(6 - d.weekday()) % 7)
    return d + timedelta(weeks=n - 1)


def _last_sunday(year: int, month: int) -> date:
    d = date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)
    return d - timedelta(days=(d.weekday() - 6) % 7)


def _dst(zone: str, ts: np.ndarray) -> np.ndarray:
    rule, std = ZONES[zone]
    out = np.zeros(ts.shape[0], dtype=bool)
    if rule is None or ts.shape[0] == 0:
        return out
    years = (ts // DAY).astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    for y in np.unique(years).tolist():
        m = years == y
        if rule == "us":  # 02:00 local standard time to 02:00 local daylight time
            a = epoch_seconds(_nth_sunday(y, 3, 2)) + 2 * 3600 - std * 3600
            b = epoch_seconds(_nth_sunday(y, 11, 1)) + 2 * 3600 - (std + 1) * 3600
            out[m] = (ts[m] >= a) & (ts[m] < b)
        elif rule == "eu":  # 01:00 UTC both ways
            a = epoch_seconds(_last_sunday(y, 3)) + 3600
            b = epoch_seconds(_last_sunday(y, 10)) + 3600
            out[m] = (ts[m] >= a) & (ts[m] < b)
        else:  # southern hemisphere: daylight time from October to April
            end = epoch_seconds(_nth_sunday(y, 4, 1)) + 3 * 3600 - (std + 1) * 3600
            start = epoch_seconds(_nth_sunday(y, 10, 1)) + 2 * 3600 - std * 3600
            out[m] = (ts[m] < end) | (ts[m] >= start)
    return out


def utc_offsets(zone_codes: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Offsets in seconds for each (zone code, UTC instant)."""
    zone_codes = np.asarray(zone_codes, dtype=np.int64)
    ts = np.asarray(ts, dtype=np.int64)
    out = np.zeros(ts.shape[0], dtype=np.int64)
    for z in np.unique(zone_codes).tolist():
        m = zone_codes == z
        name = ZONE_NAMES[z]
        out[m] = ZONES[name][1] * 3600 + _dst(name, ts[m]) * 3600
    return out


def snap_to_business_hours(ts: np.ndarray, zone_codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move instants outside 08:00-18:00 local on weekdays to the next working morning (never earlier)."""
    ts = np.asarray(ts, dtype=np.int64).copy()
    if ts.shape[0] == 0:
        return ts
    off = utc_offsets(zone_codes, ts)
    local = ts + off
    day = local // DAY
    sod = local % DAY
    jitter = rng.integers(0, 3 * 3600, ts.shape[0]) // 300 * 300
    early = sod < 8 * 3600
    late = sod >= 18 * 3600
    new_sod = np.where(early, 8 * 3600 + jitter, np.where(late, 9 * 3600 + jitter, sod))
    day = day + late
    dow = (day + 3) % 7  # 0 = Monday
    day = day + np.where(dow == 5, 2, np.where(dow == 6, 1, 0))
    return day * DAY + new_sod - off


# --- ids ---------------------------------------------------------------------------------------------------------
_MASK48 = np.uint64((1 << 48) - 1)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SHIFTS = np.arange(44, -1, -4, dtype=np.uint64)


def opaque_ids(prefix: str, numbers: np.ndarray, salt: int) -> np.ndarray:
    """Unique, random-looking ids: a bijection of the 48-bit counter, as 12 hex digits after ``prefix``."""
    n = np.asarray(numbers, dtype=np.int64)
    out = np.full(n.shape[0], None, dtype=object)
    ok = n >= 0
    if not ok.any():
        return out
    x = (n[ok].astype(np.uint64) ^ np.uint64(salt)) & _MASK48
    x = (x * np.uint64(0x9E3779B97F4B)) & _MASK48
    x ^= x >> np.uint64(21)
    x = (x * np.uint64(0xBF58476D1CE5)) & _MASK48
    x ^= x >> np.uint64(17)
    nibbles = ((x[:, None] >> _SHIFTS) & np.uint64(15)).astype(np.intp)
    text = np.ascontiguousarray(_HEX[nibbles]).view("S12").ravel().astype("U12").astype(object)
    out[ok] = prefix + text
    return out


def seq_ids(prefix: str, numbers: np.ndarray, width: int = 7) -> np.ndarray:
    """'L0000123'-style ids; negative numbers mean missing (None)."""
    n = np.asarray(numbers, dtype=np.int64)
    fmt = f"{prefix}%0{width}d"
    return np.array([fmt % v if v >= 0 else None for v in n.tolist()], dtype=object)


def money(values: np.ndarray) -> np.ndarray:
    return np.array([f"{v:.2f}" for v in np.asarray(values, dtype=np.float64).tolist()], dtype=object)


def ints(values: np.ndarray) -> np.ndarray:
    return np.array([str(v) for v in np.asarray(values, dtype=np.int64).tolist()], dtype=object)


def lookup(labels: tuple, codes: np.ndarray) -> np.ndarray:
    """Codes -> labels; negative codes mean missing (None)."""
    codes = np.asarray(codes, dtype=np.int64)
    table = np.array(list(labels) + [None], dtype=object)
    return table[np.where(codes < 0, len(labels), codes)]
