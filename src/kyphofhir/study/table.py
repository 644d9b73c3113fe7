"""The study table (``mappings/study-table.json``): reading CSV/NDJSON rows and checking them.

Pure apart from reading the spec file: rows come from a binary stream one at a time (so a
file of any size is read in constant memory), and every problem with a row becomes a
:class:`RowError` with its line number and column, never an exception that stops the
import. A problem with the file as a whole (an unknown CSV column) is :class:`Invalid`.

Two stages: :func:`parse_row` checks one row on its own (types, ranges, which columns a
record kind takes); :func:`check_subject`, :func:`resolve_visit` and :func:`check_vertebra`
check it against its subject (dates not before birth, timepoint from the windows, arm).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from kyphofhir.errors import Invalid
from kyphofhir.study import codes
from kyphofhir.study.odi import OdiScore
from kyphofhir.study.timepoints import Windows, default_mappings_dir

FILE_NAME = "study-table.json"
RECORDS = ("subject", "visit", "vertebra")
ODI_ITEM_COLUMNS = tuple(f"odi_{n}" for n in range(1, len(codes.ODI_SECTIONS) + 1))
HEIGHT_COLUMNS = {f"vbh_{p}": f"vbh-{p}" for p in ("anterior", "middle", "posterior")}
ODI_TOLERANCE = 0.5
"""How far a given ``odi`` total may be from the score of the given items (in %):
exports round the score for display (35.6, or 36), never by more than half a point."""

Value = Any


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required_for: frozenset[str]
    optional_for: frozenset[str]
    values: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_min: bool = False
    exclusive_max: bool = False
    factor: Mapping[str, int] = field(default_factory=dict)
    default: str | None = None
    unit: str | None = None

    def applies_to(self, record: str) -> bool:
        return record in self.required_for or record in self.optional_for


@dataclass(frozen=True)
class TableSpec:
    columns: dict[str, Column]

    def range_text(self, name: str) -> str:
        c = self.columns[name]
        low = f">{c.minimum:g}" if c.exclusive_min else f"{c.minimum:g}"
        high = f"<{c.maximum:g}" if c.exclusive_max else f"{c.maximum:g}"
        return f"{low}..{high}{' ' + c.unit if c.unit else ''}"


_TYPES = ("string", "code", "date", "decimal", "integer", "boolean")


def parse_spec(doc: Any, source: str = FILE_NAME) -> TableSpec:
    """Check and read the column document; ValueError naming the problem."""
    if not isinstance(doc, dict) or not isinstance(doc.get("columns"), list):
        raise ValueError(f"{source}: an object with a 'columns' list is required")
    columns: dict[str, Column] = {}
    for raw in doc["columns"]:
        name = raw.get("name")
        if not isinstance(name, str) or name in columns or raw.get("type") not in _TYPES:
            raise ValueError(f"{source}: column {name!r}: unique name and known type required")
        records = set(raw.get("required_for", ())) | set(raw.get("optional_for", ()))
        if not records <= set(RECORDS):
            raise ValueError(f"{source}: column {name}: unknown record kind")
        rng = raw.get("range") or {}
        columns[name] = Column(
            name=name,
            type=raw["type"],
            required_for=frozenset(raw.get("required_for", ())),
            optional_for=frozenset(raw.get("optional_for", ())),
            values=tuple(raw.get("values", ())),
            pattern=re.compile(raw["pattern"]) if raw.get("pattern") else None,
            minimum=rng.get("min"),
            maximum=rng.get("max"),
            exclusive_min=bool(rng.get("exclusive_min")),
            exclusive_max=bool(rng.get("exclusive_max")),
            factor=dict(raw.get("factor") or {}),
            default=raw.get("default"),
            unit=raw.get("unit"),
        )
    needed = {"record", "subject_id", *ODI_ITEM_COLUMNS, *HEIGHT_COLUMNS}
    needed |= {"arm", "sex", "birth_date", "enrolled", "index_date", "timepoint", "date"}
    needed |= {"vas", "vas_unit", "odi", "level", "treated", "kyphosis_angle"}
    if missing := needed - set(columns):
        raise ValueError(f"{source}: columns missing: {sorted(missing)}")
    return TableSpec(columns)


def load_spec(mappings_dir: Path | None = None) -> TableSpec:
    path = (mappings_dir or default_mappings_dir()) / FILE_NAME
    with path.open(encoding="utf-8") as fh:
        return parse_spec(json.load(fh), str(path))


# --- rows -----------------------------------------------------------------------------


class RowError(Exception):
    """A row that cannot be imported: line number (1-based), column, reason."""

    def __init__(self, line: int, column: str | None, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.column = column
        self.reason = reason


@dataclass(frozen=True)
class SubjectRow:
    line: int
    subject_id: str
    arm: str
    sex: str
    birth_date: date
    enrolled: date
    index_date: date
    myeloma_diagnosed: date | None = None
    ended: date | None = None


@dataclass(frozen=True)
class VisitRow:
    line: int
    subject_id: str
    timepoint: str | None
    date: date
    vas_mm: float | None = None
    odi: float | None = None
    odi_items: tuple[int | None, ...] | None = None  # None: no item given


@dataclass(frozen=True)
class VertebraRow:
    line: int
    subject_id: str
    level: str
    treated: bool | None
    timepoint: str | None = None
    date: date | None = None
    heights: dict[str, float] = field(default_factory=dict)  # measure code -> mm
    kyphosis_angle: float | None = None
    procedure_codings: tuple[dict[str, Any], ...] = ()

    @property
    def has_measurements(self) -> bool:
        return bool(self.heights) or self.kyphosis_angle is not None


Row = SubjectRow | VisitRow | VertebraRow


def _empty(value: Value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: Value) -> float | int:
    """int when integral (so ``72`` stays ``72``), else float; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError from None
    if not d.is_finite():
        raise ValueError
    return int(d) if d == d.to_integral_value() else float(d)


