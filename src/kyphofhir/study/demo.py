"""A synthetic demo cohort with the published shape of the kyphoplasty myeloma study.

Pflugmacher et al. (Charité, 2009; ``shared/seed/kyphoplasty-myeloma-abstract.txt``)
report 85 BKP patients (52 male, 33 female) with 206 treated fractures and 48 conservative
patients (29 male, 19 female) with 80 fractures; 82 BKP patients / 199 vertebrae and 43
conservative patients / 68 fractures were seen at 6 months. :func:`generate` reproduces
these counts exactly and draws outcome trajectories for which the published findings
hold (Wilcoxon signed-rank within arms; ``docs/demo-cohort.md`` has the p-values). Nobody
in it is real; it exists so that a newcomer sees a populated server and so that import,
search and (later) analytics have realistic data to work on.

The output is the study table that ``kyphofhir import`` reads (columns in
``mappings/``): one ``subject`` row per patient, one ``vertebra`` row per fracture
without a timepoint (declares the fracture), and per timepoint one ``visit`` row (VAS,
ODI items) and one ``vertebra`` row per fracture (heights, kyphosis angle).

Pure and deterministic: the same seed gives the same rows on every platform (the
standard library's Mersenne Twister with an integer seed, whose streams for
``random()``, ``gauss()``, ``shuffle()`` and ``sample()`` Python keeps stable), so no
numerical library is a runtime dependency. Codes come from :mod:`kyphofhir.study.codes`;
no ODI statement text appears here (items are ordinal values 0-5 only).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from statistics import NormalDist

from kyphofhir.study import codes

DEFAULT_SEED = 2009
"""The seed of ``kyphofhir demo generate`` / ``demo load`` / ``serve --demo``."""

Value = str | int | float | bool | None
Row = dict[str, Value]

ODI_ITEMS = tuple(f"odi_{n}" for n in range(1, 11))
HEIGHT_COLUMNS = ("vbh_anterior", "vbh_middle", "vbh_posterior")
SUBJECT_COLUMNS = (
    "subject_id",
    "arm",
    "sex",
    "birth_date",
    "enrolled",
    "index_date",
    "myeloma_diagnosed",
    "ended",
)
VISIT_COLUMNS = ("subject_id", "timepoint", "date", "vas", *ODI_ITEMS)
VERTEBRA_COLUMNS = (
    "subject_id",
    "level",
    "treated",
    "timepoint",
    "date",
    *HEIGHT_COLUMNS,
    "kyphosis_angle",
)
COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(("record", *SUBJECT_COLUMNS, *VISIT_COLUMNS, *VERTEBRA_COLUMNS))
)
"""The CSV header: the union of the three record kinds' columns, ``record`` first."""

TIMEPOINT_ORDER = ("baseline", "post-intervention", "month-3", "month-6")
assert set(TIMEPOINT_ORDER) == set(codes.TIMEPOINTS)


# --------------------------------------------------------------------------- the shape


@dataclass(frozen=True)
class ArmShape:
    """The published counts of one arm, and the fracture cap per patient."""

    arm: str
    prefix: str
    male: int
    female: int
    fractures: int
    followed_patients: int  # seen at month 6
    followed_fractures: int  # measured at month 6
    max_fractures: int  # most fractures one patient has (a modelling choice)

    @property
    def patients(self) -> int:
        return self.male + self.female


SHAPE: dict[str, ArmShape] = {
    "bkp": ArmShape("bkp", "BKP", 52, 33, 206, 82, 199, 6),
    "conservative": ArmShape("conservative", "CON", 29, 19, 80, 43, 68, 4),
}

