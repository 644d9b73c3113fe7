"""TID 1500 SR → measurements → Observations (pure; SRs built with highdicom here)."""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

import highdicom as hd
import pytest
from pydicom import Dataset
from pydicom.sr.codedict import codes as dcodes
from pydicom.uid import generate_uid

from imaging_samples import Custom, Height, PatientInfo, dx_image, measurement_sr
from kyphofhir.fhir.models import validate_resource
from kyphofhir.imaging import mappings, sr
from kyphofhir.study import codes

TABLE = mappings.load().sr_measures
CET = timezone(timedelta(hours=1))
HEIGHTS = [
    Height("T12", "anterior", 18.5),
    Height("T12", "central", 21.0),
    Height("T12", "posterior", 24.0),
    Height("L1", "anterior", 22.5),
    Height("L1", "posterior", 26.0),
]


def image(study_uid: str | None = None) -> Dataset:
    return dx_image(PatientInfo(), study_uid or str(generate_uid()))


def read(ds: Dataset) -> sr.MeasurementReport:
    report = sr.read_report(ds, TABLE, CET)
    assert report is not None
    return report


def links(study_uid: str, **extra: Any) -> sr.Links:
    return sr.Links(
        subject={"reference": "Patient/p"},
        imaging_study={"reference": "ImagingStudy/s"},
        study_uid=study_uid,
        **extra,
    )


def test_heights_and_kyphosis_are_mapped_to_the_study_measures() -> None:
    img = image()
    report = read(measurement_sr([img], heights=HEIGHTS, kyphosis={"T12": 14.5}))
    got = [(m.level, m.modifier, m.measure, m.measure_value) for m in report.measurements]
    assert got == [
        ("T12", "anterior", "vbh-anterior", 18.5),
        ("T12", "central", "vbh-middle", 21.0),
        ("T12", "posterior", "vbh-posterior", 24.0),
        ("L1", "anterior", "vbh-anterior", 22.5),
        ("L1", "posterior", "vbh-posterior", 26.0),
        ("T12", None, "kyphosis-angle", 14.5),
    ]
    assert report.sop_instance_uid and report.study_uid == str(img.StudyInstanceUID)
    assert report.title == "Imaging Measurement Report"


def test_observation_of_a_height() -> None:
    img = image()
    report = read(measurement_sr([img], heights=HEIGHTS[:1], content_date="20240610"))
    m = report.measurements[0]
    body = sr.observation(
        report,
        m,
        links(
            str(img.StudyInstanceUID),
            encounter={"reference": "Encounter/e"},
            focus={"reference": "Condition/f"},
            research_study={"reference": "ResearchStudy/kyphoplasty-myeloma"},
        ),
    )
    validate_resource(body)
    assert body["meta"]["profile"] == [codes.structure_definition("vertebral-height-observation")]
    assert body["code"]["coding"][0] == codes.coding(
        codes.CS_MEASURE, "vbh-anterior", "Vertebral body height, anterior"
    )
    assert {"system": codes.DCM, "code": "121207", "display": "Height"} in body["code"]["coding"]
    assert body["valueQuantity"] == codes.quantity(18.5, "mm")
    assert body["bodySite"] == codes.vertebra("T12")
    assert body["focus"] == [{"reference": "Condition/f"}]
    assert body["encounter"] == {"reference": "Encounter/e"}
    assert body["partOf"][0]["reference"] == "ImagingStudy/s"
    assert body["partOf"][0]["identifier"]["value"] == f"urn:oid:{img.StudyInstanceUID}"
    assert body["derivedFrom"] == [{"reference": "ImagingStudy/s"}]
    assert body["category"][0]["coding"][0]["code"] == "imaging"
    assert body["effectiveDateTime"].startswith("2024-06-10T")
    key, tracking = body["identifier"]
    assert key == {
        "system": codes.SID_SR_MEASUREMENT,
        "value": f"{report.sop_instance_uid}/{m.path}/121207",
    }
    assert tracking["type"]["coding"][0]["code"] == "tracking-uid"
    assert tracking["value"] == f"urn:oid:{m.tracking_uid}"


def test_the_key_is_deterministic_and_the_tracking_uid_is_not_the_key() -> None:
    img = image()
    tracking = {"T12/anterior": str(generate_uid())}
    sop = str(generate_uid())
    first = read(measurement_sr([img], heights=HEIGHTS[:1], sop_uid=sop, tracking_uids=tracking))
    again = read(measurement_sr([img], heights=HEIGHTS[:1], sop_uid=sop, tracking_uids=tracking))
    later = read(measurement_sr([img], heights=HEIGHTS[:1], tracking_uids=tracking))
    key = sr.key_identifier(first, first.measurements[0])
    assert key == sr.key_identifier(again, again.measurements[0])
    # the same vertebra at another timepoint: same tracking UID, another Observation
    assert key != sr.key_identifier(later, later.measurements[0])
    assert first.measurements[0].tracking_uid == later.measurements[0].tracking_uid


