"""DICOM SR measurement reports (TID 1500) → FHIR R4 Observations. Pure.

Follows the HL7 "DICOM SR to FHIR Resource Mapping" IG adapted to R4
(``shared/terminology.md`` §9): one Observation per measurement (TID 300 NUM item) of each
measurement group (TID 1501 image groups, TID 1410 planar ROI groups), with

- ``code`` = the concept name, preceded by the study's local ``measure`` code when
  ``mappings/sr-measures.json`` says the measurement is a vertebral body height
  (anterior/middle/posterior) or the kyphosis angle;
- ``valueQuantity`` in the UCUM unit of the SR (converted to ``mm``/``deg`` when mapped);
- ``bodySite`` = the finding site (a vertebra in SNOMED CT, CID 7603);
- ``partOf`` and ``derivedFrom`` → the ImagingStudy;
- ``identifier`` = the Observation UID (0040,A171) when present, else the deterministic
  ``sr-measurement`` key ``<SR SOP Instance UID>/<content path>/<concept code>``; the
  tracking UID is a second identifier, never the key (it names the same vertebra at every
  timepoint);
- ``effectiveDateTime`` = the item's Observation DateTime, else the SR content date/time.

Parsing uses highdicom's typed templates (measurement groups, :class:`Measurement`,
:class:`FindingSite`); the tree is walked here only to know each item's content path
(``1.<i>.<j>.<k>``, the position of the item in the document, 1-based like a Referenced
Content Item Identifier), which is part of the key, and which highdicom's getters do not
return.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

import highdicom as hd
from pydicom import Dataset

from kyphofhir.imaging import values
from kyphofhir.imaging.mappings import CodeKey, SrMeasures, code_key, normalise
from kyphofhir.study import codes

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]

SR_STORAGE_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
        "1.2.840.10008.5.1.4.1.1.88.35",  # Extensible SR
    }
)

IMAGING_MEASUREMENTS: CodeKey = ("DCM", "126010")
MEASUREMENT_GROUP: CodeKey = ("DCM", "125007")
TOPOGRAPHICAL_MODIFIER: CodeKey = ("SCT", "106233006")
FINDING_SITE: CodeKey = ("SCT", "363698007")
TIME_POINT: CodeKey = ("UMLS", "C2348792")
TIME_POINT_TYPE: CodeKey = ("DCM", "126072")
TIME_POINT_ORDER: CodeKey = ("DCM", "126073")
SUBJECT_TIME_POINT_ID: CodeKey = ("DCM", "126070")
PROTOCOL_TIME_POINT_ID: CodeKey = ("DCM", "126071")

_LEVEL = re.compile(r"^(?:vertebra )?([tl])\s?(\d{1,2})(?: vertebra)?$")


@dataclass(frozen=True)
class Concept:
    """A DICOM coded concept (Coding Scheme Designator, Code Value, Code Meaning)."""

    scheme: str
    code: str
    meaning: str

    @property
    def key(self) -> CodeKey:
        return code_key(self.scheme, self.code)

    def coding(self) -> JsonObject:
        return values.coding(self.scheme, self.code, self.meaning) or {"code": self.code}

    @classmethod
    def of(cls, coded: Any) -> Concept:
        """From a highdicom CodedConcept / pydicom Code (``value``, ``scheme_designator``)."""
        return cls(str(coded.scheme_designator), str(coded.value), str(coded.meaning or ""))

    @classmethod
    def from_item(cls, item: Dataset) -> Concept | None:
        code = values.text(item, "CodeValue") or values.text(item, "LongCodeValue")
        scheme = values.text(item, "CodingSchemeDesignator")
        if not code or not scheme:
            return None
        return cls(scheme, code, values.text(item, "CodeMeaning") or "")


@dataclass(frozen=True)
class TimePointContext:
    """TID 1502 Time Point Context as sent."""

    time_point: str | None = None
    type: Concept | None = None
    order: int | None = None
    subject_id: str | None = None
    protocol_id: str | None = None

    def timepoint(self, table: SrMeasures) -> str | None:
        """The protocol timepoint (``baseline`` …) it names, per ``sr-measures.json``."""
        texts = [t for t in (self.protocol_id, self.time_point, self.subject_id) if t]
        keys = [self.type.key] if self.type else []
        return table.timepoint(keys, texts)


@dataclass(frozen=True)
class Measurement:
    """One NUM item of a measurement group, with what the mapping decided about it."""

    path: str
    concept: Concept
    value: float
    unit: Concept
    observation_uid: str | None = None
    tracking_uid: str | None = None
    tracking_id: str | None = None
    finding_site: Concept | None = None
    level: str | None = None  # T1 … L5 when the finding site is a vertebra
    modifier: str | None = None  # anterior / posterior / central
    method: Concept | None = None
    observed: str | None = None  # FHIR dateTime of (0040,A032)
    measure: str | None = None  # local measure code when mapped
    measure_value: float | None = None  # value in the measure's unit
    time_point: TimePointContext | None = None  # of its group, if the group has one

    @property
    def key(self) -> str:
        """The path and concept part of the deterministic identifier."""
        return f"{self.path}/{self.concept.code}"


@dataclass(frozen=True)
class MeasurementReport:
    """What kyphofhir takes from one TID 1500 document."""

    sop_instance_uid: str
    study_uid: str
    title: str | None
    content_time: str | None  # FHIR dateTime of ContentDate/ContentTime
    time_point: TimePointContext | None  # document level (root) context
    measurements: tuple[Measurement, ...] = field(default_factory=tuple)

    def time_points(self) -> Iterator[TimePointContext]:
        if self.time_point:
            yield self.time_point
        for m in self.measurements:
            if m.time_point:
                yield m.time_point

    def timepoint(self, table: SrMeasures) -> str | None:
        """The first protocol timepoint any TID 1502 context of the report names."""
        for context in self.time_points():
            found = context.timepoint(table)
            if found:
                return found
        return None


# --- reading ------------------------------------------------------------------------------


def is_sr(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) in SR_STORAGE_CLASSES or ds.get("Modality") == "SR"


def _name(item: Dataset) -> Concept | None:
    names = item.get("ConceptNameCodeSequence")
    return Concept.from_item(names[0]) if names else None


def _children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence") or [])


def _template(item: Dataset) -> str | None:
    seq = item.get("ContentTemplateSequence")
    return values.text(seq[0], "TemplateIdentifier") if seq else None


def is_measurement_report(ds: Dataset) -> bool:
    """An SR whose root declares TID 1500, or (vendor SRs that do not declare it) holds an
    Imaging Measurements container."""
    if not is_sr(ds) or not ds.get("ContentSequence"):
        return False
    if _template(ds) == "1500":
        return True
    return any(_is(child, IMAGING_MEASUREMENTS) for child in _children(ds))


def _is(item: Dataset, key: CodeKey) -> bool:
    name = _name(item)
    return name is not None and name.key == key


def _time_point_context(items: list[Dataset]) -> TimePointContext | None:
    """TID 1502 items among ``items`` (the children of the root or of a group)."""
    found: dict[CodeKey, Dataset] = {}
    for item in items:
        name = _name(item)
        if name and name.key in (
            TIME_POINT,
            TIME_POINT_TYPE,
            TIME_POINT_ORDER,
            SUBJECT_TIME_POINT_ID,
            PROTOCOL_TIME_POINT_ID,
        ):
            found.setdefault(name.key, item)
    if TIME_POINT not in found and not found:
        return None
    type_item = found.get(TIME_POINT_TYPE)
    type_concept = None
    if type_item is not None and type_item.get("ConceptCodeSequence"):
        type_concept = Concept.from_item(type_item.ConceptCodeSequence[0])
    order = None
    order_item = found.get(TIME_POINT_ORDER)
    if order_item is not None and order_item.get("MeasuredValueSequence"):
        try:
            order = int(float(order_item.MeasuredValueSequence[0].NumericValue))
        except (TypeError, ValueError):
            order = None

    def text_of(key: CodeKey) -> str | None:
        item = found.get(key)
        return values.text(item, "TextValue") if item is not None else None

    return TimePointContext(
        time_point=text_of(TIME_POINT),
        type=type_concept,
        order=order,
        subject_id=text_of(SUBJECT_TIME_POINT_ID),
        protocol_id=text_of(PROTOCOL_TIME_POINT_ID),
    )


def _group(item: Dataset) -> Any:
    """The highdicom typed group: TID 1410 planar ROI, TID 1411 volumetric ROI, else TID
    1501 (by the declared template, else by the kind of region the group holds)."""
    template = _template(item)
    kinds = {child.get("ValueType") for child in _children(item)}
    typed: Any = None
    if template == "1410" or (template is None and "SCOORD" in kinds):
        typed = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    elif template == "1411" or (template is None and "SCOORD3D" in kinds):
        typed = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    if typed is not None:
        try:
            return typed.from_sequence([item])
        except (ValueError, TypeError, AttributeError) as exc:
            log.debug("not a TID %s ROI group (%s); reading it as TID 1501", template, exc)
    return hd.sr.MeasurementsAndQualitativeEvaluations.from_sequence([item])


def vertebra_level(site: Concept | None) -> str | None:
    """T1 … L5 from a finding site: its SNOMED CT code (CID 7603), else its meaning."""
    if site is None:
        return None
    if site.key[0] == "SCT" and site.code in codes.LEVEL_BY_SNOMED:
        return codes.LEVEL_BY_SNOMED[site.code]
    m = _LEVEL.match(normalise(site.meaning))
    if m:
        level = f"{m[1].upper()}{int(m[2])}"
        return level if level in codes.VERTEBRAE else None
    return None


def _site(sites: list[Any]) -> tuple[Concept | None, Concept | None]:
    """(anatomic location, topographical modifier) of the first finding site."""
    if not sites:
        return None, None
    site = sites[0]
    modifier = site.topographical_modifier
    return Concept.of(site.value), Concept.of(modifier) if modifier is not None else None


def _item_modifier(num: Dataset, table: SrMeasures) -> str | None:
    """A modifier coded directly on the NUM item (HAS CONCEPT MOD children)."""
    for child in _children(num):
        if child.get("ValueType") != "CODE" or not child.get("ConceptCodeSequence"):
            continue
        value = Concept.from_item(child.ConceptCodeSequence[0])
        found = table.modifier_of_code(value.key) if value else None
        if found:  # under Topographical modifier (106233006) or any other concept name
            return found
    return None


def _mapped(
    table: SrMeasures, concept: Concept, modifier: str | None, value: float, unit: Concept
) -> tuple[str | None, str | None, float | None]:
    """(modifier, measure, value in the measure's unit) per the rules of sr-measures.json."""
    word_modifier, rest = table.split_modifier(concept.meaning)
    modifier = modifier or word_modifier
    for rule in table.rules:
        if concept.key not in rule.concepts and rest not in rule.labels:
            continue
        if rule.modifier is not None and rule.modifier != modifier:
            continue
        target = codes.MEASURES[rule.measure].unit
        factor = table.units[target].get(unit.code) if unit.key[0] == "UCUM" else None
        if factor is None:
            continue
        return modifier, rule.measure, value * factor
    return modifier, None, None


def read_report(ds: Dataset, table: SrMeasures, zone: tzinfo | None) -> MeasurementReport | None:
    """The measurements of a TID 1500 document; None if ``ds`` is not one.

    A malformed group is logged and skipped; the others are still read.
    """
    if not is_measurement_report(ds):
        return None
    offset = values.text(ds, "TimezoneOffsetFromUTC")
    content_time = values.fhir_datetime(
        values.text(ds, "ContentDate"), values.text(ds, "ContentTime"), offset, zone
    )
    names = ds.get("ConceptNameCodeSequence")
    title = values.text(names[0], "CodeMeaning") if names else None
    root_children = _children(ds)
    measurements: list[Measurement] = []
    for i, container in enumerate(root_children, 1):
        if not _is(container, IMAGING_MEASUREMENTS):
            continue
        for j, group_item in enumerate(_children(container), 1):
            if not _is(group_item, MEASUREMENT_GROUP):
                continue
            path = f"1.{i}.{j}"
            try:
                measurements.extend(_read_group(group_item, path, table, offset, zone))
            except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
                log.warning("SR %s: measurement group %s skipped: %s", ds.SOPInstanceUID, path, exc)
    return MeasurementReport(
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        title=title,
        content_time=content_time,
        time_point=_time_point_context(root_children),
        measurements=tuple(measurements),
    )


def _read_group(
    item: Dataset, path: str, table: SrMeasures, offset: str | None, zone: tzinfo | None
) -> Iterator[Measurement]:
    group = _group(item)
    group_site, group_site_modifier = _site(group.finding_sites)
    group_method = group.method
    group_time_point = _time_point_context(_children(group[0]))
    tracking_uid = group.tracking_uid
    tracking_id = group.tracking_identifier
    for k, child in enumerate(_children(group[0]), 1):
        if child.get("ValueType") != "NUM" or not child.get("MeasuredValueSequence"):
            continue
        measurement = hd.sr.Measurement.from_sequence([child])
        concept = Concept.of(measurement.name)
        unit = Concept.of(measurement.unit)
        value = float(measurement.value)
        site, site_modifier = _site(measurement.finding_sites)
        if site is None:
            site, site_modifier = group_site, group_site_modifier
        coded_modifier = (
            table.modifier_of_code(site_modifier.key) if site_modifier is not None else None
        ) or _item_modifier(child, table)
        modifier, measure, measure_value = _mapped(table, concept, coded_modifier, value, unit)
        method = measurement.method or group_method
        yield Measurement(
            path=f"{path}.{k}",
            concept=concept,
            value=value,
            unit=unit,
            observation_uid=values.text(child, "ObservationUID"),
            tracking_uid=str(tracking_uid) if tracking_uid else None,
            tracking_id=tracking_id,
            finding_site=site,
            level=vertebra_level(site),
            modifier=modifier,
            method=Concept.of(method) if method is not None else None,
            observed=values.fhir_dt(values.text(child, "ObservationDateTime"), offset, zone),
            measure=measure,
            measure_value=measure_value,
            time_point=group_time_point,
        )


# --- Observations ------------------------------------------------------------------------


def _id_type(code: str, display: str) -> JsonObject:
    return {"coding": [codes.coding(codes.DICOM_SR_IDENTIFIER_TYPE, code, display)]}


def key_identifier(report: MeasurementReport, m: Measurement) -> JsonObject:
    """The identifier an Observation is found by when the SR is sent again."""
    if m.observation_uid and values.is_uid(m.observation_uid):
        out = values.dicom_uid_identifier(m.observation_uid)
        return {"type": _id_type("observation-uid", "Observation UID"), **out}
    return {
        "system": codes.SID_SR_MEASUREMENT,
        "value": f"{report.sop_instance_uid}/{m.key}",
    }


def identifiers(report: MeasurementReport, m: Measurement) -> list[JsonObject]:
    out = [key_identifier(report, m)]
    if m.tracking_uid and values.is_uid(m.tracking_uid):
        out.append(
            {
                "type": _id_type("tracking-uid", "Tracking UID"),
                **values.dicom_uid_identifier(m.tracking_uid),
            }
        )
    return out


def _code(m: Measurement) -> JsonObject:
    codings: list[JsonObject] = []
    text = m.concept.meaning or m.concept.code
    if m.measure:
        measure = codes.MEASURES[m.measure]
        codings.append(codes.coding(codes.CS_MEASURE, measure.code, measure.display))
        text = measure.display
    sr_coding = m.concept.coding()
    if sr_coding not in codings:
        codings.append(sr_coding)
    if m.measure and codes.MEASURES[m.measure].equivalent:
        equivalent = dict(codes.MEASURES[m.measure].equivalent or {})
        if all(
            (c.get("system"), c.get("code")) != (equivalent["system"], equivalent["code"])
            for c in codings
        ):
            codings.append(equivalent)
    elif m.modifier:
        text = f"{text} ({m.modifier})"
    return {"coding": codings, "text": text}


def _value(m: Measurement) -> JsonObject:
    if m.measure and m.measure_value is not None:
        unit = codes.MEASURES[m.measure].unit
        return codes.quantity(round(m.measure_value, 6), unit)
    out: JsonObject = {"value": m.value, "unit": m.unit.meaning or m.unit.code}
    if m.unit.key[0] == "UCUM":
        out["system"] = codes.UCUM
        out["code"] = m.unit.code
    return out


def _body_site(m: Measurement) -> JsonObject | None:
    if m.level:
        return codes.vertebra(m.level)
    if m.finding_site:
        return {"coding": [m.finding_site.coding()], "text": m.finding_site.meaning}
    return None


def profile_of(measure: str | None) -> str | None:
    """The study profile a mapped measure claims (``vertebral-height-observation`` …)."""
    if measure in codes.HEIGHT_MEASURES:
        return "vertebral-height-observation"
    if measure == "kyphosis-angle":
        return "kyphosis-angle-observation"
    return None


@dataclass(frozen=True)
class Links:
    """What the services layer found for one Observation (references as JSON)."""

    subject: JsonObject
    imaging_study: JsonObject  # {"reference": "ImagingStudy/<id>"}
    study_uid: str
    encounter: JsonObject | None = None
    focus: JsonObject | None = None  # the fracture Condition of the vertebra
    research_study: JsonObject | None = None
    outside_window: bool = False


def observation(report: MeasurementReport, m: Measurement, links: Links) -> JsonObject:
    """The Observation of one SR measurement.

    The study profile is claimed only when everything it requires is there (mapped
    measure, vertebra, visit Encounter, fracture Condition); otherwise the Observation is
    kept without the claim, so it is stored rather than rejected.
    """
    out: JsonObject = {"resourceType": "Observation"}
    meta: JsonObject = {}
    profile = profile_of(m.measure)
    if profile and m.level and links.encounter and links.focus:
        meta["profile"] = [codes.structure_definition(profile)]
    if links.outside_window:
        meta["tag"] = [dict(codes.TAG_OUTSIDE_WINDOW)]
    if meta:
        out["meta"] = meta
    if links.research_study:
        out["extension"] = [
            {"url": codes.EXT_RESEARCH_STUDY, "valueReference": links.research_study}
        ]
    out["identifier"] = identifiers(report, m)
    study_ref = {
        **links.imaging_study,
        "identifier": {
            "type": {"coding": [dict(codes.STUDY_INSTANCE_UID_TYPE)]},
            **values.dicom_uid_identifier(links.study_uid),
        },
    }
    out["partOf"] = [study_ref]
    out["status"] = "final"
    out["category"] = [{"coding": [codes.coding(codes.OBSERVATION_CATEGORY, "imaging", "Imaging")]}]
    out["code"] = _code(m)
    out["subject"] = links.subject
    if links.focus:
        out["focus"] = [links.focus]
    if links.encounter:
        out["encounter"] = links.encounter
    effective = m.observed or report.content_time
    if effective:
        out["effectiveDateTime"] = effective
    out["valueQuantity"] = _value(m)
    site = _body_site(m)
    if site:
        out["bodySite"] = site
    if m.method:
        out["method"] = {"coding": [m.method.coding()], "text": m.method.meaning}
    out["derivedFrom"] = [dict(links.imaging_study)]
    return out
