"""FHIR primitive types as they appear in the names of choice elements (``valueDateTime``)."""

from __future__ import annotations

PRIMITIVE_SUFFIXES = frozenset(
    {
        "Base64Binary",
        "Boolean",
        "Canonical",
        "Code",
        "Date",
        "DateTime",
        "Decimal",
        "Id",
        "Instant",
        "Integer",
        "Markdown",
        "Oid",
        "PositiveInt",
        "String",
        "Time",
        "UnsignedInt",
        "Uri",
        "Url",
        "Uuid",
    }
)


def choice_type(suffix: str) -> str:
    """The FHIR type named by a choice suffix: ``DateTime`` → ``dateTime``; complex types
    (``Quantity``) keep their name."""
    return suffix[0].lower() + suffix[1:] if suffix in PRIMITIVE_SUFFIXES else suffix
