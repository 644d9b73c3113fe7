"""DICOM test data built in code: DX radiographs (pydicom) and TID 1500 SRs (highdicom).

Nothing is read from disk; every UID is generated (or derived from a seed) so tests do
not collide. Pixel data is a tiny phantom, enough for a valid DX instance.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    generate_uid,
)

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"

VERTEBRA_CODES = {
    "T10": "7610001",
    "T11": "12989004",
    "T12": "23215003",
    "L1": "66794005",
    "L2": "14293000",
}


@dataclass
class PatientInfo:
    patient_id: str = "PID-0001"
    name: str = "Muster^Erika"
    birth_date: str = "19480502"
    sex: str = "F"
    issuer: str | None = None


def dx_image(
    patient: PatientInfo,
    study_uid: str,
    *,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    instance_number: int = 1,
    series_number: int = 1,
    study_date: str = "20240305",
    study_time: str = "101500",
    body_part: str = "TSPINE",
    accession: str = "ACC-1",
    tz_offset: str | None = "+0100",
    series_description: str = "Spine lateral",
) -> Dataset:
    """A small DX (for presentation) lateral spine radiograph, ready to be written."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    sop_uid = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient.patient_id
    ds.PatientName = patient.name
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    if patient.issuer:
        ds.IssuerOfPatientID = patient.issuer
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.SeriesDate = study_date
    ds.SeriesTime = study_time
    ds.ContentDate = study_date
    ds.ContentTime = study_time
    if tz_offset:
        ds.TimezoneOffsetFromUTC = tz_offset
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = "Referrer^Rita^^Dr."
    ds.StudyDescription = "Spine radiograph"
    ds.StudyID = "1"
    ds.SeriesDescription = series_description
    ds.Modality = "DX"
    ds.Manufacturer = "kyphofhir tests"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "LL"
    ds.PatientOrientation = ["A", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 16
    ds.Columns = 16
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [0.5, 0.5]
    ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.PixelData = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 8).tobytes()
    return ds


@dataclass(frozen=True)
class Height:
    """One vertebral body height as an SR writes it: Height + topographical modifier."""

    level: str
    modifier: str  # anterior / posterior / central
    mm: float


@dataclass(frozen=True)
class Custom:
    """A measurement as some vendor writes it: any concept name and unit, the finding
    site optionally on the group, an Observation UID optionally."""

    level: str | None
    name: hd.sr.CodedConcept
    value: float
    unit: hd.sr.CodedConcept
    observation_uid: str | None = None


MODIFIERS = {
    "anterior": codes.SCT.Anterior,
    "posterior": codes.SCT.Posterior,
    "central": codes.SCT.Central,
}


def _site(level: str, modifier: str | None = None) -> hd.sr.FindingSite:
    return hd.sr.FindingSite(
        anatomic_location=hd.sr.CodedConcept(VERTEBRA_CODES[level], "SCT", f"{level} vertebra"),
        topographical_modifier=MODIFIERS[modifier] if modifier else None,
    )


def measurement_sr(
    images: Sequence[Dataset],
    *,
    heights: Sequence[Height] = (),
    kyphosis: dict[str, float] | None = None,
    time_point: str | None = None,
    tracking_uids: dict[str, str] | None = None,
    sop_uid: str | None = None,
    series_uid: str | None = None,
    observation_uids: bool = False,
    content_date: str | None = None,
    custom: Sequence[Custom] = (),
) -> Dataset:
    """A Comprehensive 3D SR with a TID 1500 measurement report on ``images``.

    Heights are planar ROI groups (TID 1410, a caliper line on the image), one per level
    and modifier, with Height (DCM 121207) in mm and the modifier on the finding site;
    the kyphosis angle of a level is an image measurement group (TID 1501) with Cobb angle
    (SCT 285285000) in degrees. ``time_point`` adds TID 1502 context to every group.
    """
    ref = images[0]
    source = hd.sr.SourceImageForRegion.from_source_image(ref)
    tracking_uids = tracking_uids or {}
    tp = hd.sr.TimePointContext(time_point=time_point) if time_point else None
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for h in heights:
        measurement = hd.sr.Measurement(
            name=codes.DCM.Height,
            value=h.mm,
            unit=codes.UCUM.Millimeter,
        )
        if observation_uids:
            measurement[0].ObservationUID = generate_uid()
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array([[4.0, 2.0], [4.0, 12.0]]),
            source_image=source,
        )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=tracking_uids.get(f"{h.level}/{h.modifier}") or generate_uid(),
                    identifier=f"{h.level} {h.modifier} height",
                ),
                referenced_region=region,
                finding_sites=[_site(h.level, h.modifier)],
                measurements=[measurement],
                time_point_context=tp,
            )
        )
    for level, degrees in (kyphosis or {}).items():
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=tracking_uids.get(f"{level}/kyphosis") or generate_uid(),
                    identifier=f"{level} kyphosis",
                ),
                finding_sites=[_site(level)],
                measurements=[
                    hd.sr.Measurement(
                        name=codes.SCT.CobbAngle, value=degrees, unit=codes.UCUM.Degree
                    )
                ],
                time_point_context=tp,
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ref)],
            )
        )
    for c in custom:
        measurement = hd.sr.Measurement(name=c.name, value=c.value, unit=c.unit)
        if c.observation_uid:
            measurement[0].ObservationUID = c.observation_uid
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=generate_uid(), identifier="vendor"
                ),
                finding_sites=[_site(c.level)] if c.level else None,
                measurements=[measurement],
                time_point_context=tp,
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name="Reader^Rob"
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=hd.sr.CodedConcept("24948-2", "LN", "XR Spine Views"),
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(images),
        content=report[0],
        series_instance_uid=series_uid or generate_uid(),
        series_number=99,
        sop_instance_uid=sop_uid or generate_uid(),
        instance_number=1,
        manufacturer="kyphofhir tests",
        is_complete=True,
        is_final=True,
    )
    if content_date:
        sr.ContentDate = content_date
    return sr


def write(ds: Dataset, folder: Path, name: str | None = None) -> Path:
    """Write ``ds`` as a Part 10 file (what the receiver would have stored)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{ds.SOPInstanceUID}.dcm")
    ds.save_as(path, enforce_file_format=True)
    return path


def send(svc: Any, *datasets: Dataset) -> list[Any]:
    """Store each data set as the receiver does, then index it through
    ``services.imaging.ingest``; each is then indexed a second time (a re-send), which
    must change nothing. Returns the results of the re-sends."""
    from kyphofhir.services import imaging
    from kyphofhir.store.instances import StoredInstance

    store = imaging.instance_store(svc.settings)
    results = []
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        study, series, sop = (
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
        )
        path, size, _ = store.put(study, series, sop, [buffer.getvalue()])
        read = pydicom.dcmread(path, stop_before_pixels=True)
        stored = StoredInstance(
            study,
            series,
            sop,
            str(ds.SOPClassUID),
            str(read.file_meta.TransferSyntaxUID),
            path,
            size,
            read,
        )
        imaging.ingest(svc, stored)
        results.append(imaging.ingest_dataset(svc, read))  # a re-send: must change nothing
    return results
