"""The synthetic demo cohort (``kyphofhir.study.demo``): published shape, plausibility, and
the published significance pattern, checked with scipy on the generated data.

Every check runs for the default seed and four others, so that a pattern that holds is
the generator's doing and not the luck of one seed. Pairing: VAS and ODI per patient
(the patients who have both visits), heights and angles per vertebra (the fractures
measured at both timepoints). Wilcoxon signed-rank test, two-sided, within one arm.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter
from collections.abc import Callable
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import wilcoxon

from kyphofhir.study import codes, demo, table
from kyphofhir.study.timepoints import load_windows

SEEDS = (demo.DEFAULT_SEED, 1, 7, 42, 31337)
MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


@cache
def cohort(seed: int) -> tuple[demo.Row, ...]:
    return tuple(demo.generate(seed))


class Study:
    """The rows of one seed, indexed for pairing."""

    def __init__(self, seed: int) -> None:
        self.rows = cohort(seed)
        self.subjects = {r["subject_id"]: r for r in self.rows if r["record"] == "subject"}
        self.visits = {
            (r["subject_id"], r["timepoint"]): r for r in self.rows if r["record"] == "visit"
        }
        self.fractures = [r for r in self.rows if r["record"] == "vertebra" and not r.get("date")]
        self.measures = {
            (r["subject_id"], r["level"], r["timepoint"]): r
            for r in self.rows
            if r["record"] == "vertebra" and r.get("date")
        }

    def arm(self, subject_id: Any) -> str:
        return str(self.subjects[subject_id]["arm"])

    def per_patient(
        self, arm: str, a: str, b: str, value: Callable[[demo.Row], float]
    ) -> tuple[list[float], list[float]]:
        ids = [
            s
            for s in self.subjects
            if self.arm(s) == arm and (s, a) in self.visits and (s, b) in self.visits
        ]
        return [value(self.visits[s, a]) for s in ids], [value(self.visits[s, b]) for s in ids]

    def per_vertebra(
        self, arm: str, a: str, b: str, column: str
    ) -> tuple[list[float], list[float]]:
        keys = [
            (s, lv)
            for (s, lv, tp) in self.measures
            if tp == a and self.arm(s) == arm and (s, lv, b) in self.measures
        ]
        return (
            [num(self.measures[s, lv, a], column) for s, lv in keys],
            [num(self.measures[s, lv, b], column) for s, lv in keys],
        )


@cache
def study(seed: int) -> Study:
    return Study(seed)


def num(row: demo.Row, column: str) -> float:
    value = row[column]
    assert isinstance(value, int | float) and not isinstance(value, bool), (column, row)
    return float(value)


def vas(row: demo.Row) -> float:
    return num(row, "vas")


def odi(row: demo.Row) -> float:
    score = demo.odi_percent([row[c] for c in demo.ODI_ITEMS])
    assert score is not None
    return score


def signed_rank(before: list[float], after: list[float]) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank p-value and the median paired change."""
    assert len(before) == len(after) > 0
    result = wilcoxon(before, after)
    change = statistics.median(b - a for a, b in zip(before, after, strict=True))
    return float(result.pvalue), change


# --------------------------------------------------------------------------- the shape


@pytest.mark.parametrize("seed", SEEDS)
def test_published_counts_exactly(seed: int) -> None:
    """Patients per arm and sex, fractures per arm, and the month-6 follow-up (patients
    with a month-6 visit, vertebrae measured at month 6) as in the abstract."""
    st = study(seed)
    by_arm_sex = Counter((r["arm"], r["sex"]) for r in st.subjects.values())
    assert by_arm_sex == {
        ("bkp", "male"): 52,
        ("bkp", "female"): 33,
        ("conservative", "male"): 29,
        ("conservative", "female"): 19,
    }
    assert Counter(st.arm(f["subject_id"]) for f in st.fractures) == {
        "bkp": 206,
        "conservative": 80,
    }
    month6 = Counter(st.arm(s) for (s, tp) in st.visits if tp == "month-6")
    assert month6 == {"bkp": 82, "conservative": 43}
    month6_vertebrae = Counter(st.arm(s) for (s, _lv, tp) in st.measures if tp == "month-6")
    assert month6_vertebrae == {"bkp": 199, "conservative": 68}
    # every fracture is treated in the BKP arm and none in the conservative one
    assert {(st.arm(f["subject_id"]), f["treated"]) for f in st.fractures} == {
        ("bkp", True),
        ("conservative", False),
    }