def test_observation_uid_is_the_key_when_present() -> None:
    uid = str(generate_uid())
    name = hd.sr.CodedConcept("121207", "DCM", "Height")
    report = read(
        measurement_sr(
            [image()],
            custom=[Custom("T12", name, 20.0, dcodes.UCUM.Millimeter, observation_uid=uid)],
        )
    )
    key = sr.key_identifier(report, report.measurements[0])
    assert key["system"] == "urn:dicom:uid" and key["value"] == f"urn:oid:{uid}"
    assert key["type"]["coding"][0]["code"] == "observation-uid"


def test_vendor_labels_and_units_are_matched_as_data() -> None:
    custom = [
        Custom(
            "L2",
            hd.sr.CodedConcept("ANT-H", "99VENDOR", "Anterior vertebral body height"),
            1.9,
            hd.sr.CodedConcept("cm", "UCUM", "cm"),
        ),
        Custom(
            "L2",
            hd.sr.CodedConcept("MID-H", "99VENDOR", "Vertebral height (middle)"),
            2.3,
            hd.sr.CodedConcept("cm", "UCUM", "cm"),
        ),
        Custom(
            "T11",
            hd.sr.CodedConcept("KYPH", "99VENDOR", "Segmental kyphosis angle"),
            12.0,
            dcodes.UCUM.Degree,
        ),
    ]
    report = read(measurement_sr([image()], custom=custom))
    got = [(m.level, m.measure, m.measure_value) for m in report.measurements]
    assert got == [
        ("L2", "vbh-anterior", 19.0),
        ("L2", "vbh-middle", 23.0),
        ("T11", "kyphosis-angle", 12.0),
    ]
    body = sr.observation(report, report.measurements[0], links(report.study_uid))
    assert body["valueQuantity"] == codes.quantity(19.0, "mm")  # converted to the measure's unit
    vendor = body["code"]["coding"][1]
    assert vendor == {"code": "ANT-H", "display": "Anterior vertebral body height"}  # no URI


def test_unmapped_measurements_are_kept_without_profile() -> None:
    custom = [
        Custom("T12", hd.sr.CodedConcept("121207", "DCM", "Height"), 20.0, dcodes.UCUM.Millimeter),
        Custom(None, dcodes.SCT.CobbAngle, 30.0, hd.sr.CodedConcept("{pixels}", "UCUM", "px")),
    ]
    report = read(measurement_sr([image()], custom=custom))
    assert [m.measure for m in report.measurements] == [None, None]
    full = links(
        report.study_uid, encounter={"reference": "Encounter/e"}, focus={"reference": "Condition/f"}
    )
    for m in report.measurements:
        body = sr.observation(report, m, full)
        validate_resource(body)
        assert "meta" not in body
        assert body["code"]["coding"][0]["system"] in (codes.DCM, codes.SNOMED)
    assert sr.observation(report, report.measurements[1], full)["valueQuantity"] == {
        "value": 30.0,
        "unit": "px",
        "system": codes.UCUM,
        "code": "{pixels}",
    }


def test_profile_is_claimed_only_with_encounter_and_fracture() -> None:
    report = read(measurement_sr([image()], kyphosis={"T12": 10.0}))
    m = report.measurements[0]
    bare = sr.observation(report, m, links(report.study_uid))
    assert "meta" not in bare
    outside = sr.observation(report, m, links(report.study_uid, outside_window=True))
    assert outside["meta"] == {"tag": [codes.TAG_OUTSIDE_WINDOW]}
    full = sr.observation(
        report,
        m,
        links(
            report.study_uid,
            encounter={"reference": "Encounter/e"},
            focus={"reference": "Condition/f"},
        ),
    )
    assert full["meta"]["profile"] == [codes.structure_definition("kyphosis-angle-observation")]
    assert full["valueQuantity"] == codes.quantity(10.0, "deg")


