"""The study table: the shipped column spec, reading CSV/NDJSON with line numbers, row checks."""

from __future__ import annotations

import io
from datetime import date
from typing import Any

import pytest

from kyphofhir.errors import Invalid
from kyphofhir.study import demo
from kyphofhir.study.table import (
    RowError,
    SubjectInfo,
    SubjectRow,
    VertebraRow,
    VisitRow,
    check_odi,
    check_subject,
    check_vertebra,
    load_spec,
    parse_row,
    read_rows,
    resolve_timepoint,
)
from kyphofhir.study.timepoints import default_mappings_dir, load_windows

SPEC = load_spec()
WINDOWS = load_windows()
SUBJECT = SubjectInfo("S1", "bkp", date(1945, 2, 3), date(2008, 1, 10))


def rows(data: bytes, fmt: str = "csv") -> list[tuple[int, Any]]:
    return list(read_rows(io.BytesIO(data), fmt, known=SPEC.columns))


def parse(**raw: Any) -> Any:
    return parse_row(SPEC, 7, raw)


def error(**raw: Any) -> RowError:
    with pytest.raises(RowError) as info:
        parse(**raw)
    assert info.value.line == 7
    return info.value


def test_the_demo_generator_writes_only_documented_columns() -> None:
    assert set(demo.COLUMNS) <= set(SPEC.columns)


def test_csv_line_numbers_count_physical_lines() -> None:
    data = (
        b"\xef\xbb\xbfrecord,subject_id,level\n"  # BOM from spreadsheet programs
        b"vertebra,S1,T12\n"
        b"\n"
        b'vertebra,"S\n2",L1\n'  # a quoted line break: the record starts on line 4
        b"vertebra,S3,L2\n"
        b"vertebra,S4,L3,extra\n"
    )
    got = rows(data)
    assert [line for line, _ in got] == [2, 4, 6, 7]
    assert got[0][1] == {"record": "vertebra", "subject_id": "S1", "level": "T12"}
    assert isinstance(got[3][1], RowError) and "4 values for 3 columns" in got[3][1].reason


def test_csv_with_semicolons_and_short_rows() -> None:
    got = rows(b"record;subject_id;level;treated\nvertebra;S1;T12\n")
    assert got == [(2, {"record": "vertebra", "subject_id": "S1", "level": "T12"})]


@pytest.mark.parametrize(
    "header", [b"record,subject_id,vass\n", b"record,record,subject_id\n", b"subject_id,arm\n"]
)
def test_bad_csv_header_rejects_the_file(header: bytes) -> None:
    with pytest.raises(Invalid) as info:
        rows(header + b"subject,S1\n")
    assert info.value.expression == ("line 1",)


def test_ndjson_lines_and_progress() -> None:
    seen: list[int] = []
    data = b'{"record":"vertebra","subject_id":"S1","level":"T12"}\n\n[1]\n{bad\n'
    got = list(read_rows(io.BytesIO(data), "ndjson", progress=seen.append))
    assert [line for line, _ in got] == [1, 3, 4]
    assert all(isinstance(r, RowError) for _, r in got[1:])
    assert sum(seen) == len(data)


def test_subject_row() -> None:
    row = parse(
        record="subject",
        subject_id="S1",
        arm="bkp",
        sex="female",
        birth_date="1945-02-03",
        enrolled="2008-01-02",
        index_date="2008-01-10",
        myeloma_diagnosed="",
    )
    assert row == SubjectRow(
        7, "S1", "bkp", "female", date(1945, 2, 3), date(2008, 1, 2), date(2008, 1, 10)
    )
    check_subject(row)


@pytest.mark.parametrize(
    ("raw", "column", "reason"),
    [
        ({"record": "patient"}, "record", "unknown value 'patient'"),
        ({"record": "subject", "arm": "bkp"}, "sex", "required in subject rows"),
        ({"record": "visit", "date": "2008-01-09", "level": "T12"}, "level", "does not apply"),
        ({"record": "visit", "date": "09.01.2008"}, "date", "not a date YYYY-MM-DD"),
        ({"record": "visit", "date": "2008-02-30"}, "date", "not a valid date"),
        ({"record": "visit", "date": "2008-01-09", "vas": "a lot"}, "vas", "not a number"),
        ({"record": "visit", "date": "2008-01-09", "vas": "nan"}, "vas", "not a number"),
        ({"record": "visit", "date": "2008-01-09", "vas": 101}, "vas", "outside 0..100 mm"),
        (
            {"record": "visit", "date": "2008-01-09", "vas": 11, "vas_unit": "cm"},
            "vas",
            "vas 11 cm is outside",
        ),
        ({"record": "visit", "date": "2008-01-09", "vas_unit": "cm"}, "vas_unit", "without"),
        ({"record": "visit", "date": "2008-01-09", "odi": -1}, "odi", "outside 0..100"),
        ({"record": "visit", "date": "2008-01-09", "odi_3": "2.5"}, "odi_3", "whole number"),
        ({"record": "vertebra", "level": "C7"}, "level", "unknown value 'C7'"),
        ({"record": "vertebra", "level": "L1", "treated": "maybe"}, "treated", "true or false"),
        ({"record": "vertebra", "level": "L1", "vbh_middle": 9}, "date", "need the date"),
        (
            {"record": "vertebra", "level": "L1", "date": "2008-01-09", "vbh_middle": 0},
            "vbh_middle",
            "outside >0..80 mm",
        ),
        (
            {"record": "vertebra", "level": "L1", "date": "2008-01-09", "kyphosis_angle": 90},
            "kyphosis_angle",
            "outside >-90..<90 deg",
        ),
        ({"record": "vertebra", "level": "L1", "cpt": "22513"}, "treated", "need treated"),
        ({"record": "vertebra", "level": "L1", "colour": "red"}, "colour", "unknown column"),
        ({"record": "vertebra", "level": ["L1"]}, "level", "not text"),
    ],
)
def test_row_errors_name_column_and_reason(raw: dict[str, Any], column: str, reason: str) -> None:
    err = error(subject_id="S1", **raw)
    assert err.column == column
    assert reason in err.reason