@pytest.mark.parametrize("seed", SEEDS)
def test_timepoints_of_completers_and_dropouts(seed: int) -> None:
    """Completers have all four visits with every fracture measured at each; the patients
    lost before month 6 have baseline, post-intervention and month 3, nothing later."""
    st = study(seed)
    levels: dict[Any, set[Any]] = {}
    for f in st.fractures:
        levels.setdefault(f["subject_id"], set()).add(f["level"])
    for sid in st.subjects:
        tps = [tp for (s, tp) in st.visits if s == sid]
        expected = (
            demo.TIMEPOINT_ORDER if (sid, "month-6") in st.visits else demo.DROPOUT_TIMEPOINTS
        )
        assert tps == list(expected)
        for tp in tps:
            measured = {lv for (s, lv, t) in st.measures if s == sid and t == tp}
            assert measured == levels[sid], (sid, tp)
    assert {lv for (s, lv, _tp) in st.measures if lv not in levels[s]} == set()


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    assert demo.generate(5) == demo.generate(5)
    assert demo.generate(5) != demo.generate(6)
    assert list(cohort(demo.DEFAULT_SEED)) == demo.generate()


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
@pytest.mark.parametrize("seed", SEEDS)
def test_the_import_reader_accepts_every_row(seed: int, fmt: str) -> None:
    """Read back through the importer's own reader and checks (``study.table``, columns of
    mappings/study-table.json): no row error, no timepoint-window warning, every ODI
    questionnaire scorable, every subject known before its rows."""
    rows = cohort(seed)
    text = demo.to_csv(rows) if fmt == "csv" else demo.to_ndjson(rows)
    spec = table.load_spec(MAPPINGS)
    windows = load_windows(MAPPINGS)
    subjects: dict[str, table.SubjectInfo] = {}
    count = 0
    for line, raw in table.read_rows(io.BytesIO(text.encode()), fmt):
        assert not isinstance(raw, table.RowError), raw
        row = table.parse_row(spec, line, raw)
        count += 1
        if isinstance(row, table.SubjectRow):
            table.check_subject(row)
            subjects[row.subject_id] = table.SubjectInfo(
                row.subject_id, row.arm, row.birth_date, row.index_date
            )
            continue
        subject = subjects[row.subject_id]
        if isinstance(row, table.VisitRow):
            _tp, warning = table.resolve_timepoint(line, row.timepoint, row.date, subject, windows)
            assert warning is None
            score = table.check_odi(row, max_missing=1)
            assert score is not None and score.percent is not None
        else:
            table.check_vertebra(row, subject)
            if row.date is not None:
                _tp, warning = table.resolve_timepoint(
                    line, row.timepoint, row.date, subject, windows
                )
                assert warning is None
    assert count == len(rows)


@pytest.mark.parametrize("seed", SEEDS)
def test_visit_dates_fall_in_their_protocol_windows(seed: int) -> None:
    """Each visit and radiograph date is in the window of its own timepoint
    (mappings/timepoints.json), so timepoint assignment by date agrees with the table."""
    windows = load_windows(MAPPINGS)
    st = study(seed)
    for row in st.rows:
        if row["record"] == "subject" or not row.get("date"):
            continue
        subj = st.subjects[row["subject_id"]]
        index = date.fromisoformat(str(subj["index_date"]))
        when = date.fromisoformat(str(row["date"]))
        assert windows.assign(str(subj["arm"]), index, when) == row["timepoint"], row


@pytest.mark.parametrize("seed", SEEDS)
def test_demographics_and_dates_are_plausible(seed: int) -> None:
    """Median age about 65 per arm, everybody 40-90; 2007-2009; dates in order."""
    st = study(seed)
    for arm in ("bkp", "conservative"):
        ages = [
            (
                date.fromisoformat(str(s["index_date"])) - date.fromisoformat(str(s["birth_date"]))
            ).days
            / 365.25
            for s in st.subjects.values()
            if s["arm"] == arm
        ]
        assert 63.5 <= statistics.median(ages) <= 66.5
        assert 40 <= min(ages) and max(ages) <= 90
    for s in st.subjects.values():
        birth, diagnosed, enrolled, index, ended = (
            date.fromisoformat(str(s[k]))
            for k in ("birth_date", "myeloma_diagnosed", "enrolled", "index_date", "ended")
        )
        assert birth < diagnosed <= enrolled <= index < ended
        assert date(2007, 1, 1) <= enrolled and ended <= date(2009, 12, 31)
    for row in st.rows:
        if row.get("date"):
            assert "2007-01-01" <= str(row["date"]) <= "2009-12-31"


