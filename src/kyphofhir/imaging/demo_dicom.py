"""Synthetic DICOM for the demo cohort: a lateral spine radiograph and a TID 1500 SR per
subject and timepoint. Pure (data sets out; ``kyphofhir demo generate --dicom`` writes them).

Everything comes from the demo cohort's table rows (``study.demo.generate``), so the
images and measurements are consistent with the FHIR demo data: same subjects, visit
dates, vertebrae and values. For each subject × timepoint with radiographic values:

- one DX (for presentation) "lateral spine" image with phantom pixels (a column of
  vertebral blocks on a soft-tissue background; nobody's anatomy), Body Part Examined
  TSPINE, LSPINE or TLSPINE after the fractured levels;
- one Comprehensive SR, TID 1500: per fractured vertebra three planar ROI groups
  (Height, DCM 121207, in mm, finding site = the vertebra with topographical modifier
  Anterior / Central / Posterior; a caliper line on the image) and one image measurement
  group (Cobb angle, SCT 285285000, in degrees); TID 1502 time point context = the
  timepoint code; content date = the visit date.

The patient is identified as the study import identifies it: Patient ID = the subject id,
Issuer of Patient ID Qualifiers = the URI ``https://kyphofhir.org/fhir/sid/study-subject``,
which the DICOM → FHIR mapping uses as the identifier system without configuration. UIDs
are derived from the seed, subject, timepoint and level (``2.25.`` UUID form), so
generating again gives the same UIDs and sending again changes nothing; the tracking UID
of a vertebra's measure is the same at every timepoint, as TID 1500 intends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from kyphofhir.study import codes

Value = str | int | float | bool | None
Row = dict[str, Value]

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
ISSUER_URI = codes.SID_STUDY_SUBJECT
IMAGE_SIZE = 128  # pixels; 0.5 mm each
MODIFIERS = {
    "vbh_anterior": dcm_codes.SCT.Anterior,
    "vbh_middle": dcm_codes.SCT.Central,
    "vbh_posterior": dcm_codes.SCT.Posterior,
}


@dataclass(frozen=True)
class DemoStudy:
    """The instances of one subject × timepoint."""

    subject: str
    timepoint: str
    image: Dataset
    report: Dataset

    def files(self) -> list[tuple[str, Dataset]]:
        """(relative file name, data set) to write."""
        folder = f"{self.subject}/{self.timepoint}"
        return [(f"{folder}/dx.dcm", self.image), (f"{folder}/sr.dcm", self.report)]


_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, f"{codes.CANONICAL}/demo-dicom")


def uid(*parts: object) -> str:
    """A deterministic UID from ``parts``: ``2.25.`` and a UUIDv5 as an integer (PS3.5 B.2)."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, '/'.join(map(str, parts))).int}"


def _dicom_date(value: Value) -> str:
    return date.fromisoformat(str(value)).strftime("%Y%m%d")


def _body_part(levels: Sequence[str]) -> str:
    kinds = {level[0] for level in levels}
    return "TLSPINE" if kinds == {"T", "L"} else "LSPINE" if kinds == {"L"} else "TSPINE"


def _phantom(levels: Sequence[str]) -> bytes:
    """A synthetic lateral view: soft tissue, a column of vertebral bodies, brighter
    (augmented) bodies at the given levels. 12-bit values in 16-bit words."""
    size = IMAGE_SIZE
    y, x = np.mgrid[0:size, 0:size]
    image = 400 + 150 * np.exp(-(((x - size / 2) / (size / 3)) ** 2))
    for n in range(7):
        top = 6 + n * 17
        body = (top <= y) & (y < top + 13) & (size * 0.35 <= x) & (x < size * 0.65)
        image = np.where(body, 1400 + 40 * n, image)
    if levels:
        image[4:8, int(size * 0.35) : int(size * 0.65)] = 3000
    pixels: bytes = np.clip(image, 0, 4095).astype(np.uint16).tobytes()
    return pixels