def test_visit_row_vas_units_and_typed_json_values() -> None:
    row = parse(record="visit", subject_id="S1", date="2008-01-09", vas=0.7, vas_unit="cm")
    assert isinstance(row, VisitRow) and row.vas_mm == 7  # exact, not 7.000000000000001
    row = parse(record="visit", subject_id="S1", date="2008-01-09", vas="6.5", vas_unit="{score}")
    assert row.vas_mm == 65
    row = parse(record="visit", subject_id="S1", date="2008-01-09", odi_1=3, odi_10="")
    assert row.odi_items == (3, *([None] * 9))


def test_vertebra_row() -> None:
    row = parse(
        record="vertebra",
        subject_id="S1",
        level="T12",
        treated=True,
        date="2008-01-09",
        vbh_anterior="14.5",
        kyphosis_angle=-3,
        cpt="22513 22515",
        ops="5-839.a0",
    )
    assert isinstance(row, VertebraRow)
    assert row.heights == {"vbh-anterior": 14.5} and row.kyphosis_angle == -3
    assert [c["code"] for c in row.procedure_codings] == ["22513", "22515", "5-839.a0"]
    check_vertebra(row, SUBJECT)
    conservative = SubjectInfo("C1", "conservative", date(1945, 2, 3), date(2008, 1, 10))
    with pytest.raises(RowError, match="conservative arm"):
        check_vertebra(row, conservative)


def test_subject_dates_not_before_birth() -> None:
    row = SubjectRow(3, "S1", "bkp", "male", date(2000, 1, 1), date(1999, 1, 1), date(2008, 1, 1))
    with pytest.raises(RowError) as info:
        check_subject(row)
    assert info.value.column == "enrolled"


def test_timepoint_from_date_given_and_outside_its_window() -> None:
    assert resolve_timepoint(3, None, date(2008, 1, 10), SUBJECT, WINDOWS) == ("baseline", None)
    assert resolve_timepoint(3, None, date(2008, 1, 11), SUBJECT, WINDOWS)[0] == "post-intervention"
    tp, warning = resolve_timepoint(3, "month-3", date(2008, 2, 1), SUBJECT, WINDOWS)
    assert tp == "month-3" and warning and "outside the month-3 window (60..120)" in warning
    with pytest.raises(RowError, match="day 40"):
        resolve_timepoint(3, None, date(2008, 2, 19), SUBJECT, WINDOWS)
    with pytest.raises(RowError, match="before the subject's birth"):
        resolve_timepoint(3, "baseline", date(1940, 1, 1), SUBJECT, WINDOWS)


def test_odi_total_must_agree_with_the_items() -> None:
    items = (3, 2, 4, 3, 2, 3, 2, None, 3, 2)  # 24 of 45 -> 53.3 %
    ok = VisitRow(3, "S1", None, date(2008, 1, 9), odi=53.3, odi_items=items)
    score = check_odi(ok, max_missing=1)
    assert score is not None and score.percent == pytest.approx(53.33, abs=0.01)
    with pytest.raises(RowError, match="53.3 %"):
        check_odi(VisitRow(3, "S1", None, date(2008, 1, 9), odi=60, odi_items=items), 1)
    with pytest.raises(RowError, match="no score"):
        check_odi(VisitRow(3, "S1", None, date(2008, 1, 9), odi=50, odi_items=items), 0)


def test_the_readme_documents_every_column() -> None:
    readme = (default_mappings_dir() / "README.md").read_text(encoding="utf-8")
    for name in SPEC.columns:
        if name.startswith("odi_"):
            continue  # listed as odi_1 ... odi_10
        assert f"`{name}`" in readme, name
    assert "`odi_1` … `odi_10`" in readme
