"""Import a study table (``mappings/study-table.json``) into the store, idempotently.

Rows are read from a stream one at a time (``study.table``), turned into resources by
``study.builders`` and written through ``crud``, so they get the same validation (R4
structure, claimed profiles) and derived resources (the ODI score of a
QuestionnaireResponse) as any REST write. Memory stays constant in the file size: only a
few small keys per subject, visit and vertebra are kept to recognise duplicates.

Why it is idempotent: every resource has a deterministic id from its natural key, and a
resource is written only when its content differs from the stored one, so importing the
same file twice writes nothing the second time, and a corrected file writes new versions
of exactly the resources whose content changed. The import never deletes.

Units of work: ``import_batch_rows`` rows share one database transaction. A row that
fails its checks writes nothing and is reported; a write that the server rejects (a
profile rule) aborts the batch, which is then redone one row per transaction so the
other rows are kept and the failing one is reported with the server's reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from kyphofhir.errors import FhirError, Issue, NotFound
from kyphofhir.fhir.outcome import operation_outcome
from kyphofhir.services import crud
from kyphofhir.services.context import Services, ServiceUnavailable
from kyphofhir.store.base import StoredResource, UnitOfWork
from kyphofhir.study import builders, codes
from kyphofhir.study.table import (
    RawRow,
    RowError,
    SubjectInfo,
    SubjectRow,
    TableSpec,
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
from kyphofhir.study.timepoints import Windows, load_windows

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
FORMATS = ("csv", "ndjson")


@lru_cache(maxsize=8)
def _mappings(path: Path) -> tuple[TableSpec, Windows]:
    return load_spec(path), load_windows(path)


# --- the report --------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did: row counts, resource counts by type, one issue per bad row."""

    study: str
    rows_read: int = 0
    rows_imported: int = 0
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    issues: list[Issue] = field(default_factory=list)

    @property
    def rows_failed(self) -> int:
        return self.rows_read - self.rows_imported

    @property
    def ok(self) -> bool:
        return self.rows_failed == 0

    def summary(self) -> str:
        return (
            f"{self.rows_read} rows read, {self.rows_imported} imported, "
            f"{self.rows_failed} failed; resources: {sum(self.created.values())} created, "
            f"{sum(self.updated.values())} updated, {sum(self.unchanged.values())} unchanged"
        )

    def outcome(self) -> JsonObject:
        """An OperationOutcome: the summary, then one issue per bad row (and warnings)."""
        summary = Issue("information", "informational", self.summary())
        return operation_outcome([summary, *self.issues])

    def parameters(self) -> JsonObject:
        """The ``$import`` response: counts as a Parameters resource plus the outcome."""
        params: list[JsonObject] = [
            {"name": "study", "valueReference": builders.study_ref(self.study)},
            {"name": "rowsRead", "valueInteger": self.rows_read},
            {"name": "rowsImported", "valueInteger": self.rows_imported},
            {"name": "rowsFailed", "valueInteger": self.rows_failed},
        ]
        for name, counter in (
            ("created", self.created),
            ("updated", self.updated),
            ("unchanged", self.unchanged),
        ):
            params.append({"name": name, "valueInteger": sum(counter.values())})
        for rtype in sorted({*self.created, *self.updated, *self.unchanged}):
            params.append(
                {
                    "name": "resources",
                    "part": [
                        {"name": "type", "valueCode": rtype},
                        {"name": "created", "valueInteger": self.created[rtype]},
                        {"name": "updated", "valueInteger": self.updated[rtype]},
                        {"name": "unchanged", "valueInteger": self.unchanged[rtype]},
                    ],
                }
            )
        params.append({"name": "outcome", "resource": self.outcome()})
        return {"resourceType": "Parameters", "parameter": params}


def _row_issue(err: RowError) -> Issue:
    expression = (f"line {err.line}", err.column) if err.column else (f"line {err.line}",)
    return Issue("error", "invalid", f"line {err.line}: {err.reason}", expression)