# Relative frequency of fractured levels, T4-L5. Myeloma deposits are spread along the
# whole spine, but collapse concentrates where the load is highest: the thoracolumbar
# junction (T11-L1, transition from the stiff thoracic to the mobile lumbar spine) with
# a second, smaller peak at the apex of the thoracic kyphosis (T7-T8). T1-T3 are left
# out: they are hard to see on lateral radiographs and rarely treated with kyphoplasty.
LEVEL_WEIGHTS: dict[str, int] = {
    "T4": 2,
    "T5": 3,
    "T6": 5,
    "T7": 7,
    "T8": 7,
    "T9": 6,
    "T10": 7,
    "T11": 10,
    "T12": 14,
    "L1": 13,
    "L2": 9,
    "L3": 7,
    "L4": 5,
    "L5": 4,
}
assert set(LEVEL_WEIGHTS) <= set(codes.VERTEBRAE)

# Unfractured vertebral body (anterior, middle, posterior height; AP depth) in mm for an
# average adult on a lateral radiograph: rounded values rising from about 17 mm at T4
# to about 28 mm at L3-L4 (thoracic bodies are smaller than lumbar ones, L5 is wedged the
# other way). An approximation for plausible demo values, not a reference table.
NORMAL_BODY: dict[str, tuple[float, float, float, float]] = {
    "T4": (17.0, 16.5, 18.5, 26.0),
    "T5": (17.5, 17.0, 19.0, 27.0),
    "T6": (18.0, 17.5, 19.5, 28.0),
    "T7": (18.5, 18.0, 20.0, 29.0),
    "T8": (19.5, 19.0, 21.0, 30.0),
    "T9": (20.0, 19.5, 21.5, 31.0),
    "T10": (21.0, 20.5, 22.5, 32.0),
    "T11": (22.5, 22.0, 24.0, 33.0),
    "T12": (24.0, 23.5, 25.5, 35.0),
    "L1": (25.5, 25.0, 27.0, 37.0),
    "L2": (27.0, 26.0, 28.0, 39.0),
    "L3": (27.5, 26.5, 28.5, 41.0),
    "L4": (27.5, 26.5, 28.0, 43.0),
    "L5": (27.5, 26.0, 26.0, 44.0),
}
# Segmental Cobb angle (deg, positive = kyphotic) of an unfractured segment: kyphotic in
# the thoracic spine, about neutral at the thoracolumbar junction, lordotic below.
SEGMENT_ANGLE: dict[str, float] = {
    "T4": 5.0,
    "T5": 6.0,
    "T6": 6.0,
    "T7": 6.0,
    "T8": 6.0,
    "T9": 5.0,
    "T10": 4.0,
    "T11": 3.0,
    "T12": 2.0,
    "L1": 0.0,
    "L2": -3.0,
    "L3": -6.0,
    "L4": -9.0,
    "L5": -12.0,
}

# Fracture morphology (share, and the fraction of anterior/middle/posterior height lost):
# wedge fractures lose the anterior wall, biconcave ones the centre, crush fractures all.
FRACTURE_TYPES: tuple[tuple[str, float, tuple[float, float, float]], ...] = (
    ("wedge", 0.45, (0.35, 0.22, 0.06)),
    ("biconcave", 0.35, (0.16, 0.32, 0.06)),
    ("crush", 0.20, (0.30, 0.30, 0.18)),
)

AGE_MEDIAN = 65.0
AGE_SD = 9.0

# Calendar: kyphoplasties / enrolments from January 2007 to December 2008, so that the
# last 6-month visits fall in mid-2009 (the abstract is from 2009).
FIRST_INDEX = date(2007, 1, 15)
LAST_INDEX = date(2008, 12, 15)

# Visit day relative to the index date (the kyphoplasty for BKP; for conservative
# treatment the enrolment visit at which the fracture is diagnosed): (first day, last
# day), drawn uniformly. They lie inside the protocol windows of
# ``mappings/timepoints.json`` (a test checks it).
VISIT_DAYS: dict[str, dict[str, tuple[int, int]]] = {
    "bkp": {
        "baseline": (-3, 0),  # pre-operative assessment, at most 3 days before
        "post-intervention": (1, 4),  # before discharge
        "month-3": (80, 100),
        "month-6": (166, 198),
    },
    "conservative": {
        "baseline": (0, 0),  # the enrolment visit, which is the index date
        "post-intervention": (3, 10),  # after the start of conservative treatment
        "month-3": (80, 100),
        "month-6": (166, 198),
    },
}

