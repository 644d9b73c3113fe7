"""Parsing FHIR references: ``Patient/1``, ``Patient/1/_history/2``, absolute URLs, canonicals."""

from __future__ import annotations

import re
from dataclasses import dataclass

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_REL = re.compile(
    r"^(?:(?P<base>https?://.+?)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<vid>[A-Za-z0-9\-.]{1,64}))?$"
)


@dataclass(frozen=True)
class ParsedReference:
    """A reference split into parts; ``url`` keeps anything that is not ``Type/id``."""

    type: str | None
    id: str | None
    version: str | None = None
    base: str | None = None
    url: str | None = None


def parse_reference(reference: str) -> ParsedReference:
    """Split a reference string; absolute URLs keep their base, others only ``url``."""
    text = reference.strip()
    m = _REL.match(text.split("|")[0])
    if m:
        base = m["base"]
        return ParsedReference(m["type"], m["id"], m["vid"], base, text if base else None)
    return ParsedReference(None, None, None, None, text)


def is_valid_id(value: str) -> bool:
    return bool(ID_RE.match(value))