def _warning(line: int, column: str, text: str) -> Issue:
    return Issue("warning", "business-rule", f"line {line}: {text}", (f"line {line}", column))


# --- state kept across rows -----------------------------------------------------------------


class _State:
    """What the rows seen so far established, with undo for a batch that rolled back."""

    def __init__(self) -> None:
        self.subjects: dict[str, SubjectInfo] = {}
        self.subject_lines: dict[str, int] = {}
        self.visit_lines: dict[tuple[str, str], int] = {}
        self.measure_lines: dict[tuple[str, str, str], int] = {}
        self.fractures: dict[tuple[str, str], tuple[bool | None, int]] = {}
        self.procedures: dict[tuple[str, str], tuple[JsonObject, ...]] = {}
        self.encounters: dict[tuple[str, str], bool] = {}
        self._journal: list[tuple[dict[Any, Any], Any, Any]] = []

    def put(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        self._journal.append((mapping, key, mapping.get(key, _ABSENT)))
        mapping[key] = value

    def commit(self) -> None:
        self._journal.clear()

    def rollback(self) -> None:
        while self._journal:
            mapping, key, old = self._journal.pop()
            if old is _ABSENT:
                mapping.pop(key, None)
            else:
                mapping[key] = old


_ABSENT = object()


@dataclass
class _Counts:
    created: Counter[str] = field(default_factory=Counter)
    updated: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    imported: int = 0
    errors: list[RowError] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)


# --- the import ------------------------------------------------------------------------------