def _patient(ds: Dataset, subject: Row) -> None:
    ds.PatientID = str(subject["subject_id"])
    ds.PatientName = f"DEMO^{subject['subject_id']}"
    issuer = Dataset()
    issuer.UniversalEntityID = ISSUER_URI
    issuer.UniversalEntityIDType = "URI"
    ds.IssuerOfPatientIDQualifiersSequence = [issuer]
    ds.PatientBirthDate = _dicom_date(subject["birth_date"])
    ds.PatientSex = {"male": "M", "female": "F"}.get(str(subject.get("sex")), "O")


def radiograph(
    seed: int, subject: Row, timepoint: str, when: str, levels: Sequence[str]
) -> Dataset:
    """The DX image of one visit."""
    sid = str(subject["subject_id"])
    study_uid = uid(seed, sid, timepoint, "study")
    sop = uid(seed, sid, timepoint, "dx")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(DX_FOR_PRESENTATION)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = uid(seed, sid, timepoint, "dx-series")
    _patient(ds, subject)
    day = _dicom_date(when)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = day
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "100000"
    ds.AccessionNumber = study_uid.split(".")[-1][-12:]
    ds.ReferringPhysicianName = ""
    ds.StudyID = timepoint[:16]
    ds.StudyDescription = f"Spine radiograph, {codes.TIMEPOINTS[timepoint].display}"
    ds.SeriesDescription = "Spine lateral (synthetic)"
    ds.Modality = "DX"
    ds.Manufacturer = "kyphofhir demo (synthetic)"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = _body_part(levels)
    ds.ViewPosition = "LL"
    ds.PatientOrientation = ["A", "F"]
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = IMAGE_SIZE
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelSpacing = ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.PixelData = _phantom(levels)
    return ds


def _site(level: str, modifier: hd.sr.CodedConcept | None = None) -> hd.sr.FindingSite:
    return hd.sr.FindingSite(
        anatomic_location=hd.sr.CodedConcept(codes.VERTEBRAE[level], "SCT", f"{level} vertebra"),
        topographical_modifier=modifier,
    )


def measurement_report(
    seed: int, subject: Row, timepoint: str, when: str, rows: Sequence[Row], image: Dataset
) -> Dataset:
    """The TID 1500 SR with the heights and angles of ``rows`` (one per vertebra)."""
    sid = str(subject["subject_id"])
    source = hd.sr.SourceImageForRegion.from_source_image(image)
    context = hd.sr.TimePointContext(time_point=timepoint, protocol_time_point_identifier=timepoint)
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for row in rows:
        level = str(row["level"])
        for n, (column, modifier) in enumerate(MODIFIERS.items()):
            value = row.get(column)
            if value is None or value == "":
                continue
            x = IMAGE_SIZE * (0.37 + 0.13 * n)
            region = hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=np.array([[x, 10.0], [x, 10.0 + float(str(value)) * 2]]),
                source_image=source,
            )
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=uid(seed, sid, level, column),
                        identifier=f"{level} {column.removeprefix('vbh_')} height",
                    ),
                    referenced_region=region,
                    finding_sites=[_site(level, modifier)],
                    measurements=[
                        hd.sr.Measurement(
                            name=dcm_codes.DCM.Height,
                            value=float(str(value)),
                            unit=dcm_codes.UCUM.Millimeter,
                        )
                    ],
                    time_point_context=context,
                )
            )
        angle = row.get("kyphosis_angle")
        if angle is not None and angle != "":
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=uid(seed, sid, level, "kyphosis"), identifier=f"{level} kyphosis"
                    ),
                    finding_sites=[_site(level)],
                    measurements=[
                        hd.sr.Measurement(
                            name=dcm_codes.SCT.CobbAngle,
                            value=float(str(angle)),
                            unit=dcm_codes.UCUM.Degree,
                        )
                    ],
                    time_point_context=context,
                    source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(image)],
                )
            )
    observer = hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uid(seed, "observer"), name="kyphofhir demo generator"
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("24948-2", "LN", "XR Spine Views"),
        imaging_measurements=groups,
    )
    sr = hd.sr.ComprehensiveSR(  # storescu proposes Comprehensive SR by default, not 3D
        evidence=[image],
        content=report[0],
        series_instance_uid=uid(seed, sid, timepoint, "sr-series"),
        series_number=99,
        sop_instance_uid=uid(seed, sid, timepoint, "sr"),
        instance_number=1,
        manufacturer="kyphofhir demo (synthetic)",
        is_complete=True,
        is_final=True,
        series_description="Vertebral measurements (synthetic)",
    )
    day = _dicom_date(when)
    for keyword, value in (
        ("ContentDate", day),
        ("InstanceCreationDate", day),
        ("SeriesDate", day),
        ("ContentTime", "103000"),
        ("InstanceCreationTime", "103000"),
        ("SeriesTime", "103000"),
        ("TimezoneOffsetFromUTC", "+0000"),
    ):
        setattr(sr, keyword, value)  # the visit's date, not the generator's clock
    return sr


