"""DICOM → FHIR: one received instance becomes FHIR work in one unit of work.

:func:`ingest` is what the DICOM receiver calls after an instance is durably in the
instance store and before it answers the C-STORE. In one database transaction it

1. makes sure the WADO-RS Endpoint exists (``Endpoint/dicomweb``);
2. finds the study's ImagingStudy by ``identifier=urn:dicom:uid|urn:oid:<uid>`` holding a
   lock on those criteria (the same lock a REST conditional create takes), so concurrent
   associations for one study are serialised and the last one sees every instance the
   others added: the counts are exact;
3. for a new study, resolves the patient (``imaging.patient``: Patient ID under the issuer's
   system; an unknown patient is created and tagged ``needs-reconciliation``);
4. merges the instance (``imaging.imaging_study``) and assigns the study to a protocol
   timepoint: TID 1502 of an SR in the study, else the study date against the windows of
   ``mappings/timepoints.json`` from the subject's index date; the visit Encounter of that
   timepoint becomes ``ImagingStudy.encounter`` (created when the subject has none yet);
   a date in no window is kept and tagged ``outside-window``;
5. for a TID 1500 SR, writes one Observation per measurement (``imaging.sr``), each found
   again by its identifier so a re-sent SR changes nothing, linked to the fracture
   Condition of its vertebra (never created here) and to the visit Encounter.

A database outage raises :class:`ServiceUnavailable` (the receiver answers 0xA700).
:func:`reconcile` merges a Patient created from DICOM into the right one.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta, timezone, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from kyphofhir.config import Settings
from kyphofhir.errors import Invalid, Unprocessable
from kyphofhir.fhir.models import validate_resource
from kyphofhir.imaging import imaging_study, mappings, patient, sr
from kyphofhir.imaging.values import parse_da
from kyphofhir.search.params import parse_query
from kyphofhir.services import crud
from kyphofhir.services.context import Services
from kyphofhir.store.base import StoredResource, UnitOfWork
from kyphofhir.store.instances import InstanceStore, StoredInstance, is_uid
from kyphofhir.study import builders, codes
from kyphofhir.study.timepoints import Windows, load_windows

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

__all__ = [
    "IngestResult",
    "ReconcileResult",
    "ingest",
    "ingest_dataset",
    "ingest_many",
    "reconcile",
]


# --- configuration derived from the settings ------------------------------------------


@dataclass(frozen=True)
class ImagingConfig:
    mappings: mappings.DicomMappings
    windows: Windows | None
    zone: tzinfo | None
    default_system: str
    issuer_systems: dict[str, str]


def parse_zone(value: str) -> tzinfo | None:
    """``dicom_timezone``: empty = the server's local zone (None), ``+HH:MM`` or IANA."""
    value = value.strip()
    if not value:
        return None
    if value[0] in "+-" and len(value) == 6 and value[3] == ":":
        sign = -1 if value[0] == "-" else 1
        return timezone(sign * timedelta(hours=int(value[1:3]), minutes=int(value[4:6])))
    try:
        return zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"dicom_timezone: unknown time zone {value!r}") from exc


@lru_cache(maxsize=8)
def config(settings: Settings) -> ImagingConfig:
    """The mapping tables and parsed settings (once per settings object)."""
    folder = settings.mappings_path
    try:
        windows: Windows | None = load_windows(folder)
    except (OSError, ValueError) as exc:
        log.warning("no timepoint windows (%s): imaging studies get no timepoint", exc)
        windows = None
    return ImagingConfig(
        mappings=mappings.load(folder),
        windows=windows,
        zone=parse_zone(settings.dicom_timezone),
        default_system=settings.dicom_patient_id_system or codes.SID_DICOM_PATIENT_ID,
        issuer_systems=patient.parse_issuer_systems(settings.dicom_issuer_systems),
    )


def dicomweb_base(settings: Settings) -> str:
    """The public DICOMweb base: ``base_url`` with ``/fhir`` replaced by ``/dicomweb``,
    else ``http://host:port/dicomweb``."""
    if settings.base_url:
        root = settings.base_url.rstrip("/")
        if root.endswith("/fhir"):
            root = root[: -len("/fhir")]
        return f"{root}/dicomweb"
    return f"http://{settings.host}:{settings.port}/dicomweb"