# The patients lost before month 6 (3 BKP, 5 conservative) attend baseline,
# post-intervention and month 3 and then miss the month-6 visit and its radiographs:
# in a myeloma cohort the usual reasons are death or a progression that keeps them from
# travelling, which happen over months rather than in the first days.
DROPOUT_TIMEPOINTS = ("baseline", "post-intervention", "month-3")

# ODI sections that patients with back pain tend to score higher (lifting, standing,
# travelling, sex life) or lower (personal care, sleeping); weights for spreading a raw
# sum over the sections.
ODI_SECTION_WEIGHTS = (1.0, 0.6, 1.5, 1.0, 1.0, 1.3, 0.7, 1.3, 1.1, 1.2)
# Share of questionnaires with one unanswered section, and how often that is section 8
# (sex life, the one most often left out).
ODI_MISSING_SHARE = 0.07
ODI_MISSING_SEX_LIFE = 0.7


# --------------------------------------------------------------------------- generation


@dataclass
class _Fracture:
    level: str
    heights: dict[str, tuple[float, float, float]]  # timepoint -> true heights (mm)
    depth: float
    angle_offset: float  # the segment's normal angle + posture + per-segment variation


@dataclass
class _Subject:
    subject_id: str
    arm: str
    sex: str
    birth: date
    enrolled: date
    ended: date
    index: date
    myeloma: date
    timepoints: tuple[str, ...]
    fractures: list[_Fracture]
    vas: dict[str, int]
    odi: dict[str, list[int | None]]
    visit_dates: dict[str, date]


def generate(seed: int = DEFAULT_SEED) -> list[Row]:
    """The demo study table for ``seed``: per patient its subject row, its fracture
    declarations, then its visits with their measurements (grouped by subject so that a
    streaming importer meets each subject before its rows)."""
    rng = random.Random(seed)
    rows: list[Row] = []
    for shape in SHAPE.values():
        for subject in _arm(rng, shape):
            rows.extend(_rows(rng, subject))
    return rows


def _arm(rng: random.Random, shape: ArmShape) -> list[_Subject]:
    n = shape.patients
    sexes = ["male"] * shape.male + ["female"] * shape.female
    rng.shuffle(sexes)
    dropped = set(rng.sample(range(n), n - shape.followed_patients))
    completers = [i for i in range(n) if i not in dropped]
    counts = [0] * n
    for group, total in (
        (sorted(dropped), shape.fractures - shape.followed_fractures),
        (completers, shape.followed_fractures),
    ):
        for i, c in zip(
            group, _partition(rng, total, len(group), shape.max_fractures), strict=True
        ):
            counts[i] = c
    ages = _ages(rng, n)
    subjects = [
        _subject(rng, shape, i, sexes[i], ages[i], counts[i], i in dropped) for i in range(n)
    ]
    _patient_reported(rng, shape.arm, subjects)
    return subjects


def _partition(rng: random.Random, total: int, parts: int, cap: int) -> list[int]:
    """``parts`` counts in 1..cap summing to ``total``: a Polya urn (a patient with more
    fractures is likelier to have another, weight ``count x (cap - count)`` so that it
    tapers off instead of piling up at the cap). It gives the skewed distribution seen
    clinically: many patients with one or two fractures, a few with five or six."""
    if not parts * 1 <= total <= parts * cap:
        raise ValueError(f"cannot split {total} fractures over {parts} patients (cap {cap})")
    counts = [1] * parts
    for _ in range(total - parts):
        open_ = [i for i in range(parts) if counts[i] < cap]
        weights = [float(counts[i] * (cap - counts[i])) for i in open_]
        counts[_weighted(rng, open_, weights)] += 1
    return counts