@pytest.mark.parametrize(
    ("time_point", "expected"),
    [
        ("month-6", "month-6"),
        ("6 Months", "month-6"),
        ("Pre-op", "baseline"),
        ("post-operative", "post-intervention"),
        ("3-month follow-up", "month-3"),
        ("week 2", None),
    ],
)
def test_time_point_context(time_point: str, expected: str | None) -> None:
    report = read(measurement_sr([image()], heights=HEIGHTS[:1], time_point=time_point))
    assert report.measurements[0].time_point is not None
    assert report.measurements[0].time_point.time_point == time_point
    assert report.timepoint(TABLE) == expected


def test_time_point_type_code_and_root_context() -> None:
    ds = measurement_sr([image()], heights=HEIGHTS[:1])
    context = hd.sr.TimePointContext(
        time_point="visit A",
        time_point_type=hd.sr.CodedConcept("C1442488", "UMLS", "Baseline"),
        protocol_time_point_identifier="zzz",
    )
    for item in context:
        ds.ContentSequence.append(item)
    report = read(ds)
    assert report.time_point is not None and report.time_point.time_point == "visit A"
    assert report.timepoint(TABLE) == "baseline"  # texts unknown, the type code decides


def test_not_a_measurement_report() -> None:
    assert sr.read_report(image(), TABLE, CET) is None
    assert not sr.is_measurement_report(image())


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"modifiers": {}, "units": {}, "measures": []}, "at least one rule"),
        (
            {"modifiers": {}, "units": {"mm": {"mm": 1}}, "measures": [{"measure": "height"}]},
            "unknown measure",
        ),
        (
            {
                "modifiers": {},
                "units": {"mm": {"mm": 1}},
                "measures": [{"measure": "vbh-anterior", "concepts": ["121207"]}],
            },
            "SCHEME|code",
        ),
        (
            {
                "modifiers": {},
                "units": {"mm": {"mm": 1}},
                "measures": [{"measure": "vbh-anterior", "modifier": "front"}],
            },
            "unknown modifier",
        ),
    ],
)
def test_broken_sr_measures_file_is_refused(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mappings.parse_sr_measures(doc)


# --- the demo cohort's DICOM -----------------------------------------------------------


@pytest.fixture(scope="module")
def demo_rows() -> list[Any]:
    from kyphofhir.study import demo

    return demo.generate(demo.DEFAULT_SEED)


def test_demo_dicom_carries_the_demo_measurements(demo_rows: list[Any]) -> None:
    import itertools

    from kyphofhir.imaging import demo_dicom, patient

    first = list(itertools.islice(demo_dicom.studies(demo_rows, 2009), 1))
    again = next(demo_dicom.studies(demo_rows, 2009))
    assert again.report.SOPInstanceUID == first[0].report.SOPInstanceUID  # deterministic
    for study in first:
        table = {
            (str(r["level"]), column): float(r[column])
            for r in demo_rows
            if r.get("record") == "vertebra"
            and r.get("subject_id") == study.subject
            and r.get("timepoint") == study.timepoint
            for column in ("vbh_anterior", "vbh_middle", "vbh_posterior", "kyphosis_angle")
        }
        report = read(study.report)
        assert report.timepoint(TABLE) == study.timepoint
        got = {
            (m.level, str(m.measure).replace("-", "_")): m.measure_value
            for m in report.measurements
        }
        assert got == table
        assert study.image.StudyInstanceUID == study.report.StudyInstanceUID
        key = patient.patient_key(study.image, default_system="urn:x", issuer_systems={})
        assert key is not None and (key.system, key.value) == (
            codes.SID_STUDY_SUBJECT,
            study.subject,
        )
    clinical = demo_dicom.without_radiographs(demo_rows)
    assert not any(r.get("record") == "vertebra" and r.get("timepoint") for r in clinical)
    assert demo_dicom.count(demo_rows, 1) == sum(
        1 for r in demo_rows if r.get("record") == "visit" and r.get("subject_id") == "BKP-001"
    )


@pytest.mark.slow
def test_demo_generate_writes_dicom(tmp_path: Any) -> None:
    from click.testing import CliRunner

    from kyphofhir.cli import main

    result = CliRunner().invoke(
        main, ["demo", "generate", "--out", str(tmp_path), "--dicom", "--dicom-subjects", "1"]
    )
    assert result.exit_code == 0, result.output
    files = sorted(
        p.relative_to(tmp_path / "dicom").as_posix() for p in (tmp_path / "dicom").rglob("*.dcm")
    )
    assert files[:2] == ["BKP-001/baseline/dx.dcm", "BKP-001/baseline/sr.dcm"]
    assert (tmp_path / "study-table-no-radiographs.csv").is_file()
    assert "storescu" in (tmp_path / "README.txt").read_text("utf-8")
