"""DICOM instances → one FHIR R4 ImagingStudy per study (``shared/terminology.md`` §10). Pure.

:func:`merge_instance` adds one instance (its data set, read without pixel data) to an
ImagingStudy, or starts one. It is idempotent (an instance already listed changes nothing)
and independent of arrival order: series are sorted by number then UID, instances likewise,
and study-level elements are taken from the first instance that has them. Counts are
recounted from the lists every time, so they are exact whatever order instances come in.

UIDs: the study identifier is ``urn:dicom:uid`` / ``urn:oid:<StudyInstanceUID>``;
``series.uid`` and ``instance.uid`` are plain UIDs (R4 ``id``-like ``uid`` type), and
``instance.sopClass`` is ``urn:ietf:rfc:3986`` / ``urn:oid:<SOPClassUID>``.
"""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from pydicom import Dataset
from pydicom.sr._concepts_dict import concepts as _dicom_concepts

from kyphofhir.imaging import values
from kyphofhir.imaging.mappings import BodyParts
from kyphofhir.study import codes

JsonObject = dict[str, Any]

ENDPOINT_ID = "dicomweb"
"""The id of the one Endpoint (WADO-RS) every ImagingStudy points at."""

# R4 example binding bodysite-laterality (SNOMED CT)
LATERALITY = {
    "L": codes.coding(codes.SNOMED, "419161000", "Unilateral left"),
    "R": codes.coding(codes.SNOMED, "419465000", "Unilateral right"),
    "B": codes.coding(codes.SNOMED, "51440002", "Bilateral"),
}


def _dcm_displays() -> dict[str, str]:
    """DCM code → meaning from pydicom's copy of PS3.16 (modality displays)."""
    table: Any = _dicom_concepts.get("DCM", {})
    return {
        code: str(meaning) for entry in table.values() for code, (meaning, _cids) in entry.items()
    }


_DCM_DISPLAY = _dcm_displays()


def modality_coding(modality: str) -> JsonObject:
    """A modality as a DICOM ``DCM`` Coding (CID 29/33 meaning as display when known)."""
    return codes.coding(codes.DCM, modality, _DCM_DISPLAY.get(modality))


def study_identifier(study_uid: str) -> JsonObject:
    return values.dicom_uid_identifier(study_uid)


def identifier_criteria(study_uid: str) -> str:
    """The conditional search that finds the ImagingStudy of ``study_uid``."""
    return f"identifier={codes.DICOM_UID}|urn:oid:{study_uid}"