def instance_store(settings: Settings) -> InstanceStore:
    """The on-disk instance store of the service (``<data_dir>/dicom``)."""
    return InstanceStore.for_data_dir(settings.data_dir)


# --- ingest ------------------------------------------------------------------------------


@dataclass
class IngestResult:
    """What one instance did to the FHIR store (for logs and tests)."""

    imaging_study: str
    study_created: bool = False
    study_changed: bool = False
    patient_created: bool = False
    timepoint: str | None = None
    outside_window: bool = False
    observations_created: int = 0
    observations_updated: int = 0
    observations_unchanged: int = 0
    warnings: list[str] = field(default_factory=list)


def ingest(svc: Services, stored: StoredInstance) -> None:
    """Index one stored instance (the receiver's hook; see the module docstring)."""
    result = ingest_dataset(svc, stored.dataset)
    log.debug(
        "indexed %s into ImagingStudy/%s (created=%s, observations +%d ~%d)",
        stored.sop_instance_uid,
        result.imaging_study,
        result.study_created,
        result.observations_created,
        result.observations_updated,
    )


def ingest_dataset(svc: Services, ds: Dataset) -> IngestResult:
    """:func:`ingest` for a data set (read without pixel data) that is already stored."""
    return ingest_datasets(svc, [ds])[0]


def ingest_many(svc: Services, stored: Sequence[StoredInstance]) -> list[IngestResult]:
    """Index several stored instances in **one** unit of work (all or nothing).

    For a receiver that commits instances in groups (a queue drained in batches, or the
    instances that arrived while the previous transaction ran): each study's ImagingStudy
    is read, merged with all its new instances and written once, so a group costs about
    what one instance does. One result per study, in order of first appearance.
    """
    return ingest_datasets(svc, [s.dataset for s in stored])


def ingest_datasets(svc: Services, datasets: Sequence[Dataset]) -> list[IngestResult]:
    cfg = config(svc.settings)
    by_study: dict[str, list[tuple[Dataset, sr.MeasurementReport | None]]] = {}
    for ds in datasets:
        report = (
            sr.read_report(ds, cfg.mappings.sr_measures, cfg.zone)
            if sr.is_measurement_report(ds)
            else None
        )  # parsed before the transaction: no database lock is held meanwhile
        by_study.setdefault(str(ds.StudyInstanceUID), []).append((ds, report))
    return svc.run(
        True, lambda uow: [_ingest(svc, uow, uid, items, cfg) for uid, items in by_study.items()]
    )


