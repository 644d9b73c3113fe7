"""The searches of the benchmark and their hand-written SQL equivalents.

Each :class:`Case` is a FHIR search (type + query items, possibly rotating over a few
patients so that not every repetition hits the same rows) and a function that answers
the same question with SQL written by hand over the same tables. The hand SQL returns
the same columns as the server's query (content included) and the same page, total and
included resources; the benchmark checks that against the server's answer before it
times anything.

The hand SQL knows what a person writing it for this schema knows (``docs/storage.md``):

* index rows exist only for the current version of live resources, so a condition on an
  index table needs neither ``resource.deleted`` nor ``resource.res_type``;
* index rows are de-duplicated per resource and parameter, and ``Observation.subject``,
  ``effective[x]`` and ``value[x]`` have at most one value, so a join on them cannot
  repeat a resource and ``count(*)`` over index rows is exact;
* the constant parts (type, parameter name) are literals; the values are parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from benchmarks import search_data as data

Items = list[tuple[str, str]]
COLS = "r.rid, r.res_type, r.res_id, r.version_id, r.last_updated, r.deleted, r.content"
PAGE = 20  # the server's default page size (KYPHOFHIR_DEFAULT_PAGE_SIZE)
MAX_INCLUDE = 1000  # KYPHOFHIR_MAX_INCLUDE


@dataclass
class Answer:
    """What a search returned: matches in order, total, included resources."""

    ids: list[str]
    total: int | None
    included: set[str] = field(default_factory=set)
    pages: int = 1

    def key(self) -> tuple[Any, ...]:
        return (self.ids, self.total, sorted(self.included))


class Sql:
    """Runs hand-written SQL (``%s`` placeholders) on a DBAPI connection; logs statements."""

    def __init__(self, conn: Any, backend: str) -> None:
        self.conn = conn
        self.backend = backend
        self.log: list[tuple[str, tuple[Any, ...]]] | None = None

    def __call__(self, sql: str, *params: Any) -> list[Any]:
        if self.backend == "sqlite":
            sql = sql.replace("%s", "?")
        if self.log is not None:
            self.log.append((sql, params))
        rows: list[Any] = self.conn.execute(sql, params).fetchall()
        return rows

    def noidx(self, column: str) -> str:
        """``column`` such that SQLite cannot use an index for it (``+column``).

        Without statistics SQLite prefers, for a lookup correlated by ``rid``, the index
        with the most equality columns, (res_type, param, value...), and then reads
        every row of that value per outer row; ``+`` leaves it the ``rid`` index.
        PostgreSQL plans from statistics and gets the plain column.
        """
        return f"+{column}" if self.backend == "sqlite" else column


HandFn = Callable[[Sql, int], Answer]


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    rtype: str
    items: Callable[[int], Items]  # the query of parameter set ``i``
    hand: HandFn
    variants: int = 1  # parameter sets the repetitions rotate over
    paging: bool = False  # download every page (follow ``next``)
    note: str = ""

    def path(self, i: int) -> str:
        from urllib.parse import urlencode

        return f"/fhir/{self.rtype}?{urlencode(self.items(i))}"


def us(day: str) -> int:
    """``2022-03-01`` → microseconds since the epoch at its start (UTC), as stored."""
    when = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000


def _page(sql: Sql, rows: Sequence[Any], count: int, count_sql: Callable[[], int]) -> Answer:
    """Page + total the way the server does it: the count query only if the page is full."""
    more = len(rows) > count
    ids = [r[2] for r in rows[:count]]
    return Answer(ids, count_sql() if more else len(ids))


def _one(sql: Sql, statement: str, *params: Any) -> int:
    return int(sql(statement, *params)[0][0])


# --------------------------------------------------------------------------- hand SQL

TOKEN_RIDS = (
    "SELECT t.rid FROM spidx_token t WHERE t.res_type = 'Observation' AND t.param = 'code' "
    "AND t.system = %s AND t.code = %s"
)
TOKEN_COUNT = (
    "SELECT count(*) FROM spidx_token t WHERE t.res_type = 'Observation' AND t.param = 'code' "
    "AND t.system = %s AND t.code = %s"
)


def hand_token(total: bool = True) -> HandFn:
    def run(sql: Sql, i: int) -> Answer:
        rows = sql(
            f"SELECT {COLS} FROM resource r WHERE r.rid IN ({TOKEN_RIDS}) ORDER BY r.rid LIMIT %s",
            *data.VAS,
            PAGE + 1,
        )
        if not total:
            return Answer([r[2] for r in rows[:PAGE]], None)
        return _page(sql, rows, PAGE, lambda: _one(sql, TOKEN_COUNT, *data.VAS))

    return run


def _subject_where(sql: Sql) -> str:
    return (
        "s.res_type = 'Observation' AND s.param = 'subject' "
        "AND s.target_type = 'Patient' AND s.target_id = %s "
        "AND EXISTS (SELECT 1 FROM spidx_token t WHERE t.rid = s.rid "
        f"AND {sql.noidx('t.res_type')} = 'Observation' AND {sql.noidx('t.param')} = 'code' "
        "AND t.system = %s AND t.code = %s)"
    )


def hand_token_subject(patients: Callable[[int], str]) -> HandFn:
    def run(sql: Sql, i: int) -> Answer:
        args = (patients(i), *data.VAS)
        rows = sql(
            f"SELECT {COLS} FROM spidx_reference s JOIN resource r ON r.rid = s.rid "
            f"WHERE {_subject_where(sql)} ORDER BY r.rid LIMIT %s",
            *args,
            PAGE + 1,
        )
        return _page(
            sql,
            rows,
            PAGE,
            lambda: _one(
                sql, f"SELECT count(*) FROM spidx_reference s WHERE {_subject_where(sql)}", *args
            ),
        )

    return run


DATE_FROM, DATE_TO = "2022-03-01", "2022-04-01"
DATE_WHERE = "d.res_type = 'Observation' AND d.param = 'date' AND d.hi >= %s AND d.lo < %s"


def hand_date(sql: Sql, i: int) -> Answer:
    bounds = (us(DATE_FROM), us(DATE_TO))
    rows = sql(
        f"SELECT {COLS} FROM resource r WHERE r.rid IN "
        f"(SELECT d.rid FROM spidx_date d WHERE {DATE_WHERE}) ORDER BY r.rid LIMIT %s",
        *bounds,
        PAGE + 1,
    )
    return _page(
        sql,
        rows,
        PAGE,
        lambda: _one(sql, f"SELECT count(*) FROM spidx_date d WHERE {DATE_WHERE}", *bounds),
    )


CVQ_WHERE = (
    "c.res_type = 'Observation' AND c.param = 'code-value-quantity' "
    "AND c.system1 = %s AND c.code1 = %s AND c.value2 > %s"
)
CVQ_VALUE = 80


def hand_cvq(sql: Sql, i: int) -> Answer:
    args = (*data.VAS, float(CVQ_VALUE))
    rows = sql(
        f"SELECT {COLS} FROM resource r WHERE r.rid IN "
        f"(SELECT c.rid FROM spidx_composite c WHERE {CVQ_WHERE}) ORDER BY r.rid LIMIT %s",
        *args,
        PAGE + 1,
    )
    return _page(
        sql,
        rows,
        PAGE,
        lambda: _one(sql, f"SELECT count(*) FROM spidx_composite c WHERE {CVQ_WHERE}", *args),
    )


CHAIN_TARGETS = (
    "SELECT p.res_id FROM spidx_token i JOIN resource p ON p.rid = i.rid "
    "WHERE i.res_type = 'Patient' AND i.param = 'identifier' AND i.system = %s AND i.code = %s"
)
CHAIN_WHERE = (
    "s.res_type = 'Observation' AND s.param = 'subject' AND s.target_type = 'Patient' "
    f"AND s.target_id IN ({CHAIN_TARGETS})"
)


def hand_chain(labels: Callable[[int], str]) -> HandFn:
    def run(sql: Sql, i: int) -> Answer:
        args = (data.STUDY_SUBJECT, labels(i))
        rows = sql(
            f"SELECT {COLS} FROM spidx_reference s JOIN resource r ON r.rid = s.rid "
            f"WHERE {CHAIN_WHERE} ORDER BY r.rid LIMIT %s",
            *args,
            PAGE + 1,
        )
        return _page(
            sql,
            rows,
            PAGE,
            lambda: _one(sql, f"SELECT count(*) FROM spidx_reference s WHERE {CHAIN_WHERE}", *args),
        )

    return run


HAS_WHERE = (
    "r.res_type = 'Patient' AND NOT r.deleted AND r.res_id IN ("
    "SELECT s.target_id FROM spidx_reference s JOIN spidx_token t ON t.rid = s.rid "
    "WHERE s.res_type = 'Observation' AND s.param = 'subject' AND s.target_type = 'Patient' "
    "AND t.res_type = 'Observation' AND t.param = 'code' AND t.system = %s AND t.code = %s)"
)


def hand_has(sql: Sql, i: int) -> Answer:
    rows = sql(
        f"SELECT {COLS} FROM resource r WHERE {HAS_WHERE} ORDER BY r.rid LIMIT %s",
        *data.CALCIUM,
        PAGE + 1,
    )
    return _page(
        sql,
        rows,
        PAGE,
        lambda: _one(sql, f"SELECT count(*) FROM resource r WHERE {HAS_WHERE}", *data.CALCIUM),
    )


WEEK_FROM, WEEK_TO = "2022-03-07", "2022-03-14"


def _week_rids(sql: Sql) -> str:
    """VAS Observations of one week: driven by the token, the date checked by ``rid``."""
    return (
        "SELECT t.rid FROM spidx_token t WHERE t.res_type = 'Observation' AND t.param = 'code' "
        "AND t.system = %s AND t.code = %s AND EXISTS (SELECT 1 FROM spidx_date d "
        f"WHERE d.rid = t.rid AND {sql.noidx('d.res_type')} = 'Observation' "
        f"AND {sql.noidx('d.param')} = 'date' AND d.hi >= %s AND d.lo < %s)"
    )


def hand_include(sql: Sql, i: int) -> Answer:
    args = (*data.VAS, us(WEEK_FROM), us(WEEK_TO))
    rows = sql(
        f"SELECT {COLS} FROM resource r WHERE r.rid IN ({_week_rids(sql)}) ORDER BY r.rid LIMIT %s",
        *args,
        PAGE + 1,
    )
    answer = _page(
        sql,
        rows,
        PAGE,
        lambda: _one(sql, f"SELECT count(*) FROM ({_week_rids(sql)}) x", *args),
    )
    rids = [r[0] for r in rows[:PAGE]]
    if rids:
        marks = ", ".join(["%s"] * len(rids))
        found = sql(
            f"SELECT {COLS} FROM resource r WHERE NOT r.deleted AND r.rid IN ("
            "SELECT p.rid FROM spidx_reference s "
            "JOIN resource p ON p.res_type = s.target_type AND p.res_id = s.target_id "
            f"WHERE s.rid IN ({marks}) AND s.res_type = 'Observation' "
            "AND s.param IN ('subject', 'encounter')) ORDER BY r.rid LIMIT %s",
            *rids,
            2 * MAX_INCLUDE + 1,
        )
        answer.included = {f"{r[1]}/{r[2]}" for r in found}
    return answer


def hand_summary_count(sql: Sql, i: int) -> Answer:
    return Answer([], _one(sql, TOKEN_COUNT, *data.VAS))


def hand_sort(sql: Sql, i: int) -> Answer:
    rows = sql(
        f"SELECT {COLS}, d.hi FROM resource r LEFT JOIN spidx_date d ON d.rid = r.rid "
        "AND d.res_type = 'Observation' AND d.param = 'date' "
        f"WHERE r.rid IN ({TOKEN_RIDS}) ORDER BY d.hi DESC NULLS LAST, r.rid LIMIT %s",
        *data.VAS,
        PAGE + 1,
    )
    return _page(sql, rows, PAGE, lambda: _one(sql, TOKEN_COUNT, *data.VAS))


PERFORMER_RIDS = (
    "SELECT s.rid FROM spidx_reference s WHERE s.res_type = 'Observation' "
    "AND s.param = 'performer' AND s.target_type = 'Practitioner' AND s.target_id = %s"
)


def hand_paging(practitioner: str, page_size: int) -> HandFn:
    def run(sql: Sql, i: int) -> Answer:
        ids: list[str] = []
        total = None
        after = 0
        pages = 0
        while True:
            rows = sql(
                f"SELECT {COLS} FROM resource r WHERE r.rid IN ({PERFORMER_RIDS}) "
                "AND r.rid > %s ORDER BY r.rid LIMIT %s",
                practitioner,
                after,
                page_size + 1,
            )
            pages += 1
            if total is None:
                more = len(rows) > page_size
                total = (
                    _one(sql, f"SELECT count(*) FROM ({PERFORMER_RIDS}) x", practitioner)
                    if more
                    else len(rows)
                )
            ids += [r[2] for r in rows[:page_size]]
            if len(rows) <= page_size:
                return Answer(ids, total, pages=pages)
            after = rows[page_size - 1][0]

    return run


# --------------------------------------------------------------------------- the cases


def cases(patients: int, page_size: int) -> list[Case]:
    """The searches of issue #4, plus one diagnostic variant (``_total=none``)."""
    variants = min(8, patients)
    spread = [(j * 7919 + 13) % patients for j in range(variants)]

    def patient_id(i: int) -> str:
        return data.make_id("Patient", spread[i % variants])

    def label(i: int) -> str:
        return data.subject_label(spread[i % variants])

    vas = f"{data.VAS[0]}|{data.VAS[1]}"
    practitioner = data.make_id("Practitioner", 0)
    return [
        Case(
            "token",
            "token: code=VAS (10 %)",
            "Observation",
            lambda i: [("code", vas)],
            hand_token(),
        ),
        Case(
            "token_nototal",
            "  same, _total=none (page only)",
            "Observation",
            lambda i: [("code", vas), ("_total", "none")],
            hand_token(total=False),
            note="diagnostic: the page without the COUNT",
        ),
        Case(
            "token_subject",
            "token + subject=Patient/x",
            "Observation",
            lambda i: [("code", vas), ("subject", f"Patient/{patient_id(i)}")],
            hand_token_subject(patient_id),
            variants=variants,
        ),
        Case(
            "date",
            f"date range ge{DATE_FROM}&lt{DATE_TO}",
            "Observation",
            lambda i: [("date", f"ge{DATE_FROM}"), ("date", f"lt{DATE_TO}")],
            hand_date,
        ),
        Case(
            "cvq",
            f"code-value-quantity=VAS$gt{CVQ_VALUE}",
            "Observation",
            lambda i: [("code-value-quantity", f"{vas}$gt{CVQ_VALUE}")],
            hand_cvq,
        ),
        Case(
            "chain",
            "subject:Patient.identifier=",
            "Observation",
            lambda i: [("subject:Patient.identifier", f"{data.STUDY_SUBJECT}|{label(i)}")],
            hand_chain(label),
            variants=variants,
        ),
        Case(
            "has",
            "Patient?_has:Observation:subject:code=",
            "Patient",
            lambda i: [("_has:Observation:subject:code", f"{data.CALCIUM[0]}|{data.CALCIUM[1]}")],
            hand_has,
        ),
        Case(
            "include",
            "VAS in a week + _include subject, encounter",
            "Observation",
            lambda i: [
                ("code", vas),
                ("date", f"ge{WEEK_FROM}"),
                ("date", f"lt{WEEK_TO}"),
                ("_include", "Observation:subject"),
                ("_include", "Observation:encounter"),
            ],
            hand_include,
        ),
        Case(
            "summary_count",
            "code=VAS&_summary=count",
            "Observation",
            lambda i: [("code", vas), ("_summary", "count")],
            hand_summary_count,
        ),
        Case(
            "sort",
            "code=VAS&_sort=-date (first page)",
            "Observation",
            lambda i: [("code", vas), ("_sort", "-date")],
            hand_sort,
        ),
        Case(
            "paging",
            f"download performer=Practitioner/x (_count={page_size})",
            "Observation",
            lambda i: [("performer", f"Practitioner/{practitioner}"), ("_count", str(page_size))],
            hand_paging(practitioner, page_size),
            paging=True,
        ),
    ]
