"""Timepoint windows: the shipped file, assignment at the borders (inclusive), checks."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from kyphofhir.study.timepoints import load_windows, parse_windows

INDEX = date(2008, 3, 10)


def _day(n: int) -> date:
    return INDEX + timedelta(days=n)


@pytest.fixture(scope="module")
def windows() -> Any:
    return load_windows()


@pytest.mark.parametrize("arm", ["bkp", "conservative"])
@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (-61, None),
        (-60, "baseline"),  # first day inclusive
        (0, "baseline"),  # the day of the intervention is still baseline
        (1, "post-intervention"),
        (14, "post-intervention"),  # last day inclusive
        (15, None),
        (59, None),
        (60, "month-3"),
        (90, "month-3"),
        (120, "month-3"),
        (121, None),
        (149, None),
        (150, "month-6"),
        (240, "month-6"),
        (241, None),
    ],
)
def test_assignment_at_the_window_borders(
    windows: Any, arm: str, day: int, expected: str | None
) -> None:
    assert windows.assign(arm, INDEX, _day(day)) == expected


def test_in_window_checks_a_given_timepoint(windows: Any) -> None:
    assert windows.in_window("bkp", "month-6", INDEX, _day(150))
    assert not windows.in_window("bkp", "month-6", INDEX, _day(149))


def _doc(**windows: Any) -> dict[str, Any]:
    base = {
        "baseline": {"from": -60, "to": 0},
        "post-intervention": {"from": 1, "to": 14},
        "month-3": {"from": 60, "to": 120},
        "month-6": {"from": 150, "to": 240},
    }
    return {"windows": {**base, **windows}}


def test_per_arm_override() -> None:
    doc = _doc()
    doc["arms"] = {"conservative": {"post-intervention": {"from": 1, "to": 30}}}
    w = parse_windows(doc)
    assert w.assign("conservative", INDEX, _day(30)) == "post-intervention"
    assert w.assign("bkp", INDEX, _day(30)) is None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc(**{"month-3": {"from": 10, "to": 120}}), "overlap"),
        (_doc(**{"month-3": {"from": 120, "to": 60}}), "from"),
        (_doc(**{"month-3": {"from": 60.5, "to": 120}}), "integer"),
        ({"windows": {"baseline": {"from": -60, "to": 0}}}, "exactly the timepoints"),
        (_doc(**{"month-12": {"from": 300, "to": 400}}), "exactly the timepoints"),
        ({**_doc(), "arms": {"placebo": {}}}, "arms"),
        ({**_doc(), "unit": "week"}, "unit"),
        ([], "windows"),
    ],
)
def test_bad_files_are_rejected_with_the_reason(doc: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_windows(doc)
