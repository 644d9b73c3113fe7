"""DICOM attribute values as FHIR values: dates and times, person names, codes. Pure.

Tolerant on decode (highdicom's rule): a value that does not parse gives ``None`` and the
FHIR element is left out, never an exception, because one odd attribute must not stop an
instance from being indexed. The callers leave out what is ``None``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from pydicom import Dataset

from kyphofhir.study import codes

JsonObject = dict[str, Any]

# DICOM Coding Scheme Designators (PS3.16 §8) → FHIR code system URIs. SRT is the
# retired SNOMED-RT designator (same concepts, older code values) some archives still send.
SCHEME_SYSTEMS: dict[str, str] = {
    "DCM": codes.DCM,
    "SCT": codes.SNOMED,
    "SRT": codes.SNOMED,
    "SNM3": codes.SNOMED,
    "LN": codes.LOINC,
    "UCUM": codes.UCUM,
    "UMLS": codes.UMLS,
}
SYSTEM_SCHEMES = {codes.DCM: "DCM", codes.SNOMED: "SCT", codes.LOINC: "LN", codes.UMLS: "UMLS"}

_DA = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")
_OFFSET = re.compile(r"^([+-])(\d{2})(\d{2})$")


def text(ds: Dataset, keyword: str) -> str | None:
    """A string attribute, stripped; None when absent or empty."""
    value = ds.get(keyword)
    if value is None:
        return None
    out = str(value).strip().strip("\x00").strip()
    return out or None


def integer(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def parse_da(value: str | None) -> date | None:
    m = _DA.match((value or "").strip())
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


def fhir_date(value: str | None) -> str | None:
    d = parse_da(value)
    return d.isoformat() if d else None


def parse_offset(value: str | None) -> tzinfo | None:
    """TimezoneOffsetFromUTC (``+0100``) or a DT suffix as a fixed offset."""
    m = _OFFSET.match((value or "").strip())
    if not m:
        return None
    minutes = int(m[2]) * 60 + int(m[3])
    if minutes > 14 * 60:
        return None
    delta = timedelta(minutes=minutes)
    return timezone(-delta if m[1] == "-" else delta)


def _format(moment: datetime, fraction: str | None) -> str:
    out = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        out += "." + fraction
    offset = moment.utcoffset() or timedelta(0)
    if offset == timedelta(0) and moment.tzinfo is UTC:
        return out + "Z"
    total = int(offset.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"{out}{sign}{total // 60:02d}:{total % 60:02d}"


def _localise(naive: datetime, zone: tzinfo | None) -> datetime:
    """Attach ``zone``; None means the server's local time zone for that moment."""
    if zone is None:
        return naive.astimezone()  # local zone, daylight saving time included
    return naive.replace(tzinfo=zone)


def fhir_datetime(
    da: str | None, tm: str | None, offset: str | None, zone: tzinfo | None
) -> str | None:
    """FHIR dateTime from a DA + TM pair: a date alone if there is no (valid) time;
    with a time, the zone is TimezoneOffsetFromUTC if given, else ``zone`` (FHIR needs one
    whenever a time is given)."""
    d = parse_da(da)
    if d is None:
        return None
    m = _TM.match((tm or "").strip())
    if not m:
        return d.isoformat()
    try:
        naive = datetime(d.year, d.month, d.day, int(m[1]), int(m[2] or 0), int(m[3] or 0))
    except ValueError:
        return d.isoformat()
    tz = parse_offset(offset) or zone
    return _format(_localise(naive, tz), m[4] if m[3] else None)


def fhir_dt(value: str | None, offset: str | None, zone: tzinfo | None) -> str | None:
    """FHIR dateTime from a DICOM DT (``YYYYMMDDHHMMSS.FFFFFF&ZZXX``, any precision)."""
    m = _DT.match((value or "").strip())
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, suffix = m.groups()
    try:
        if month is None:
            return f"{int(year):04d}"
        if day is None:
            return date(int(year), int(month), 1).strftime("%Y-%m")
        d = date(int(year), int(month), int(day))
        if hour is None:
            return d.isoformat()
        naive = datetime(d.year, d.month, d.day, int(hour), int(minute or 0), int(second or 0))
    except ValueError:
        return None
    tz = parse_offset(suffix) or parse_offset(offset) or zone
    return _format(_localise(naive, tz), fraction if second else None)


def person_name(value: Any) -> JsonObject | None:
    """A DICOM PN (``Family^Given^Middle^Prefix^Suffix``, alphabetic group) as HumanName."""
    raw = str(value or "").split("=")[0].strip()
    if not raw:
        return None
    parts = [p.strip() for p in raw.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    out: JsonObject = {}
    if family:
        out["family"] = family
    names = [n for n in (*given.split(), *middle.split()) if n]
    if names:
        out["given"] = names
    if prefix:
        out["prefix"] = prefix.split()
    if suffix:
        out["suffix"] = suffix.split()
    out["text"] = " ".join(p for p in (prefix, given, middle, family, suffix) if p)
    return out


def name_display(value: Any) -> str | None:
    name = person_name(value)
    return str(name["text"]) if name and name.get("text") else None


def coding(scheme: str | None, code: str | None, meaning: str | None) -> JsonObject | None:
    """A Coding from a DICOM Code Sequence item (Coding Scheme Designator, value, meaning).

    A scheme FHIR has no URI for keeps its code and display without a system; SNOMED codes
    in the old SNOMED-RT form (``T-D1100``) get no system either (they are not SCTIDs)."""
    if not code:
        return None
    out: JsonObject = {}
    system = SCHEME_SYSTEMS.get((scheme or "").strip().upper())
    if system == codes.SNOMED and not code.isdigit():
        system = None
    if system:
        out["system"] = system
    out["code"] = code
    if meaning:
        out["display"] = meaning
    return out


def code_item(item: Dataset) -> JsonObject | None:
    """A Coding from a Code Sequence item (long and URN code values included)."""
    code = text(item, "CodeValue") or text(item, "LongCodeValue") or text(item, "URNCodeValue")
    return coding(text(item, "CodingSchemeDesignator"), code, text(item, "CodeMeaning"))


def concept(items: Any) -> JsonObject | None:
    """A CodeableConcept from a Code Sequence (each item a coding)."""
    codings = [c for c in (code_item(i) for i in (items or [])) if c]
    if not codings:
        return None
    return {"coding": codings}


def dicom_uid_identifier(uid: str) -> JsonObject:
    """``{"system": "urn:dicom:uid", "value": "urn:oid:<uid>"}`` (terminology.md §1)."""
    return {"system": codes.DICOM_UID, "value": f"urn:oid:{uid}"}


_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def is_uid(value: str) -> bool:
    """A DICOM UID (PS3.5 §9.1): digits and dots, no leading zeros, at most 64 characters."""
    return len(value) <= 64 and bool(_UID.match(value))
