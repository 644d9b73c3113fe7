"""FHIR date values as precision ranges."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kyphofhir.errors import Invalid
from kyphofhir.fhir.datetimes import format_instant, parse_range, parse_search_range


def _us(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1_000_000)


@pytest.mark.parametrize(
    ("value", "lo", "hi"),
    [
        ("2024", _us(2024, 1, 1), _us(2025, 1, 1) - 1),
        ("2024-02", _us(2024, 2, 1), _us(2024, 3, 1) - 1),  # leap year
        ("2023-02", _us(2023, 2, 1), _us(2023, 3, 1) - 1),
        ("2024-12-31", _us(2024, 12, 31), _us(2025, 1, 1) - 1),
        ("2024-03-05T10:00Z", _us(2024, 3, 5, 10), _us(2024, 3, 5, 10, 1) - 1),
        ("2024-03-05T10:00:00+02:00", _us(2024, 3, 5, 8), _us(2024, 3, 5, 8, 0, 1) - 1),
        ("2024-03-05T10:00:00.5Z", _us(2024, 3, 5, 10) + 500_000, _us(2024, 3, 5, 10) + 599_999),
        (
            "2024-03-05T10:00:00.123456Z",
            _us(2024, 3, 5, 10) + 123_456,
            _us(2024, 3, 5, 10) + 123_456,
        ),
    ],
)
def test_ranges(value: str, lo: int, hi: int) -> None:
    assert parse_range(value) == (lo, hi)


@pytest.mark.parametrize(
    "value",
    ["", "24", "2024-13", "2024-02-30", "2024-03-05T25:00Z", "yesterday", "2024-03-05T10:00:00+2"],
)
def test_bad_values(value: str) -> None:
    with pytest.raises((ValueError, OverflowError)):
        parse_range(value)
    with pytest.raises(Invalid) as exc:
        parse_search_range(value, "date")
    assert exc.value.expression == ("date",)


def test_format_instant_has_milliseconds_and_z() -> None:
    when = datetime(2024, 3, 5, 10, 0, 1, 123456, tzinfo=UTC)
    assert format_instant(when) == "2024-03-05T10:00:01.123Z"
