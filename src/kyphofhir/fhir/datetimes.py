"""FHIR date, dateTime and instant values as ranges, and server timestamps.

FHIR dates carry their precision: ``2024`` is the whole year, ``2024-03-05T10:00Z`` one
minute. Search compares ranges (FHIR R4 search §3.1.1.5.4), so every value becomes an
inclusive ``(low, high)`` pair of integer microseconds since the Unix epoch (UTC).
Values without a time zone (dates, partial dates) are taken as UTC; this is documented in
``docs/search.md``.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta

from kyphofhir.errors import Invalid

MIN_US = -62135596800 * 1_000_000  # 0001-01-01T00:00:00Z
MAX_US = 253402300799 * 1_000_000 + 999_999  # 9999-12-31T23:59:59.999999Z

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_range(value: str) -> tuple[int, int]:
    """Return the inclusive (low, high) microsecond range a FHIR date-like value covers.

    Raises ``ValueError`` for anything that is not a FHIR date, dateTime or instant.
    """
    m = _DATE_RE.match(value.strip())
    if not m:
        raise ValueError(f"not a FHIR date/dateTime: {value!r}")
    year = int(m["y"])
    tz = m["tz"]
    offset = timedelta(0)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        offset = sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    if m["m"] is None:
        start = datetime(year, 1, 1, tzinfo=UTC)
        end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else None
        return _span(start, end)
    month = int(m["m"])
    if m["d"] is None:
        start = datetime(year, month, 1, tzinfo=UTC)
        end = start + timedelta(days=calendar.monthrange(year, month)[1])
        return _span(start, end)
    day = int(m["d"])
    if m["H"] is None:
        start = datetime(year, month, day, tzinfo=UTC)
        return _span(start, start + timedelta(days=1))
    hour, minute = int(m["H"]), int(m["M"])
    if hour == 24 and minute == 0 and m["S"] in (None, "00"):
        base = datetime(year, month, day, tzinfo=UTC) + timedelta(days=1)
    else:
        base = datetime(year, month, day, hour, minute, tzinfo=UTC)
    base -= offset
    if m["S"] is None:
        return _span(base, base + timedelta(minutes=1))
    base += timedelta(seconds=int(m["S"]))
    if m["f"] is None:
        return _span(base, base + timedelta(seconds=1))
    digits = m["f"]
    step_us = 10 ** max(0, 6 - len(digits))
    frac_us = int((digits + "000000")[:6])
    start_us = _us(base) + frac_us
    return start_us, start_us + step_us - 1


def _span(start: datetime, end: datetime | None) -> tuple[int, int]:
    return _us(start), (_us(end) - 1 if end is not None else MAX_US)


def parse_search_range(value: str, parameter: str) -> tuple[int, int]:
    """Like :func:`parse_range`, raising :class:`Invalid` that names the parameter."""
    try:
        return parse_range(value)
    except (ValueError, OverflowError):
        raise Invalid(
            f"Invalid date value {value!r} for search parameter {parameter}.",
            expression=[parameter],
            details_code="MSG_DATE_FORMAT",
        ) from None


def now_instant() -> datetime:
    """The server's clock, UTC, truncated to milliseconds (what ``meta.lastUpdated`` shows)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


def format_instant(dt: datetime) -> str:
    """``2024-03-05T10:00:00.123Z``: FHIR instant with millisecond precision."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def instant_to_us(dt: datetime) -> int:
    return _us(dt.astimezone(UTC))


def us_to_instant(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)