def import_table(
    svc: Services,
    stream: IO[bytes],
    fmt: str,
    *,
    study: str = builders.DEFAULT_STUDY_ID,
    create_study: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import the table in ``stream`` (``csv`` or ``ndjson``) into ``study``.

    The ResearchStudy must exist unless ``create_study`` (then it is created with the
    study's design, arms and conditions, when missing). Raises only for problems with
    the file as a whole (:class:`~kyphofhir.errors.Invalid`) or a missing study.
    """
    fmt = "ndjson" if fmt == "json" else fmt
    spec, windows = _mappings(svc.settings.mappings_path)
    report = ImportReport(study)
    svc.run(True, lambda uow: _ensure_study(svc, uow, study, create_study, report))
    importer = _Importer(svc, study, spec, windows, report)
    batch: list[RawRow] = []
    size = max(1, svc.settings.import_batch_rows)
    for item in read_rows(stream, fmt, known=spec.columns, progress=progress):
        report.rows_read += 1
        batch.append(item)
        if len(batch) >= size:
            importer.flush(batch)
            batch = []
    if batch:
        importer.flush(batch)
    report.issues.sort(key=lambda i: int(i.expression[0].split()[1]) if i.expression else 0)
    log.info("study import into %s: %s", study, report.summary())
    return report


def _ensure_study(
    svc: Services, uow: UnitOfWork, study: str, create: bool, report: ImportReport
) -> None:
    crud.check_id(study)
    current = uow.get("ResearchStudy", study)
    if current is not None and not current.deleted:
        report.unchanged["ResearchStudy"] += 1
        return
    if not create:
        raise NotFound(f"ResearchStudy/{study} does not exist; create it before importing.")
    crud.update(svc, uow, "ResearchStudy", study, builders.research_study(study))
    report.created["ResearchStudy"] += 1


class _Importer:
    def __init__(
        self,
        svc: Services,
        study: str,
        spec: TableSpec,
        windows: Windows,
        report: ImportReport,
    ) -> None:
        self.svc = svc
        self.study = study
        self.spec = spec
        self.windows = windows
        self.report = report
        self.state = _State()
        self.max_missing = svc.settings.odi_max_missing

    # -- batches

    def flush(self, batch: list[RawRow]) -> None:
        try:
            counts = self.svc.run(True, lambda uow: self._rows(uow, batch))
        except ServiceUnavailable:
            raise  # the database, not a row: stop the import
        except FhirError:
            self.state.rollback()
            for item in batch:  # redo one row per unit of work to find the bad one
                self._single(item)
            return
        self.state.commit()
        self._add(counts)

    def _single(self, item: RawRow) -> None:
        try:
            counts = self.svc.run(True, lambda uow: self._rows(uow, [item]))
        except ServiceUnavailable:
            raise
        except FhirError as exc:
            self.state.rollback()
            line = item[0]
            detail = "; ".join(i.diagnostics for i in exc.issues)
            where = (f"line {line}", *exc.expression)
            self.report.issues.append(
                Issue("error", exc.issue_code, f"line {line}: {detail}", where, exc.details_code)
            )
            return
        self.state.commit()
        self._add(counts)

    def _add(self, counts: _Counts) -> None:
        self.report.created.update(counts.created)
        self.report.updated.update(counts.updated)
        self.report.unchanged.update(counts.unchanged)
        self.report.rows_imported += counts.imported
        self.report.issues.extend(_row_issue(e) for e in counts.errors)
        self.report.issues.extend(counts.warnings)

    def _rows(self, uow: UnitOfWork, batch: list[RawRow]) -> _Counts:
        """Check and build every row of the batch (reads only), then write the result:
        a read between writes would make the store flush its batched inserts each time."""
        self.state.rollback()  # a retried unit of work starts from the committed state
        counts = _Counts()
        pending: dict[tuple[str, str], JsonObject] = {}
        for line, raw in batch:
            try:
                if isinstance(raw, RowError):
                    raise raw
                built = self._row(uow, counts, parse_row(self.spec, line, raw))
            except RowError as err:
                counts.errors.append(err)
            else:
                counts.imported += 1
                for resource in built:  # a later row's version of a resource wins
                    pending[(resource["resourceType"], resource["id"])] = resource
        self._write(uow, counts, list(pending.values()))
        return counts

    # -- rows: checks (RowError) and the resources to write; no writes here

    def _row(self, uow: UnitOfWork, counts: _Counts, row: Any) -> list[JsonObject]:
        if isinstance(row, SubjectRow):
            return self._subject(row)
        if isinstance(row, VisitRow):
            return self._visit(uow, counts, row)
        return self._vertebra(uow, counts, row)

    def _subject(self, row: SubjectRow) -> list[JsonObject]:
        st = self.state
        if (first := st.subject_lines.get(row.subject_id)) is not None:
            raise RowError(
                row.line, "subject_id", f"subject {row.subject_id} already enrolled on line {first}"
            )
        check_subject(row)
        s, sid = self.study, row.subject_id
        resources = [
            builders.patient(s, sid, sex=row.sex, birth_date=row.birth_date.isoformat()),
            builders.research_subject(
                s,
                sid,
                arm=row.arm,
                enrolled=row.enrolled.isoformat(),
                index_date=row.index_date.isoformat(),
                ended=_iso(row.ended),
            ),
            builders.myeloma_condition(s, sid, diagnosed=_iso(row.myeloma_diagnosed)),
        ]
        st.put(st.subject_lines, sid, row.line)
        st.put(st.subjects, sid, SubjectInfo(sid, row.arm, row.birth_date, row.index_date))
        return resources

    def _subject_info(self, uow: UnitOfWork, line: int, subject_id: str) -> SubjectInfo:
        """From an earlier row of the file, else from the store (an earlier import)."""
        known = self.state.subjects.get(subject_id)
        if known is not None:
            return known
        info = _stored_subject(uow, self.study, subject_id)
        if info is None:
            raise RowError(
                line,
                "subject_id",
                f"subject {subject_id} is not enrolled in study {self.study} "
                "(no subject row before this line, none in the store)",
            )
        self.state.put(self.state.subjects, subject_id, info)
        return info

    def _visit(self, uow: UnitOfWork, counts: _Counts, row: VisitRow) -> list[JsonObject]:
        st = self.state
        subject = self._subject_info(uow, row.line, row.subject_id)
        tp, warning = resolve_timepoint(row.line, row.timepoint, row.date, subject, self.windows)
        key = (row.subject_id, tp)
        if (first := st.visit_lines.get(key)) is not None:
            raise RowError(
                row.line,
                "timepoint",
                f"a second {tp} visit of subject {row.subject_id} (first on line {first})",
            )
        check_odi(row, self.max_missing)
        s, sid, when = self.study, row.subject_id, row.date.isoformat()
        resources = [builders.visit_encounter(s, sid, tp, arm=subject.arm, date=when)]
        if row.vas_mm is not None:
            resources.append(builders.vas_observation(s, sid, tp, date=when, value_mm=row.vas_mm))
        if row.odi_items is not None:
            resources.append(
                builders.odi_questionnaire_response(s, sid, tp, date=when, levels=row.odi_items)
            )
        elif row.odi is not None:
            resources.append(builders.odi_observation(s, sid, tp, date=when, percent=row.odi))
        if warning:
            counts.warnings.append(_warning(row.line, "date", warning))
        st.put(st.visit_lines, key, row.line)
        st.put(st.encounters, key, True)
        return resources

    def _vertebra(self, uow: UnitOfWork, counts: _Counts, row: VertebraRow) -> list[JsonObject]:
        st = self.state
        subject = self._subject_info(uow, row.line, row.subject_id)
        check_vertebra(row, subject)
        s, sid, level = self.study, row.subject_id, row.level
        fkey = (sid, level)
        seen = st.fractures.get(fkey)
        if seen is not None and None not in (seen[0], row.treated) and seen[0] != row.treated:
            raise RowError(
                row.line, "treated", f"treated contradicts line {seen[1]} for {sid} {level}"
            )
        tp = None
        if row.date is not None:
            tp, warning = resolve_timepoint(
                row.line, row.timepoint, row.date, subject, self.windows
            )
            if warning:
                counts.warnings.append(_warning(row.line, "date", warning))
            mkey = (sid, level, tp)
            if row.has_measurements and (first := st.measure_lines.get(mkey)) is not None:
                raise RowError(
                    row.line,
                    "timepoint",
                    f"second {tp} measurements of {sid} {level} (first on line {first})",
                )
        written = st.procedures.get(fkey)
        if row.treated and written and row.procedure_codings and written != row.procedure_codings:
            raise RowError(row.line, "cpt", "procedure codes contradict an earlier row")
        # checks done: write
        resources: list[JsonObject] = []
        if seen is None:
            resources.append(builders.fracture_condition(s, sid, level))
        treated = row.treated if row.treated is not None else (seen[0] if seen else None)
        stated_on = row.line if row.treated is not None else (seen[1] if seen else 0)
        st.put(st.fractures, fkey, (treated, stated_on))
        if row.treated and (written is None or (row.procedure_codings and not written)):
            codings = row.procedure_codings or _stored_codings(uow, s, sid, level)
            resources.append(
                builders.kyphoplasty_procedure(
                    s, sid, level, performed=subject.index_date.isoformat(), extra_codings=codings
                )
            )
            st.put(st.procedures, fkey, codings)
        if row.treated is False and seen is None:
            resources.extend(_withdrawn_procedure(uow, s, sid, level))
        if tp is not None and row.date is not None:
            when = row.date.isoformat()
            ekey = (sid, tp)
            if ekey not in st.encounters:
                enc = builders.visit_encounter(s, sid, tp, arm=subject.arm, date=when)
                existing = uow.get("Encounter", enc["id"])
                if existing is None or existing.deleted:
                    resources.append(enc)
                st.put(st.encounters, ekey, True)
            for measure, value in row.heights.items():
                resources.append(
                    builders.vertebral_height_observation(
                        s, sid, tp, level, measure, date=when, value_mm=value
                    )
                )
            if row.kyphosis_angle is not None:
                resources.append(
                    builders.kyphosis_angle_observation(
                        s, sid, tp, level, date=when, value_deg=row.kyphosis_angle
                    )
                )
            if row.has_measurements:
                st.put(st.measure_lines, (sid, level, tp), row.line)
        return resources

    # -- writing

    def _write(self, uow: UnitOfWork, counts: _Counts, resources: list[JsonObject]) -> None:
        """Write what differs from the store: all reads first, then all writes."""
        currents = [uow.get(r["resourceType"], r["id"]) for r in resources]
        for resource, current in zip(resources, currents, strict=True):
            rtype, rid = resource["resourceType"], resource["id"]
            if current is None:
                crud.create(self.svc, uow, rtype, resource, new_id=rid)
                counts.created[rtype] += 1
            elif current.deleted:
                crud.update(self.svc, uow, rtype, rid, resource)
                counts.created[rtype] += 1
            elif _same(current, resource):
                counts.unchanged[rtype] += 1
            else:
                crud.update(self.svc, uow, rtype, rid, resource)
                counts.updated[rtype] += 1


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value else None


def _same(stored: StoredResource, new: Mapping[str, Any]) -> bool:
    """Stored content equals ``new`` apart from the server's meta (versionId, lastUpdated)."""
    body = stored.json()
    meta = {k: v for k, v in (body.pop("meta", None) or {}).items() if k not in _SERVER_META}
    if meta:
        body["meta"] = meta
    return body == new


_SERVER_META = ("versionId", "lastUpdated")


def _stored_subject(uow: UnitOfWork, study: str, subject_id: str) -> SubjectInfo | None:
    """A subject enrolled by an earlier import (ResearchSubject + Patient of this study)."""
    key = builders.subject_key(study, subject_id)
    rs = uow.get("ResearchSubject", builders.resource_id("ResearchSubject", key))
    pat = uow.get("Patient", builders.resource_id("Patient", key))
    if rs is None or rs.deleted or pat is None or pat.deleted:
        return None
    rs_body, pat_body = rs.json(), pat.json()
    index = next(
        (
            e.get("valueDate")
            for e in rs_body.get("extension", ())
            if e.get("url") == codes.EXT_INDEX_DATE
        ),
        None,
    )
    arm = rs_body.get("assignedArm")
    try:
        birth = date.fromisoformat(pat_body["birthDate"])
        index_date = date.fromisoformat(index) if index else None
    except (KeyError, ValueError):
        return None
    if arm not in codes.ARMS or index_date is None:
        return None
    return SubjectInfo(subject_id, arm, birth, index_date)


def _withdrawn_procedure(
    uow: UnitOfWork, study: str, subject_id: str, level: str
) -> list[JsonObject]:
    """A corrected file says a vertebra was not treated: an earlier import's Procedure
    for it becomes ``entered-in-error`` (a new version; the history keeps the claim)."""
    rid = builders.resource_id("Procedure", builders.procedure_key(study, subject_id, level))
    current = uow.get("Procedure", rid)
    if current is None or current.deleted:
        return []
    body = current.json()
    if body.get("status") == "entered-in-error":
        return []
    body["status"] = "entered-in-error"
    body["meta"] = {"profile": [codes.structure_definition("kyphoplasty-procedure")]}
    return [body]


def _stored_codings(
    uow: UnitOfWork, study: str, subject_id: str, level: str
) -> tuple[JsonObject, ...]:
    """CPT/OPS codings of an earlier import's Procedure: a row without codes does not
    remove them (absent means "not stated"), so re-importing stays idempotent."""
    rid = builders.resource_id("Procedure", builders.procedure_key(study, subject_id, level))
    current = uow.get("Procedure", rid)
    if current is None or current.deleted:
        return ()
    coding = current.json().get("code", {}).get("coding", [])
    return tuple(c for c in coding if c.get("system") != codes.CS_TREATMENT)