def _coerce(col: Column, value: Value, line: int) -> Value:
    """The typed value of a non-empty cell; RowError with the reason."""

    def bad(what: str) -> RowError:
        return RowError(line, col.name, f"{col.name}: {value!r} is not {what}")

    if col.type in ("string", "code", "date"):
        if not isinstance(value, str):
            raise bad("text")
        text = value.strip()
        if col.type == "code":
            if text not in col.values:
                raise RowError(
                    line,
                    col.name,
                    f"{col.name}: unknown value {text!r} (expected one of {', '.join(col.values)})",
                )
            return text
        if col.type == "date":
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
                raise bad("a date YYYY-MM-DD")
            try:
                return date.fromisoformat(text)
            except ValueError:
                raise bad("a valid date") from None
        if col.pattern and not col.pattern.fullmatch(text):
            raise bad(f"valid (pattern {col.pattern.pattern})")
        return text
    if col.type == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1"):
            return True
        if text in ("false", "no", "0"):
            return False
        raise bad("true or false")
    try:
        number = _number(value)
    except ValueError:
        raise bad("a number") from None
    if col.type == "integer" and not isinstance(number, int):
        raise bad("a whole number")
    return number


def _check_range(spec: TableSpec, name: str, value: float, line: int, shown: Value) -> None:
    col = spec.columns[name]
    low_ok = col.minimum is None or (
        value > col.minimum if col.exclusive_min else value >= col.minimum
    )
    high_ok = col.maximum is None or (
        value < col.maximum if col.exclusive_max else value <= col.maximum
    )
    if not (low_ok and high_ok):
        raise RowError(line, name, f"{name} {shown} is outside {spec.range_text(name)}")


def parse_row(spec: TableSpec, line: int, raw: Mapping[str, Value]) -> Row:
    """Check one row on its own and return it typed; :class:`RowError` if it is bad."""
    if unknown := [k for k in raw if k not in spec.columns]:
        raise RowError(line, unknown[0], f"unknown column(s): {', '.join(map(str, unknown))}")
    record_raw = raw.get("record")
    if _empty(record_raw):
        raise RowError(line, "record", "record is required (subject, visit or vertebra)")
    record = _coerce(spec.columns["record"], record_raw, line)
    values: dict[str, Value] = {}
    for name, col in spec.columns.items():
        value = raw.get(name)
        if name == "record":
            continue
        if _empty(value):
            if record in col.required_for:
                raise RowError(line, name, f"{name} is required in {record} rows")
            continue
        if not col.applies_to(record):
            raise RowError(line, name, f"{name} does not apply to {record} rows")
        values[name] = _coerce(col, value, line)
    for name in spec.columns:
        col = spec.columns[name]
        if name in values and col.type in ("decimal", "integer") and name != "vas":
            _check_range(spec, name, values[name], line, values[name])
    if record == "subject":
        return _subject_row(line, values)
    if record == "visit":
        return _visit_row(spec, line, values)
    return _vertebra_row(line, values)