@pytest.mark.parametrize("seed", SEEDS)
def test_levels_spread_over_t4_l5_with_a_thoracolumbar_peak(seed: int) -> None:
    st = study(seed)
    per_patient = Counter((f["subject_id"], f["level"]) for f in st.fractures)
    assert max(per_patient.values()) == 1  # a level fractures once per patient
    levels = Counter(str(f["level"]) for f in st.fractures)
    assert set(levels) <= set(demo.LEVEL_WEIGHTS)
    assert len(levels) >= 12  # spread over the thoracic and lumbar spine
    junction = sum(levels[lv] for lv in ("T11", "T12", "L1", "L2"))
    assert junction / sum(levels.values()) > 0.3
    assert levels.most_common(1)[0][0] in {"T11", "T12", "L1", "L2"}


@pytest.mark.parametrize("seed", SEEDS)
def test_outcome_values_are_plausible(seed: int) -> None:
    """VAS 0-100 mm; ODI items 0-5, at most one section missing (so the total is
    defined), a few questionnaires with one; heights positive, lumbar larger than
    thoracic, fractured bodies lower at the front than at the back; angles in degrees."""
    st = study(seed)
    one_missing = 0
    for v in st.visits.values():
        assert isinstance(v["vas"], int) and 0 <= v["vas"] <= 100
        items = [v[c] for c in demo.ODI_ITEMS]
        assert all(i is None or (isinstance(i, int) and 0 <= i <= 5) for i in items)
        missing = items.count(None)
        assert missing <= 1
        one_missing += missing
    assert 0 < one_missing < 0.2 * len(st.visits)
    baseline = [m for (_s, _lv, tp), m in st.measures.items() if tp == "baseline"]
    thoracic = [num(m, "vbh_posterior") for m in baseline if str(m["level"]) in ("T5", "T6", "T7")]
    lumbar = [num(m, "vbh_posterior") for m in baseline if str(m["level"]) in ("L2", "L3", "L4")]
    assert statistics.median(thoracic) + 5 < statistics.median(lumbar)
    wedge = [num(m, "vbh_posterior") - num(m, "vbh_anterior") for m in baseline]
    assert statistics.median(wedge) > 2
    for m in st.measures.values():
        for c in demo.HEIGHT_COLUMNS:
            assert 3 <= num(m, c) <= 40
        assert -35 <= num(m, "kyphosis_angle") <= 45


# --------------------------------------------------------------------------- the findings


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("measure", [vas, odi], ids=["vas", "odi"])
def test_bkp_pain_and_disability_improve_pre_to_post(
    seed: int, measure: Callable[[demo.Row], float]
) -> None:
    """BKP arm, per patient: baseline vs post-intervention VAS (mm) and ODI (%, from the
    items): p < 0.001 and the median change is a decrease."""
    p, change = signed_rank(
        *study(seed).per_patient("bkp", "baseline", "post-intervention", measure)
    )
    assert p < 0.001
    assert change < -10


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("column", demo.HEIGHT_COLUMNS)
def test_bkp_restores_vertebral_height(seed: int, column: str) -> None:
    """BKP arm, per treated vertebra: baseline vs post-intervention anterior / middle /
    posterior height: p < 0.05 and the median change is a gain."""
    p, change = signed_rank(
        *study(seed).per_vertebra("bkp", "baseline", "post-intervention", column)
    )
    assert p < 0.05
    assert change > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_bkp_corrects_kyphosis(seed: int) -> None:
    """BKP arm, per treated vertebra: baseline vs post-intervention segmental kyphosis
    angle: p < 0.05 and the median change is a reduction."""
    st = study(seed)
    p, change = signed_rank(
        *st.per_vertebra("bkp", "baseline", "post-intervention", "kyphosis_angle")
    )
    assert p < 0.05
    assert change < 0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("measure", [vas, odi], ids=["vas", "odi"])
