"""Protocol timepoint windows (``mappings/timepoints.json``) and assigning a date to one.

A window is a range of whole days relative to the subject's index date (the kyphoplasty in
the BKP arm, fracture diagnosis or enrolment in the conservative arm), **inclusive at both
ends**: with baseline ``-60..0`` and post-intervention ``1..14``, day 0 is baseline and
day 1 is post-intervention. Windows of one arm may not overlap, so a date has at most one
timepoint; a date in none (a gap, or too late) has none and the caller reports it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from kyphofhir.study import codes

FILE_NAME = "timepoints.json"


def default_mappings_dir() -> Path:
    """The repository's ``mappings/`` folder (``Settings.mappings_path`` can override)."""
    return Path(__file__).resolve().parents[3] / "mappings"


@dataclass(frozen=True)
class Window:
    timepoint: str
    start: int  # first day, inclusive
    end: int  # last day, inclusive

    def contains(self, day: int) -> bool:
        return self.start <= day <= self.end


@dataclass(frozen=True)
class Windows:
    """The windows of each arm, in protocol order."""

    by_arm: dict[str, tuple[Window, ...]]

    def of(self, arm: str) -> tuple[Window, ...]:
        return self.by_arm[arm]

    def window(self, arm: str, timepoint: str) -> Window:
        return next(w for w in self.by_arm[arm] if w.timepoint == timepoint)

    def assign(self, arm: str, index_date: date, when: date) -> str | None:
        """The timepoint whose window holds ``when``, or None if no window does."""
        day = (when - index_date).days
        for w in self.by_arm[arm]:
            if w.contains(day):
                return w.timepoint
        return None

    def in_window(self, arm: str, timepoint: str, index_date: date, when: date) -> bool:
        return self.window(arm, timepoint).contains((when - index_date).days)

    def to_json(self) -> dict[str, Any]:
        return {
            arm: {w.timepoint: {"from": w.start, "to": w.end} for w in ws}
            for arm, ws in self.by_arm.items()
        }


def parse_windows(doc: Any, source: str = FILE_NAME) -> Windows:
    """Check and read the JSON document; ValueError naming the problem."""
    if not isinstance(doc, dict) or not isinstance(doc.get("windows"), dict):
        raise ValueError(f"{source}: an object with 'windows' is required")
    if doc.get("unit", "day") != "day" or doc.get("origin", "index_date") != "index_date":
        raise ValueError(f"{source}: only unit 'day' from origin 'index_date' is supported")
    default = _windows(doc["windows"], f"{source}: windows")
    arms = doc.get("arms") or {}
    if not isinstance(arms, dict) or not set(arms) <= set(codes.ARMS):
        raise ValueError(f"{source}: arms must be a subset of {sorted(codes.ARMS)}")
    by_arm: dict[str, tuple[Window, ...]] = {}
    for arm in codes.ARMS:
        override = arms.get(arm) or {}
        merged = {**doc["windows"], **override}
        by_arm[arm] = _windows(merged, f"{source}: arms.{arm}") if override else default
    return Windows(by_arm)


def _windows(raw: Any, where: str) -> tuple[Window, ...]:
    if not isinstance(raw, dict) or set(raw) != set(codes.TIMEPOINTS):
        raise ValueError(f"{where}: exactly the timepoints {list(codes.TIMEPOINTS)} are needed")
    out = []
    for tp in codes.TIMEPOINTS:  # protocol order
        spec = raw[tp]
        start, end = (spec.get("from"), spec.get("to")) if isinstance(spec, dict) else (None, None)
        if not isinstance(start, int) or not isinstance(end, int) or start > end:
            raise ValueError(f"{where}.{tp}: integer 'from' <= 'to' required")
        out.append(Window(tp, start, end))
    ordered = sorted(out, key=lambda w: w.start)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.start <= a.end:
            raise ValueError(f"{where}: {a.timepoint} and {b.timepoint} overlap")
    return tuple(out)


def load_windows(mappings_dir: Path | None = None) -> Windows:
    path = (mappings_dir or default_mappings_dir()) / FILE_NAME
    with path.open(encoding="utf-8") as fh:
        return parse_windows(json.load(fh), str(path))