def _measured(rows: Sequence[Row]) -> tuple[dict[str, Row], dict[tuple[str, str], list[Row]]]:
    by_subject: dict[str, Row] = {}
    measured: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        sid = str(row.get("subject_id"))
        if row.get("record") == "subject":
            by_subject[sid] = row
        elif row.get("record") == "vertebra" and row.get("timepoint"):
            measured.setdefault((sid, str(row["timepoint"])), []).append(row)
    return by_subject, measured


def count(rows: Sequence[Row], subjects: int | None = None) -> int:
    """How many studies :func:`studies` will yield."""
    by_subject, measured = _measured(rows)
    chosen = set(list(by_subject)[:subjects] if subjects is not None else by_subject)
    return sum(1 for sid, _tp in measured if sid in chosen)


def studies(rows: Sequence[Row], seed: int, subjects: int | None = None) -> Iterator[DemoStudy]:
    """The DICOM of the demo cohort ``rows``, subject by subject (the first ``subjects``
    subjects only, if given), timepoints in protocol order."""
    by_subject, measured = _measured(rows)
    order = {tp: n for n, tp in enumerate(codes.TIMEPOINTS)}
    chosen = list(by_subject)[:subjects] if subjects is not None else list(by_subject)
    for sid in chosen:
        visits = sorted(
            ((tp, group) for (s, tp), group in measured.items() if s == sid),
            key=lambda item: order[item[0]],
        )
        for timepoint, group in visits:
            when = str(group[0]["date"])
            levels = [str(r["level"]) for r in group]
            image = radiograph(seed, by_subject[sid], timepoint, when, levels)
            report = measurement_report(seed, by_subject[sid], timepoint, when, group, image)
            yield DemoStudy(sid, timepoint, image, report)


def without_radiographs(rows: Sequence[Row]) -> list[Row]:
    """The table without the per-timepoint vertebra rows: the cohort to import when the
    radiographic measurements are to arrive as DICOM SR instead (no duplicates)."""
    return [r for r in rows if not (r.get("record") == "vertebra" and r.get("timepoint"))]


README = """
DICOM (`kyphofhir demo generate --dicom`): dicom/<subject>/<timepoint>/ holds a synthetic
lateral spine radiograph (dx.dcm, phantom pixels) and a TID 1500 SR (sr.dcm) with the
vertebral body heights and kyphosis angles of that visit, the same values as the table.
Patient ID = subject id, issuer https://kyphofhir.org/fhir/sid/study-subject, so the
server matches them to the imported patients without configuration. To show the DICOM
path without duplicate measurements, import {table} (the cohort without the
radiographic rows) and send the files, e.g.

  kyphofhir import {table}
  storescu -aec KYPHOFHIR +sd +r 127.0.0.1 11112 dicom/

The SR measurements then become the cohort's height and kyphosis Observations, linked to
the visit Encounters and fracture Conditions (docs/dicom.md).
"""