def _subject_row(line: int, v: dict[str, Value]) -> SubjectRow:
    return SubjectRow(
        line,
        v["subject_id"],
        v["arm"],
        v["sex"],
        v["birth_date"],
        v["enrolled"],
        v["index_date"],
        v.get("myeloma_diagnosed"),
        v.get("ended"),
    )


def _visit_row(spec: TableSpec, line: int, v: dict[str, Value]) -> VisitRow:
    vas_mm = None
    if "vas" in v:
        unit = v.get("vas_unit") or spec.columns["vas_unit"].default or "mm"
        factor = spec.columns["vas_unit"].factor.get(unit, 1)
        vas_mm = _number(Decimal(str(v["vas"])) * factor)
        _check_range(spec, "vas", vas_mm, line, f"{v['vas']} {unit}")
    elif "vas_unit" in v:
        raise RowError(line, "vas_unit", "vas_unit without vas")
    items = None
    if any(c in v for c in ODI_ITEM_COLUMNS):
        items = tuple(v.get(c) for c in ODI_ITEM_COLUMNS)
    return VisitRow(
        line, v["subject_id"], v.get("timepoint"), v["date"], vas_mm, v.get("odi"), items
    )


def _vertebra_row(line: int, v: dict[str, Value]) -> VertebraRow:
    heights = {code: float(v[col]) for col, code in HEIGHT_COLUMNS.items() if col in v}
    angle = v.get("kyphosis_angle")
    has_measurements = bool(heights) or angle is not None
    if has_measurements and "date" not in v:
        raise RowError(line, "date", "measurements need the date of the radiograph")
    if "timepoint" in v and "date" not in v:
        raise RowError(line, "date", "a timepoint needs a date")
    codings: list[dict[str, Any]] = []
    for col, system in (("cpt", codes.CPT), ("ops", codes.OPS)):
        codings.extend(codes.coding(system, c) for c in str(v.get(col, "")).split())
    if codings and v.get("treated") is not True:
        raise RowError(line, "treated", "procedure codes (cpt, ops) need treated = true")
    return VertebraRow(
        line,
        v["subject_id"],
        v["level"],
        v.get("treated"),
        v.get("timepoint"),
        v.get("date"),
        heights,
        None if angle is None else float(angle),
        tuple(codings),
    )


# --- checks against the subject ---------------------------------------------------------


@dataclass(frozen=True)
class SubjectInfo:
    """What later rows are checked against: from a subject row or the store."""

    subject_id: str
    arm: str
    birth_date: date
    index_date: date


def check_subject(row: SubjectRow) -> None:
    for name in ("enrolled", "index_date", "myeloma_diagnosed", "ended"):
        when = getattr(row, name)
        if when is not None and when < row.birth_date:
            raise RowError(row.line, name, f"{name} {when} is before birth_date {row.birth_date}")
    if row.ended is not None and row.ended < row.enrolled:
        raise RowError(row.line, "ended", f"ended {row.ended} is before enrolled {row.enrolled}")


def _not_before_birth(line: int, when: date, subject: SubjectInfo) -> None:
    if when < subject.birth_date:
        raise RowError(
            line, "date", f"date {when} is before the subject's birth date {subject.birth_date}"
        )


def resolve_timepoint(
    line: int, timepoint: str | None, when: date, subject: SubjectInfo, windows: Windows
) -> tuple[str, str | None]:
    """The row's timepoint (given, or assigned from the date) and a warning if a given
    timepoint's window does not hold the date (kept: the table's statement wins)."""
    _not_before_birth(line, when, subject)
    day = (when - subject.index_date).days
    if timepoint is None:
        assigned = windows.assign(subject.arm, subject.index_date, when)
        if assigned is None:
            raise RowError(
                line,
                "date",
                f"date {when} (day {day} from the index date {subject.index_date}) is in "
                "no timepoint window; give the timepoint",
            )
        return assigned, None
    if windows.in_window(subject.arm, timepoint, subject.index_date, when):
        return timepoint, None
    w = windows.window(subject.arm, timepoint)
    return timepoint, (
        f"date {when} is day {day} from the index date, outside the {timepoint} window "
        f"({w.start}..{w.end}); imported as {timepoint}"
    )