def _ages(rng: random.Random, n: int) -> list[float]:
    """Ages at the index date, stratified over a normal distribution (median 65, SD 9,
    42-86 years), so that every seed has a median close to 65 (myeloma is diagnosed at a
    median of about 65-70; kyphoplasty series are a little younger)."""
    dist = NormalDist(AGE_MEDIAN, AGE_SD)
    ages = [_clip(dist.inv_cdf((k + rng.random()) / n), 42.0, 86.0) for k in range(n)]
    rng.shuffle(ages)
    return ages


def _weighted(rng: random.Random, items: Sequence[int], weights: Sequence[float]) -> int:
    """One of ``items`` with probability proportional to ``weights`` (one ``random()``)."""
    x = rng.random() * sum(weights)
    for item, w in zip(items, weights, strict=True):
        x -= w
        if x < 0:
            return item
    return items[-1]


def _levels(rng: random.Random, k: int) -> list[str]:
    """``k`` distinct fractured levels drawn by :data:`LEVEL_WEIGHTS`, cranial first."""
    pool = list(LEVEL_WEIGHTS)
    chosen: list[str] = []
    for _ in range(k):
        idx = _weighted(rng, range(len(pool)), [float(LEVEL_WEIGHTS[lv]) for lv in pool])
        chosen.append(pool.pop(idx))
    order = list(LEVEL_WEIGHTS)
    return sorted(chosen, key=order.index)


