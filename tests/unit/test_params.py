"""Query string parsing: values, escaping, modifiers, errors."""

from __future__ import annotations

import pytest

from kyphofhir.errors import Invalid
from kyphofhir.search.params import DateValue, TokenValue, parse_query, split_values, unescape
from kyphofhir.search.registry import SearchRegistry

REGISTRY = SearchRegistry.default()


def test_split_and_unescape() -> None:
    assert split_values("a,b\\,c") == ["a", "b\\,c"]
    assert unescape("b\\,c\\|d\\$e\\\\f") == "b,c|d$e\\f"


def test_tokens() -> None:
    q = parse_query(REGISTRY, "Patient", [("identifier", "sys|1,|2,3,sys|")])
    assert q.clauses[0].values == (
        TokenValue("sys", "1"),
        TokenValue("", "2"),
        TokenValue(None, "3"),
        TokenValue("sys", None),
    )


def test_dates_and_prefixes() -> None:
    q = parse_query(REGISTRY, "Observation", [("date", "ge2024-03")])
    value = q.clauses[0].values[0]
    assert isinstance(value, DateValue) and value.prefix == "ge"


def test_count_is_capped_and_unknowns_collected() -> None:
    q = parse_query(REGISTRY, "Patient", [("_count", "5000"), ("bogus", "1")], max_count=1000)
    assert q.count == 1000
    assert q.unknown == ["bogus"]


@pytest.mark.parametrize(
    "item",
    [
        ("birthdate", "2024-99"),
        ("_count", "-1"),
        ("gender:exact", "x"),
        ("name", ""),
        ("_total", "all"),
    ],
)
def test_errors_name_the_parameter(item: tuple[str, str]) -> None:
    with pytest.raises(Invalid) as exc:
        parse_query(REGISTRY, "Patient", [item])
    assert exc.value.expression