def test_conservative_pain_and_disability_do_not_change(
    seed: int, measure: Callable[[demo.Row], float]
) -> None:
    """Conservative arm, per patient seen at month 6: baseline vs month-6 VAS and ODI:
    not significant (p > 0.05)."""
    st = study(seed)
    before, after = st.per_patient("conservative", "baseline", "month-6", measure)
    assert len(before) == 43
    p, _change = signed_rank(before, after)
    assert p > 0.05


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("column", demo.HEIGHT_COLUMNS)
def test_conservative_vertebrae_keep_collapsing(seed: int, column: str) -> None:
    """Conservative arm, per fracture measured at month 6: baseline vs month-6 anterior /
    middle / posterior height: p < 0.001 and the median change is a loss."""
    before, after = study(seed).per_vertebra("conservative", "baseline", "month-6", column)
    assert len(before) == 68
    p, change = signed_rank(before, after)
    assert p < 0.001
    assert change < 0


@pytest.mark.parametrize("seed", SEEDS)
def test_conservative_kyphosis_increases(seed: int) -> None:
    """Conservative arm, per fracture measured at month 6: baseline vs month-6 segmental
    kyphosis angle: p < 0.001 and the median change is an increase."""
    st = study(seed)
    p, change = signed_rank(
        *st.per_vertebra("conservative", "baseline", "month-6", "kyphosis_angle")
    )
    assert p < 0.001
    assert change > 0


# --------------------------------------------------------------------------- formats


def test_csv_and_ndjson_carry_the_same_rows() -> None:
    rows = demo.generate(3)
    parsed = list(csv.DictReader(io.StringIO(demo.to_csv(rows))))
    assert len(parsed) == len(rows)
    assert list(parsed[0]) == list(demo.COLUMNS)
    lines = demo.to_ndjson(rows).splitlines()
    assert len(lines) == len(rows)
    for row, text_row, line in zip(rows, parsed, lines, strict=True):
        obj = json.loads(line)
        assert obj == {k: v for k, v in row.items() if v is not None}
        for k in demo.COLUMNS:
            v = row.get(k)
            expected = (
                "" if v is None else ("true" if v is True else "false" if v is False else str(v))
            )
            assert text_row[k] == expected


def test_odi_cells_hold_ordinal_values_only() -> None:
    """The items are ordinal values 0-5 or empty in the CSV: no statement text (the
    instrument is copyrighted) can travel in the demo data."""
    parsed = csv.DictReader(io.StringIO(demo.to_csv(cohort(demo.DEFAULT_SEED))))
    for row in parsed:
        for c in demo.ODI_ITEMS:
            assert row[c] in {"", "0", "1", "2", "3", "4", "5"}


def test_odi_percent_follows_fairbank() -> None:
    """16 of 50 points is 32 %; one section missing: 16 of 45 is 35.6 %; two missing: none."""
    assert demo.odi_percent([1, 2, 1, 2, 1, 2, 1, 2, 2, 2]) == pytest.approx(32.0)
    assert demo.odi_percent([1, 2, 1, 2, 1, 2, 1, 2, 4, None]) == pytest.approx(35.555, abs=0.01)
    assert demo.odi_percent([1, 2, 1, 2, 1, 2, 1, 2, None, None]) is None
    assert codes.ODI_SECTIONS  # the items are the ten sections of codes.py
    assert len(demo.ODI_ITEMS) == len(codes.ODI_SECTIONS)


DOC_MEASURES = {
    "VAS (mm)": "vas",
    "ODI (%)": "odi",
    "anterior height (mm)": "vbh_anterior",
    "middle height (mm)": "vbh_middle",
    "posterior height (mm)": "vbh_posterior",
    "kyphosis angle (°)": "kyphosis_angle",
}


def test_the_documented_p_values_are_current() -> None:
    """docs/demo-cohort.md's table (default seed) equals what the generator gives now."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "demo-cohort.md").read_text("utf-8")
    st = study(demo.DEFAULT_SEED)
    checked = 0
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or cells[0] not in ("bkp", "conservative"):
            continue
        arm, label, comparison, n, before_med, after_med, p_doc = cells
        a, b = (t.strip() for t in comparison.split("→"))
        name = DOC_MEASURES[label]
        if name in ("vas", "odi"):
            before, after = st.per_patient(arm, a, b, vas if name == "vas" else odi)
        else:
            before, after = st.per_vertebra(arm, a, b, name)
        assert len(before) == int(n), line
        assert statistics.median(before) == pytest.approx(float(before_med), abs=0.051), line
        assert statistics.median(after) == pytest.approx(float(after_med), abs=0.051), line
        assert float(wilcoxon(before, after).pvalue) == pytest.approx(float(p_doc), rel=0.05)
        checked += 1
    assert checked == 16