def _clip(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def _subject(
    rng: random.Random,
    shape: ArmShape,
    i: int,
    sex: str,
    age: float,
    n_fractures: int,
    dropout: bool,
) -> _Subject:
    span = (LAST_INDEX - FIRST_INDEX).days
    index = FIRST_INDEX + timedelta(days=int(rng.random() * (span + 1)))
    birth = index - timedelta(days=int(age * 365.25))
    if rng.random() < 0.35:  # the fracture led to the diagnosis of myeloma
        myeloma = index - timedelta(days=int(rng.random() * 60) + 12)
    else:
        myeloma = index - timedelta(days=int(90 + rng.random() * 5 * 365))
    if shape.arm == "bkp":  # consent some days before the kyphoplasty
        enrolled = index - timedelta(days=3 + int(rng.random() * 8))
    else:  # enrolled at the visit where the fracture is diagnosed: that is day 0
        enrolled = index
    timepoints = DROPOUT_TIMEPOINTS if dropout else TIMEPOINT_ORDER
    visit_dates: dict[str, date] = {}
    for tp in timepoints:
        lo, hi = VISIT_DAYS[shape.arm][tp]
        visit_dates[tp] = index + timedelta(days=lo + int(rng.random() * (hi - lo + 1)))
    if dropout:  # left the study between the month-3 visit and the month-6 window
        ended = visit_dates["month-3"] + timedelta(days=20 + int(rng.random() * 40))
    else:
        ended = visit_dates["month-6"]
    size = (1.04 if sex == "male" else 0.95) * _clip(rng.gauss(1.0, 0.04), 0.9, 1.1)
    posture = rng.gauss(0.0, 2.5)
    fractures = [
        _fracture(rng, shape.arm, level, size, posture, timepoints)
        for level in _levels(rng, n_fractures)
    ]
    return _Subject(
        subject_id=f"{shape.prefix}-{i + 1:03d}",
        arm=shape.arm,
        sex=sex,
        birth=birth,
        enrolled=enrolled,
        ended=ended,
        index=index,
        myeloma=myeloma,
        timepoints=timepoints,
        fractures=fractures,
        vas={},
        odi={},
        visit_dates=visit_dates,
    )


def _fracture(
    rng: random.Random,
    arm: str,
    level: str,
    size: float,
    posture: float,
    timepoints: Sequence[str],
) -> _Fracture:
    ant, mid, post, depth = (v * size for v in NORMAL_BODY[level])
    kind = _weighted(rng, range(len(FRACTURE_TYPES)), [t[1] for t in FRACTURE_TYPES])
    loss = FRACTURE_TYPES[kind][2]
    severity = _clip(rng.gauss(1.0, 0.3), 0.4, 1.8)
    base = tuple(
        h * (1.0 - _clip(f * severity, 0.0, 0.6))
        for h, f in zip((ant, mid, post), loss, strict=True)
    )
    normal = (ant, mid, post)
    heights: dict[str, tuple[float, float, float]] = {"baseline": _triple(base)}
    if arm == "bkp":
        # the balloon restores part of the lost height (most at the front and centre,
        # little at the posterior wall); cement then holds it, with a small settling
        restore = _clip(rng.gauss(0.45, 0.15), 0.05, 0.85)
        after = [
            b + (n - b) * restore * w for b, n, w in zip(base, normal, (1.0, 1.0, 0.5), strict=True)
        ]
        heights["post-intervention"] = _triple(after)
        settle3 = abs(rng.gauss(0.0, 0.25))
        settle6 = settle3 + abs(rng.gauss(0.0, 0.2))
        heights["month-3"] = _triple(
            [h - settle3 * w for h, w in zip(after, (1, 0.8, 0.2), strict=True)]
        )
        heights["month-6"] = _triple(
            [h - settle6 * w for h, w in zip(after, (1, 0.8, 0.2), strict=True)]
        )
    else:
        # without support, the osteolytic body keeps collapsing over the months
        rate = _clip(rng.gauss(1.0, 0.45), 0.1, 2.5)
        for tp, mm in (("post-intervention", 0.3), ("month-3", 1.8), ("month-6", 3.0)):
            loss_mm = mm * rate
            heights[tp] = _triple(
                [
                    max(b - loss_mm * w, n * 0.35)
                    for b, n, w in zip(base, normal, (1.0, 0.85, 0.3), strict=True)
                ]
            )
    heights = {tp: h for tp, h in heights.items() if tp in timepoints}
    offset = SEGMENT_ANGLE[level] + posture + rng.gauss(0.0, 2.0)
    return _Fracture(level=level, heights=heights, depth=depth, angle_offset=offset)


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    a, m, p = values
    return (a, m, p)


def _patient_reported(rng: random.Random, arm: str, subjects: list[_Subject]) -> None:
    """VAS (mm) and ODI (%) per visit, then the ODI items that give that percentage.

    BKP: large pain and disability relief right after the procedure that lasts to month 6
    (with some partial responders). Conservative: the change from baseline at each visit
    is a random magnitude whose sign is balanced by rank (of each two neighbouring
    magnitudes one goes up and one goes down), so that the arm shows no systematic change
    by construction, as published, instead of by the luck of the seed.
    """
    vas: dict[str, dict[str, float]] = {s.subject_id: {} for s in subjects}
    odi: dict[str, dict[str, float]] = {s.subject_id: {} for s in subjects}
    for s in subjects:
        if arm == "bkp":
            responder = rng.random() < 0.85
            v0 = _clip(rng.gauss(76.0, 11.0), 45.0, 100.0)
            o0 = _clip(rng.gauss(66.0, 11.0), 30.0, 96.0)
            v1 = v0 - (rng.gauss(46.0, 13.0) if responder else rng.gauss(12.0, 10.0))
            o1 = o0 - (rng.gauss(30.0, 10.0) if responder else rng.gauss(8.0, 8.0))
            v3 = v1 + rng.gauss(-2.0, 8.0)
            o3 = o1 + rng.gauss(-4.0, 6.0)
            v6 = v3 + rng.gauss(0.0, 8.0)
            o6 = o3 + rng.gauss(0.0, 6.0)
            vas[s.subject_id] = dict(zip(TIMEPOINT_ORDER, (v0, v1, v3, v6), strict=True))
            odi[s.subject_id] = dict(zip(TIMEPOINT_ORDER, (o0, o1, o3, o6), strict=True))
        else:
            vas[s.subject_id]["baseline"] = _clip(rng.gauss(72.0, 12.0), 35.0, 95.0)
            odi[s.subject_id]["baseline"] = _clip(rng.gauss(62.0, 12.0), 26.0, 92.0)
    if arm == "conservative":
        for tp in TIMEPOINT_ORDER[1:]:
            present = [s for s in subjects if tp in s.timepoints]
            for table, spread in ((vas, 10.0), (odi, 7.0)):
                deltas = _balanced(rng, [abs(rng.gauss(0.0, spread)) for _ in present])
                for s, d in zip(present, deltas, strict=True):
                    table[s.subject_id][tp] = table[s.subject_id]["baseline"] + d
    for s in subjects:
        for tp in s.timepoints:
            s.vas[tp] = round(_clip(vas[s.subject_id][tp], 0.0, 100.0))
            s.odi[tp] = _odi_items(rng, _clip(odi[s.subject_id][tp], 0.0, 100.0))


def _balanced(rng: random.Random, magnitudes: list[float]) -> list[float]:
    """Signed changes: in rank order of magnitude, each two neighbours get opposite signs
    (which one is positive is random), so the positive and negative rank sums of the
    signed-rank test differ by at most about n/2."""
    order = sorted(range(len(magnitudes)), key=magnitudes.__getitem__)
    signs = [1.0] * len(magnitudes)
    for k in range(0, len(order), 2):
        first = 1.0 if rng.random() < 0.5 else -1.0
        signs[order[k]] = first
        if k + 1 < len(order):
            signs[order[k + 1]] = -first
    return [m * s for m, s in zip(magnitudes, signs, strict=True)]


def _odi_items(rng: random.Random, percent: float) -> list[int | None]:
    """Ten section scores (0-5, ``None`` = not answered) whose ODI total is ``percent``
    rounded to the instrument's resolution; occasionally one section is left out."""
    missing: int | None = None
    if rng.random() < ODI_MISSING_SHARE:
        missing = 7 if rng.random() < ODI_MISSING_SEX_LIFE else int(rng.random() * 10)
    answered = [i for i in range(10) if i != missing]
    target = round(percent / 100.0 * 5 * len(answered))
    items: list[int | None] = [None] * 10
    scores = dict.fromkeys(answered, 0)
    for _ in range(target):
        open_ = [i for i in answered if scores[i] < 5]
        pick = _weighted(rng, open_, [ODI_SECTION_WEIGHTS[i] for i in open_])
        scores[pick] += 1
    for i, v in scores.items():
        items[i] = v
    return items


# --------------------------------------------------------------------------- rows


def _rows(rng: random.Random, s: _Subject) -> list[Row]:
    rows: list[Row] = [
        {
            "record": "subject",
            "subject_id": s.subject_id,
            "arm": s.arm,
            "sex": s.sex,
            "birth_date": s.birth.isoformat(),
            "enrolled": s.enrolled.isoformat(),
            "index_date": s.index.isoformat(),
            "myeloma_diagnosed": s.myeloma.isoformat(),
            "ended": s.ended.isoformat(),
        }
    ]
    treated = s.arm == "bkp"
    for f in s.fractures:
        rows.append(
            {"record": "vertebra", "subject_id": s.subject_id, "level": f.level, "treated": treated}
        )
    for tp in s.timepoints:
        when = s.visit_dates[tp].isoformat()
        visit: Row = {"record": "visit", "subject_id": s.subject_id, "timepoint": tp, "date": when}
        visit["vas"] = s.vas[tp]
        visit.update(zip(ODI_ITEMS, s.odi[tp], strict=True))
        rows.append(visit)
        for f in s.fractures:
            rows.append(_measurement(rng, s, f, tp, when, treated))
    return rows


def _measurement(
    rng: random.Random, s: _Subject, f: _Fracture, tp: str, when: str, treated: bool
) -> Row:
    """Heights and angle as read on the radiograph: the true values plus reading noise
    (about 0.4 mm, 1 degree). The angle follows the heights: the segment's own angle plus
    the wedge the fracture adds, atan((posterior - anterior) / depth)."""
    ant, mid, post = f.heights[tp]
    wedge = math.degrees(math.atan2(post - ant, f.depth))
    row: Row = {
        "record": "vertebra",
        "subject_id": s.subject_id,
        "level": f.level,
        "treated": treated,
        "timepoint": tp,
        "date": when,
    }
    for col, h in zip(HEIGHT_COLUMNS, (ant, mid, post), strict=True):
        row[col] = round(max(h + rng.gauss(0.0, 0.4), 3.0), 1)
    row["kyphosis_angle"] = round(f.angle_offset + wedge + rng.gauss(0.0, 1.0), 1)
    return row


# --------------------------------------------------------------------------- formats


def _text(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_csv(rows: Iterable[Row]) -> str:
    """The rows as CSV with the :data:`COLUMNS` header (empty cell = no value)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_text(row.get(c)) for c in COLUMNS])
    return out.getvalue()


def to_ndjson(rows: Iterable[Row]) -> str:
    """The rows as NDJSON, one object per line, typed values, absent = no value."""
    return "".join(
        json.dumps({k: v for k, v in row.items() if v is not None}, separators=(",", ":")) + "\n"
        for row in rows
    )


def odi_percent(items: Sequence[Value]) -> float | None:
    """The ODI total of ten item values (``None``/empty = not answered) by Fairbank &
    Pynsent: sum / (5 x answered) x 100; ``None`` with more than one section missing.
    Used to summarise the demo; the server's scoring lives with the Questionnaire."""
    answered = [int(v) for v in items if v is not None and v != ""]
    if len(answered) < 9:
        return None
    return sum(answered) / (5 * len(answered)) * 100.0


SUMMARY_KEYS = ("patients", "male", "female", "fractures", "month6_patients", "month6_vertebrae")


def summary(rows: Iterable[Row]) -> dict[str, dict[str, int]]:
    """Per arm: patients, male, female, fractures, month-6 patients and vertebrae."""
    out = {arm: dict.fromkeys(SUMMARY_KEYS, 0) for arm in SHAPE}
    arm_of: dict[Value, str] = {}
    for row in rows:
        if row["record"] == "subject":
            arm_of[row["subject_id"]] = arm = str(row["arm"])
            out[arm]["patients"] += 1
            out[arm][str(row["sex"])] += 1
            continue
        arm = arm_of[row["subject_id"]]
        if row["record"] == "visit" and row["timepoint"] == "month-6":
            out[arm]["month6_patients"] += 1
        elif row["record"] == "vertebra" and not row.get("timepoint"):
            out[arm]["fractures"] += 1
        elif row["record"] == "vertebra" and row["timepoint"] == "month-6":
            out[arm]["month6_vertebrae"] += 1
    return out


def readme(seed: int, file_name: str, rows: Sequence[Row]) -> str:
    """The README.txt written next to a generated table: what it is, and that nobody in it
    is real."""
    counts = summary(rows)
    lines = [
        "kyphofhir demo cohort: SYNTHETIC DATA",
        "",
        f"{file_name} was generated by `kyphofhir demo generate --seed {seed}`. Every",
        "patient, date and value in it is invented by a random generator; nothing comes",
        "from a real person. Only the shape (counts) of the cohort follows the published",
        "study (Pflugmacher et al., balloon kyphoplasty vs conservative treatment of",
        "osteolytic vertebral fractures in multiple myeloma, 6 months follow-up, 2009):",
        "",
    ]
    for arm, c in counts.items():
        lines.append(
            f"  {arm:13} {c['patients']} patients ({c['male']} male, {c['female']} female), "
            f"{c['fractures']} fractures; month 6: {c['month6_patients']} patients, "
            f"{c['month6_vertebrae']} vertebrae"
        )
    lines += [
        "",
        "Rows: one `subject` row per patient, one `vertebra` row without timepoint per",
        "fracture, and per timepoint one `visit` row (VAS in mm, ODI section scores 0-5)",
        "and one `vertebra` row per fracture (heights in mm, kyphosis angle in degrees).",
        "Columns: mappings/study-table.json. How it is generated and which statistical",
        "findings hold on it: docs/demo-cohort.md. Load it with `kyphofhir import FILE`",
        "or `kyphofhir demo load`.",
        "",
    ]
    return "\n".join(lines)