def _escape(value: str) -> str:
    """A token search value with FHIR's escapes (``\\,`` ``\\|`` ``\\$``)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("|", "\\|").replace("$", "\\$")


def _token_criteria(param: str, system: str, value: str) -> str:
    return urlencode([(param, f"{_escape(system)}|{_escape(value)}")])


def _ingest(
    svc: Services,
    uow: UnitOfWork,
    study_uid: str,
    items: list[tuple[Dataset, sr.MeasurementReport | None]],
    cfg: ImagingConfig,
) -> IngestResult:
    """All FHIR work for instances of one study (one or more) inside ``uow``."""
    found = crud.single_match(
        svc,
        uow,
        "ImagingStudy",
        imaging_study.identifier_criteria(study_uid),
        what="DICOM ingest",
        details_code="MSG_CREATE_MULTIPLE_MATCHES",
    )
    current = uow.get("ImagingStudy", found.id, for_update=True) if found else None
    study = current.json() if current is not None else None
    result = IngestResult(imaging_study=current.id if current else "")
    first = items[0][0]
    if study is None:
        endpoint_ref = _ensure_endpoint(svc, uow)  # a new study: the Endpoint may be new too
        subject, result.patient_created = _patient(svc, uow, first, cfg)
    else:
        endpoint_ref = {"reference": f"Endpoint/{imaging_study.ENDPOINT_ID}"}
        subject = dict(study.get("subject") or {})
    body: JsonObject | None = study
    for ds, _report in items:
        body = imaging_study.merge_instance(
            body,
            ds,
            subject=subject,
            body_parts=cfg.mappings.body_parts,
            endpoint_ref=endpoint_ref,
            zone=cfg.zone,
        )
    assert body is not None
    reports = [report for _ds, report in items if report is not None]
    assignment: Assignment | None = None
    if study is None or reports:
        sr_timepoint = next(
            (tp for r in reports if (tp := r.timepoint(cfg.mappings.sr_measures))), None
        )
        assignment = assign(svc, uow, subject, _study_date(body), sr_timepoint, cfg)
        assignment.apply(body)
        result.timepoint = assignment.timepoint
        result.outside_window = assignment.outside_window
    if current is None:
        written = crud.create(svc, uow, "ImagingStudy", body)
        result.imaging_study = written.stored.id
        result.study_created = result.study_changed = True
    elif body != study:
        # The stored version was checked against R4 when it was written; only what these
        # instances add is checked again, so a study's 500th instance costs what its 2nd
        # did (the whole ImagingStudy grows with every instance).
        for ds, _report in items:
            validate_resource(imaging_study.instance_fragment(body, ds))
        crud.write_checked(
            svc, uow, "ImagingStudy", current.id, {**body, "id": current.id}, current
        )
        result.study_changed = True
    if reports and assignment is not None:
        links = _Links(svc, uow, subject, result.imaging_study, study_uid, assignment)
        for report in reports:
            write_observations(svc, uow, report, links, result)
    return result


def _study_date(body: JsonObject) -> date | None:
    started = str(body.get("started") or "")
    return parse_da(started[:10].replace("-", "")) if len(started) >= 10 else None


def _ensure_endpoint(svc: Services, uow: UnitOfWork) -> JsonObject:
    """``Endpoint/dicomweb``, created on first use; an existing one is left as it is (an
    administrator may have corrected its address)."""
    rid = imaging_study.ENDPOINT_ID
    current = uow.get("Endpoint", rid)
    if current is None or current.deleted:
        crud.update(svc, uow, "Endpoint", rid, imaging_study.endpoint(dicomweb_base(svc.settings)))
    return {"reference": f"Endpoint/{rid}"}


# --- patient -----------------------------------------------------------------------------


def _patient(
    svc: Services, uow: UnitOfWork, ds: Dataset, cfg: ImagingConfig
) -> tuple[JsonObject, bool]:
    """(reference to the study's Patient, whether it was created)."""
    key = patient.patient_key(
        ds, default_system=cfg.default_system, issuer_systems=cfg.issuer_systems
    )
    if key is None:
        log.warning("instance without Patient ID: a new Patient is created for its study")
        written = crud.create(svc, uow, "Patient", patient.new_patient(ds, None))
        return {"reference": f"Patient/{written.stored.id}"}, True
    criteria = _token_criteria("identifier", key.system, key.value)
    uow.lock(f"Patient?{criteria}")  # the key of a REST conditional create on the same
    found = find_patient(svc, uow, criteria)
    if found is not None:
        return {"reference": f"Patient/{found}"}, False
    written = crud.create(svc, uow, "Patient", patient.new_patient(ds, key))
    return {"reference": f"Patient/{written.stored.id}"}, True


def find_patient(svc: Services, uow: UnitOfWork, criteria: str) -> str | None:
    """The id of the live Patient the identifier belongs to, following ``replaced-by``
    links of merged (inactive) Patients; with several candidates the active ones win,
    then the lowest id (logged: the identifier is ambiguous)."""
    candidates: dict[str, bool] = {}
    for match in crud.matches(svc, uow, "Patient", criteria, limit=20):
        resolved = _follow_replaced(uow, match)
        if resolved is not None:
            candidates[resolved.id] = resolved.json().get("active") is not False
    if not candidates:
        return None
    active = sorted(rid for rid, is_active in candidates.items() if is_active)
    pick = active or sorted(candidates)
    if len(pick) > 1:
        log.warning("DICOM Patient ID matches %d patients; using Patient/%s", len(pick), pick[0])
    return pick[0]


def _follow_replaced(uow: UnitOfWork, start: StoredResource) -> StoredResource | None:
    current: StoredResource | None = start
    for _ in range(5):  # a chain of merges; a cycle ends here
        if current is None or current.deleted:
            return None
        body = current.json()
        if body.get("active") is not False:
            return current
        target = next(
            (
                str(link.get("other", {}).get("reference", ""))
                for link in body.get("link") or []
                if link.get("type") == "replaced-by"
            ),
            "",
        )
        if not target.startswith("Patient/"):
            return current
        current = uow.get("Patient", target.split("/", 1)[1])
    return current


# --- timepoint assignment ----------------------------------------------------------------


@dataclass(frozen=True)
class Enrolment:
    """The subject's participation in a study (from its ResearchSubject)."""

    study_id: str
    subject_key: str  # the study-subject id (``<study>/<subject>`` minus the study)
    arm: str | None
    index_date: date | None


@dataclass
class Assignment:
    """Where an imaging study belongs in the protocol."""

    enrolment: Enrolment | None = None
    timepoint: str | None = None
    encounter: JsonObject | None = None
    outside_window: bool = False

    @property
    def research_study(self) -> JsonObject | None:
        if self.enrolment is None:
            return None
        return builders.study_ref(self.enrolment.study_id)

    def apply(self, body: JsonObject) -> None:
        """Set (or clear) ``encounter`` and the ``outside-window`` tag of a resource. An
        enrolled subject's study outside every window loses a visit it had; a subject in no
        study leaves ``encounter`` as it is (it may have been set by hand)."""
        if self.encounter:
            body["encounter"] = self.encounter
        elif self.enrolment is not None:
            body.pop("encounter", None)
        meta = body.get("meta") or {}
        tags = [
            t
            for t in meta.get("tag") or []
            if (t.get("system"), t.get("code"))
            != (codes.TAG_OUTSIDE_WINDOW["system"], codes.TAG_OUTSIDE_WINDOW["code"])
        ]
        if self.outside_window:
            tags.append(dict(codes.TAG_OUTSIDE_WINDOW))
        if tags:
            body["meta"] = {**meta, "tag": tags}
        elif "tag" in meta:
            rest = {k: v for k, v in meta.items() if k != "tag"}
            if rest:
                body["meta"] = rest
            else:
                body.pop("meta", None)


def assign(
    svc: Services,
    uow: UnitOfWork,
    subject: JsonObject,
    when: date | None,
    sr_timepoint: str | None,
    cfg: ImagingConfig,
) -> Assignment:
    """The protocol timepoint of an imaging study of ``subject`` taken on ``when``.

    Not enrolled (no ResearchSubject): no timepoint, not flagged. Enrolled: TID 1502's
    timepoint, else the window holding the date; none → ``outside_window``.
    """
    enrolment = _enrolment(svc, uow, subject)
    if enrolment is None:
        return Assignment()
    timepoint = sr_timepoint
    if (
        timepoint is None
        and when is not None
        and enrolment.index_date is not None
        and enrolment.arm is not None
        and cfg.windows is not None
        and enrolment.arm in cfg.windows.by_arm
    ):
        timepoint = cfg.windows.assign(enrolment.arm, enrolment.index_date, when)
    if timepoint is None:
        return Assignment(enrolment=enrolment, outside_window=True)
    encounter = _visit(svc, uow, subject, enrolment, timepoint, when)
    return Assignment(enrolment=enrolment, timepoint=timepoint, encounter=encounter)


def _search_all(
    svc: Services, uow: UnitOfWork, rtype: str, items: list[tuple[str, str]], limit: int = 100
) -> Iterator[StoredResource]:
    query = parse_query(svc.registry, rtype, items, default_count=limit, max_count=limit)
    cursor: str | None = None
    while True:
        page = uow.search(query, cursor)
        yield from page.items
        cursor = page.next_cursor
        if not cursor:
            return


def _enrolment(svc: Services, uow: UnitOfWork, subject: JsonObject) -> Enrolment | None:
    reference = str(subject.get("reference") or "")
    if not reference.startswith("Patient/"):
        return None
    for found in _search_all(svc, uow, "ResearchSubject", [("individual", reference)], 10):
        body = found.json()
        if body.get("status") in ("withdrawn", "ineligible", "not-registered"):
            continue
        study_id = str((body.get("study") or {}).get("reference", "")).removeprefix(
            "ResearchStudy/"
        )
        if not study_id or "/" in study_id:
            continue
        index = next(
            (
                parse_da(str(e.get("valueDate", "")).replace("-", ""))
                for e in body.get("extension") or []
                if e.get("url") == codes.EXT_INDEX_DATE
            ),
            None,
        )
        key = next(
            (
                str(i.get("value", ""))
                for i in body.get("identifier") or []
                if i.get("system") == codes.SID_RESEARCH_SUBJECT
            ),
            "",
        )
        subject_key = (
            key.split("/", 1)[1]
            if key.startswith(f"{study_id}/")
            else reference.removeprefix("Patient/")
        )
        arm = body.get("assignedArm")
        return Enrolment(study_id, subject_key, arm if isinstance(arm, str) else None, index)
    return None


def _visit(
    svc: Services,
    uow: UnitOfWork,
    subject: JsonObject,
    enrolment: Enrolment,
    timepoint: str,
    when: date | None,
) -> JsonObject:
    """The visit Encounter of ``timepoint``: the subject's existing one (``type`` = the
    timepoint code), else created with the study import's deterministic id, so a later
    import of that visit updates the same Encounter."""
    items = [
        ("subject", str(subject["reference"])),
        ("type", f"{codes.CS_TIMEPOINT}|{timepoint}"),
    ]
    uow.lock(f"Encounter?{urlencode(sorted(items))}")
    for found in _search_all(svc, uow, "Encounter", items, 1):
        return {"reference": f"Encounter/{found.id}"}
    body = builders.visit_encounter(
        enrolment.study_id,
        enrolment.subject_key,
        timepoint,
        arm=enrolment.arm or "",  # only adds the pre-/post-operative codings for bkp
        date=when.isoformat() if when else None,
    )
    body["subject"] = dict(subject)
    existing = uow.get("Encounter", body["id"])
    if existing is None or existing.deleted:
        crud.update(svc, uow, "Encounter", body["id"], body)
    return {"reference": f"Encounter/{body['id']}"}


# --- SR Observations ---------------------------------------------------------------------


class _Links:
    """References the Observations of one report share, and the fracture lookups."""

    def __init__(
        self,
        svc: Services,
        uow: UnitOfWork,
        subject: JsonObject,
        study_id: str,
        study_uid: str,
        assignment: Assignment,
    ) -> None:
        self.svc = svc
        self.uow = uow
        self.subject = subject
        self.study_id = study_id
        self.study_uid = study_uid
        self.assignment = assignment
        self._fractures: dict[str, JsonObject | None] = {}

    def fracture(self, level: str | None) -> JsonObject | None:
        """The subject's pathological fracture Condition at ``level``, if recorded."""
        if level is None or level not in codes.VERTEBRAE:
            return None
        if level not in self._fractures:
            items = [
                ("subject", str(self.subject.get("reference", ""))),
                ("code", f"{codes.SNOMED}|{codes.PATHOLOGICAL_FRACTURE['code']}"),
                ("body-site", f"{codes.SNOMED}|{codes.VERTEBRAE[level]}"),
            ]
            found = next(_search_all(self.svc, self.uow, "Condition", items, 1), None)
            self._fractures[level] = {"reference": f"Condition/{found.id}"} if found else None
        return self._fractures[level]

    def of(self, m: sr.Measurement) -> sr.Links:
        return sr.Links(
            subject=self.subject,
            imaging_study={"reference": f"ImagingStudy/{self.study_id}"},
            study_uid=self.study_uid,
            encounter=self.assignment.encounter,
            focus=self.fracture(m.level),
            research_study=self.assignment.research_study,
            outside_window=self.assignment.outside_window,
        )


def _comparable(body: JsonObject) -> JsonObject:
    meta = {k: v for k, v in (body.get("meta") or {}).items() if k in ("profile", "tag")}
    out = {k: v for k, v in body.items() if k not in ("id", "meta")}
    if meta:
        out["meta"] = meta
    return out


def write_observations(
    svc: Services,
    uow: UnitOfWork,
    report: sr.MeasurementReport,
    links: _Links,
    result: IngestResult,
) -> None:
    """Create or update the Observation of every measurement of ``report``."""
    for m in report.measurements:
        body = sr.observation(report, m, links.of(m))
        key = sr.key_identifier(report, m)
        existing = crud.single_match(
            svc,
            uow,
            "Observation",
            _token_criteria("identifier", key["system"], key["value"]),
            what="SR measurement",
            details_code="MSG_CREATE_MULTIPLE_MATCHES",
        )
        if existing is not None and _comparable(existing.json()) == _comparable(body):
            result.observations_unchanged += 1
            continue
        try:
            _write_observation(svc, uow, existing, body)
        except Unprocessable as exc:
            if "profile" not in (body.get("meta") or {}):
                raise
            # the claimed study profile refused it (a value out of its range): keep the
            # measurement without the claim rather than lose it
            msg = f"{key['value']}: stored without its profile: {exc.diagnostics}"
            log.warning("SR measurement %s", msg)
            result.warnings.append(msg)
            body["meta"] = {k: v for k, v in body["meta"].items() if k != "profile"}
            if not body["meta"]:
                del body["meta"]
            _write_observation(svc, uow, existing, body)
        if existing is None:
            result.observations_created += 1
        else:
            result.observations_updated += 1


def _write_observation(
    svc: Services, uow: UnitOfWork, existing: StoredResource | None, body: JsonObject
) -> None:
    if existing is None:
        crud.create(svc, uow, "Observation", body)
    else:
        crud.update(svc, uow, "Observation", existing.id, {**body, "id": existing.id})


# --- reconcile ---------------------------------------------------------------------------


@dataclass
class ReconcileResult:
    source: str
    target: str
    imaging_studies: int = 0
    observations: int = 0


def reconcile(svc: Services, source_id: str, target_id: str) -> ReconcileResult:
    """Merge ``Patient/<source_id>`` (typically created from DICOM and tagged
    ``needs-reconciliation``) into ``Patient/<target_id>``, in one unit of work:

    - every ImagingStudy and Observation of the source gets the target as subject; the
      studies are assigned to the target's timepoints again and the Observations of their
      SR documents (read again from the instance store) get encounter, fracture focus and
      profile as if they had been received for the target;
    - the source becomes ``active: false`` with ``link`` replaced-by → target, loses the
      ``needs-reconciliation`` tag; the target gets ``link`` replaces → source and the
      source's identifiers it lacks (so the next instance with that Patient ID finds it).
    """
    return svc.run(True, lambda uow: _reconcile(svc, uow, source_id, target_id))


def _reconcile(svc: Services, uow: UnitOfWork, source_id: str, target_id: str) -> ReconcileResult:
    if source_id == target_id:
        raise Invalid("A Patient cannot be merged into itself.", details_code="MSG_PARAM_INVALID")
    source = crud.read(svc, uow, "Patient", source_id).json()
    target = crud.read(svc, uow, "Patient", target_id).json()
    if target.get("active") is False:
        raise Unprocessable(
            f"Patient/{target_id} is inactive (merged into another patient); merge into "
            "the patient it was replaced by.",
        )
    result = ReconcileResult(source_id, target_id)
    source_ref = f"Patient/{source_id}"
    target_subject = {"reference": f"Patient/{target_id}"}
    cfg = config(svc.settings)
    store = instance_store(svc.settings)

    source_links = [dict(link) for link in source.get("link") or []]
    source_links.append({"other": target_subject, "type": "replaced-by"})
    source["link"] = source_links
    source["active"] = False
    meta = source.get("meta") or {}
    tags = [
        t
        for t in meta.get("tag") or []
        if (t.get("system"), t.get("code"))
        != (
            codes.TAG_NEEDS_RECONCILIATION["system"],
            codes.TAG_NEEDS_RECONCILIATION["code"],
        )
    ]
    source["meta"] = {
        **{k: v for k, v in meta.items() if k != "tag"},
        **({"tag": tags} if tags else {}),
    }
    crud.update(svc, uow, "Patient", source_id, source)

    known = {(i.get("system"), i.get("value")) for i in target.get("identifier") or []}
    extra = [
        {k: v for k, v in i.items() if k in ("system", "value", "assigner", "type")}
        for i in source.get("identifier") or []
        if (i.get("system"), i.get("value")) not in known
    ]
    target_links = [dict(link) for link in target.get("link") or []]
    target_links.append({"other": {"reference": source_ref}, "type": "replaces"})
    target["link"] = target_links
    if extra:
        target["identifier"] = [*(target.get("identifier") or []), *extra]
    crud.update(svc, uow, "Patient", target_id, target)

    for found in list(_search_all(svc, uow, "ImagingStudy", [("subject", source_ref)])):
        study = found.json()
        study["subject"] = dict(target_subject)
        reports = list(_stored_reports(store, study, cfg))
        sr_timepoint = next(
            (tp for r in reports if (tp := r.timepoint(cfg.mappings.sr_measures))), None
        )
        assignment = assign(svc, uow, target_subject, _study_date(study), sr_timepoint, cfg)
        assignment.apply(study)
        crud.update(svc, uow, "ImagingStudy", found.id, study)
        result.imaging_studies += 1
        uid = next(
            (
                str(i["value"]).removeprefix("urn:oid:")
                for i in study.get("identifier") or []
                if i.get("system") == codes.DICOM_UID
            ),
            "",
        )
        links = _Links(svc, uow, target_subject, found.id, uid, assignment)
        counts = IngestResult(imaging_study=found.id)
        for report in reports:
            write_observations(svc, uow, report, links, counts)
        result.observations += counts.observations_created + counts.observations_updated

    for found in list(_search_all(svc, uow, "Observation", [("subject", source_ref)])):
        body = found.json()
        body["subject"] = dict(target_subject)
        crud.update(svc, uow, "Observation", found.id, body)
        result.observations += 1
    return result


def _stored_reports(
    store: InstanceStore, study: JsonObject, cfg: ImagingConfig
) -> Iterator[sr.MeasurementReport]:
    """The TID 1500 reports among a study's instances, read again from the store."""
    uid = next(
        (
            str(i["value"]).removeprefix("urn:oid:")
            for i in study.get("identifier") or []
            if i.get("system") == codes.DICOM_UID
        ),
        "",
    )
    for series in study.get("series") or []:
        for inst in series.get("instance") or []:
            sop_class = str((inst.get("sopClass") or {}).get("code", "")).removeprefix("urn:oid:")
            if sop_class not in sr.SR_STORAGE_CLASSES:
                continue
            path = store.instance_path(uid, str(series.get("uid")), str(inst.get("uid")))
            if path is None:
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except (InvalidDicomError, OSError, ValueError) as exc:
                log.warning("SR %s not read again: %s", path, exc)
                continue
            report = sr.read_report(ds, cfg.mappings.sr_measures, cfg.zone)
            if report is not None:
                yield report


# --- WADO-RS support ---------------------------------------------------------------------


def valid_uid(value: str) -> bool:
    """A UID the instance store can hold (digits and dots, at most 64 characters)."""
    return is_uid(value)


def study_files(svc: Services, study_uid: str, series_uid: str | None = None) -> list[Path]:
    """Instance files of a study or series, in store order (empty if unknown)."""
    return instance_store(svc.settings).instances(study_uid, series_uid)


def instance_file(svc: Services, study_uid: str, series_uid: str, sop_uid: str) -> Path | None:
    return instance_store(svc.settings).instance_path(study_uid, series_uid, sop_uid)