def check_odi(row: VisitRow, max_missing: int) -> OdiScore | None:
    """The score of the given items (None without items); a given total must agree."""
    if row.odi_items is None:
        return None
    levels = {
        s: level
        for s, level in zip(codes.ODI_SECTIONS, row.odi_items, strict=True)
        if level is not None
    }
    score = OdiScore(levels, max_missing)
    if row.odi is not None:
        computed = score.percent
        if computed is None or abs(computed - row.odi) > ODI_TOLERANCE:
            shown = "no score" if computed is None else f"{computed:.1f} %"
            raise RowError(
                row.line,
                "odi",
                f"odi {row.odi} does not match the score of odi_1..odi_10 ({shown})",
            )
    return score


def check_vertebra(row: VertebraRow, subject: SubjectInfo) -> None:
    if row.treated and subject.arm != "bkp":
        raise RowError(
            row.line, "treated", f"treated vertebra in the {subject.arm} arm (only bkp treats)"
        )


# --- reading ----------------------------------------------------------------------------

Progress = Callable[[int], None]
"""Called with the number of bytes just consumed."""


class _Counting(io.RawIOBase):
    """A binary stream that reports how many bytes were read (for a progress bar)."""

    def __init__(self, inner: IO[bytes], progress: Progress | None) -> None:
        self._inner = inner
        self._progress = progress

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if self._progress and n:
            self._progress(n)
        return n


RawRow = tuple[int, Mapping[str, Value] | RowError]


def read_rows(
    stream: IO[bytes],
    fmt: str,
    *,
    known: Collection[str] | None = None,
    progress: Progress | None = None,
) -> Iterator[RawRow]:
    """``(line, row dict)`` per data row, or ``(line, RowError)`` for an unreadable one.

    ``fmt`` is ``csv`` or ``ndjson``. :class:`Invalid` for an unusable CSV header: one
    naming a column not in ``known`` (a misspelt column would otherwise be dropped from
    every row); in NDJSON an unknown key is the row's error (see :func:`parse_row`).
    """
    buffered: IO[bytes] = io.BufferedReader(_Counting(stream, progress), buffer_size=64 * 1024)
    if fmt == "csv":
        return _read_csv(buffered, known)
    if fmt in ("ndjson", "json"):
        return _read_ndjson(buffered)
    raise Invalid(f"Unknown table format {fmt!r}: csv or ndjson.")


def _read_csv(buffered: IO[bytes], known: Collection[str] | None) -> Iterator[RawRow]:
    text = io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")
    first = text.readline()
    if not first.strip():
        return
    delimiter = ";" if first.count(";") > first.count(",") else ","
    header = [h.strip() for h in next(csv.reader([first], delimiter=delimiter))]
    if len(set(header)) != len(header):
        raise Invalid("The CSV header names a column twice.", expression=["line 1"])
    if known is not None and (unknown := [h for h in header if h not in known]):
        raise Invalid(
            f"Unknown column(s) in the CSV header: {', '.join(unknown)} "
            "(the columns are listed in mappings/study-table.json).",
            expression=["line 1"],
        )
    for required in ("record", "subject_id"):
        if required not in header:
            raise Invalid(f"The CSV header has no {required!r} column.", expression=["line 1"])
    reader = csv.reader(text, delimiter=delimiter)
    line = 1  # the last physical line read so far
    while True:
        start = line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a NUL byte: report the record, go on
            line = reader.line_num + 1
            yield start, RowError(start, None, f"unreadable CSV: {exc}")
            continue
        except UnicodeDecodeError:
            yield start, RowError(start, None, "the file is not UTF-8 text; import stopped")
            return
        line = reader.line_num + 1
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            yield start, RowError(start, None, f"{len(cells)} values for {len(header)} columns")
            continue
        yield start, dict(zip(header, cells, strict=False))


def _read_ndjson(buffered: IO[bytes]) -> Iterator[RawRow]:
    for number, raw in enumerate(buffered, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            yield number, RowError(number, None, f"not a JSON object: {exc}")
            continue
        if not isinstance(obj, dict):
            yield number, RowError(number, None, "not a JSON object")
            continue
        yield number, obj