def endpoint(address: str) -> JsonObject:
    """The DICOMweb WADO-RS Endpoint; ``address`` is the ``/dicomweb`` base URL."""
    return {
        "resourceType": "Endpoint",
        "id": ENDPOINT_ID,
        "status": "active",
        "connectionType": codes.coding(
            codes.ENDPOINT_CONNECTION_TYPE, "dicom-wado-rs", "DICOM WADO-RS"
        ),
        "name": "kyphofhir DICOMweb (WADO-RS)",
        "payloadType": [
            {
                "coding": [codes.coding(codes.ENDPOINT_PAYLOAD_TYPE, "any", "Any")],
                "text": "DICOM WADO-RS",
            }
        ],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def _issuer_system(seq: Any) -> tuple[str | None, str | None]:
    """(system URI, display) of an HL7v2 Hierarchic Designator macro item."""
    if not seq:
        return None, None
    item = seq[0]
    universal = values.text(item, "UniversalEntityID")
    kind = (values.text(item, "UniversalEntityIDType") or "").upper()
    local = values.text(item, "LocalNamespaceEntityID")
    if universal and kind == "ISO" and values.is_uid(universal):
        return f"urn:oid:{universal}", local
    if universal and kind in ("URI", "URL") and ":" in universal:
        return universal, local
    if universal and kind == "UUID":
        return f"urn:uuid:{universal.lower()}", local
    return None, local or universal


def _accession(ds: Dataset) -> JsonObject | None:
    number = values.text(ds, "AccessionNumber")
    if not number:
        return None
    out: JsonObject = {"type": {"coding": [dict(codes.ACCESSION_TYPE)]}}
    system, issuer = _issuer_system(ds.get("IssuerOfAccessionNumberSequence"))
    if system:
        out["system"] = system
    out["value"] = number
    if issuer:
        out["assigner"] = {"display": issuer}
    return out


def _study_elements(ds: Dataset, zone: tzinfo | None) -> JsonObject:
    """Study-level elements of one instance (absent attributes give no element)."""
    out: JsonObject = {}
    started = values.fhir_datetime(
        values.text(ds, "StudyDate"),
        values.text(ds, "StudyTime"),
        values.text(ds, "TimezoneOffsetFromUTC"),
        zone,
    )
    if started:
        out["started"] = started
    procedure = values.concept(ds.get("ProcedureCodeSequence"))
    if procedure:
        out["procedureCode"] = [procedure]
    referrer = values.name_display(ds.get("ReferringPhysicianName"))
    if referrer:
        out["referrer"] = {"display": referrer}
    description = values.text(ds, "StudyDescription")
    if description:
        out["description"] = description
    return out


def new_study(
    ds: Dataset, *, subject: JsonObject, endpoint_ref: JsonObject | None, zone: tzinfo | None
) -> JsonObject:
    """An ImagingStudy without series yet, from the study-level attributes of ``ds``."""
    identifiers = [study_identifier(str(ds.StudyInstanceUID))]
    accession = _accession(ds)
    if accession:
        identifiers.append(accession)
    out: JsonObject = {
        "resourceType": "ImagingStudy",
        "identifier": identifiers,
        "status": "available",
        "subject": subject,
    }
    out.update(_study_elements(ds, zone))
    if endpoint_ref:
        out["endpoint"] = [endpoint_ref]
    return out


def instance_title(ds: Dataset) -> str | None:
    """An SR/KO document title (root concept name) or an encapsulated document's title."""
    names = ds.get("ConceptNameCodeSequence")
    if names:
        meaning = values.text(names[0], "CodeMeaning")
        if meaning:
            return meaning
    return values.text(ds, "DocumentTitle")


def _series(ds: Dataset, body_parts: BodyParts, zone: tzinfo | None) -> JsonObject:
    out: JsonObject = {"uid": str(ds.SeriesInstanceUID)}
    number = values.integer(ds, "SeriesNumber")
    if number is not None and number >= 0:
        out["number"] = number
    out["modality"] = modality_coding(values.text(ds, "Modality") or "OT")
    description = values.text(ds, "SeriesDescription")
    if description:
        out["description"] = description
    site = body_parts.coding(values.text(ds, "BodyPartExamined"))
    if site:
        out["bodySite"] = site
    side = (values.text(ds, "Laterality") or values.text(ds, "ImageLaterality") or "").upper()
    if side in LATERALITY:
        out["laterality"] = dict(LATERALITY[side])
    started = values.fhir_datetime(
        values.text(ds, "SeriesDate"),
        values.text(ds, "SeriesTime"),
        values.text(ds, "TimezoneOffsetFromUTC"),
        zone,
    )
    if started:
        out["started"] = started
    return out


def _instance(ds: Dataset) -> JsonObject:
    out: JsonObject = {
        "uid": str(ds.SOPInstanceUID),
        "sopClass": {"system": codes.URI_SYSTEM, "code": f"urn:oid:{ds.SOPClassUID}"},
    }
    number = values.integer(ds, "InstanceNumber")
    if number is not None and number >= 0:
        out["number"] = number
    title = instance_title(ds)
    if title:
        out["title"] = title
    return out


def _order(item: JsonObject) -> tuple[int, int, str]:
    number = item.get("number")
    return (0, number, item["uid"]) if isinstance(number, int) else (1, 0, item["uid"])


def contains(study: JsonObject, sop_instance_uid: str) -> bool:
    return any(
        inst.get("uid") == sop_instance_uid
        for series in study.get("series") or []
        for inst in series.get("instance") or []
    )


def merge_instance(
    study: JsonObject | None,
    ds: Dataset,
    *,
    subject: JsonObject,
    body_parts: BodyParts,
    endpoint_ref: JsonObject | None = None,
    zone: tzinfo | None = None,
) -> JsonObject:
    """``study`` with the instance ``ds`` added (a new ImagingStudy when ``study`` is None).

    Returns a new dict and never modifies ``study``: compare the two to know whether
    anything changed. Unchanged series are shared with ``study`` rather than copied, so
    adding an instance costs the same for the 2nd and the 500th. The subject of an
    existing study is kept (``subject`` only starts a new one).
    """
    if study is None:
        body = new_study(ds, subject=subject, endpoint_ref=endpoint_ref, zone=zone)
    else:
        body = dict(study)
        for key, value in _study_elements(ds, zone).items():
            body.setdefault(key, value)
        if endpoint_ref and not body.get("endpoint"):
            body["endpoint"] = [endpoint_ref]
        identifiers = list(body.get("identifier") or [])
        if not any(i.get("type") for i in identifiers):
            accession = _accession(ds)
            if accession:
                body["identifier"] = [*identifiers, accession]
    series_list = list(body.get("series") or [])
    if not contains(body, str(ds.SOPInstanceUID)):
        series_uid = str(ds.SeriesInstanceUID)
        fresh = _series(ds, body_parts, zone)
        index = next((n for n, s in enumerate(series_list) if s.get("uid") == series_uid), None)
        if index is None:
            series = fresh
            series_list.append(series)
        else:
            series = {**fresh, **series_list[index]}  # what it had wins, gaps are filled
            series_list[index] = series
        series["instance"] = sorted([*(series.get("instance") or []), _instance(ds)], key=_order)
        series_list.sort(key=_order)
    body["series"] = series_list
    _reorder(body)
    _recount(body)
    return body


def instance_fragment(body: JsonObject, ds: Dataset) -> JsonObject:
    """``body`` cut down to the study-level elements and the series and instance of
    ``ds``: what is new when an instance is merged into a stored (valid) ImagingStudy,
    so that only this part needs checking against the R4 structure again."""
    out = {k: v for k, v in body.items() if k not in ("id", "meta", "series")}
    series_uid, sop = str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    for series in body.get("series") or []:
        if series.get("uid") == series_uid:
            instances = [i for i in series.get("instance") or [] if i.get("uid") == sop]
            out["series"] = [{**series, "instance": instances}]
    return out


def _recount(body: JsonObject) -> None:
    """Counts and the study's modality list, recomputed from the series (which
    :func:`_reorder` has just copied, so setting their counts touches no shared dict)."""
    modalities: list[JsonObject] = []
    total = 0
    for series in body.get("series") or []:
        n = len(series.get("instance") or [])
        series["numberOfInstances"] = n
        total += n
        modality = series.get("modality")
        if modality and all(m.get("code") != modality.get("code") for m in modalities):
            modalities.append(dict(modality))
    body["modality"] = modalities
    body["numberOfSeries"] = len(body.get("series") or [])
    body["numberOfInstances"] = total
    order = {k: body.pop(k) for k in list(body) if k in _KEY_ORDER}
    ordered = {k: order[k] for k in _KEY_ORDER if k in order}
    ordered.update(body)
    body.clear()
    body.update(ordered)


_KEY_ORDER = (
    "resourceType",
    "id",
    "meta",
    "extension",
    "identifier",
    "status",
    "modality",
    "subject",
    "encounter",
    "started",
    "referrer",
    "endpoint",
    "numberOfSeries",
    "numberOfInstances",
    "procedureCode",
    "description",
    "series",
)
_SERIES_ORDER = (
    "uid",
    "number",
    "modality",
    "description",
    "numberOfInstances",
    "bodySite",
    "laterality",
    "started",
    "instance",
)


def _reorder(body: JsonObject) -> None:
    """Fresh series dicts with their keys in R4 element order (the instance lists stay
    shared); :func:`_recount` orders the study's own keys."""
    body["series"] = [
        {
            **{k: series[k] for k in _SERIES_ORDER if k in series},
            **{k: v for k, v in series.items() if k not in _SERIES_ORDER},
        }
        for series in body.get("series") or []
    ]
    if not body["series"]:
        del body["series"]
