"""DICOM → ImagingStudy, Patient and values (pure mapping, no database)."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import generate_uid

from imaging_samples import Height, PatientInfo, dx_image, measurement_sr
from kyphofhir.fhir.models import validate_resource
from kyphofhir.imaging import imaging_study, mappings, patient, values
from kyphofhir.study import codes

MAPS = mappings.load()
BODY = MAPS.body_parts
SUBJECT = {"reference": "Patient/p1"}
CET = timezone(timedelta(hours=1))


def merge(study: dict[str, Any] | None, ds: Dataset) -> dict[str, Any]:
    return imaging_study.merge_instance(
        study,
        ds,
        subject=SUBJECT,
        body_parts=BODY,
        endpoint_ref={"reference": "Endpoint/dicomweb"},
        zone=CET,
    )


@pytest.fixture
def study_uid() -> str:
    return str(generate_uid())


def test_first_instance_makes_an_imaging_study(study_uid: str) -> None:
    ds = dx_image(PatientInfo(), study_uid, accession="A-77")
    body = merge(None, ds)
    validate_resource(body)
    assert body["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}
    accession = body["identifier"][1]
    assert accession["value"] == "A-77"
    assert accession["type"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
        "code": "ACSN",
        "display": "Accession ID",
    }
    assert body["status"] == "available"
    assert body["subject"] == SUBJECT
    assert body["started"] == "2024-03-05T10:15:00+01:00"
    assert body["referrer"] == {"display": "Dr. Rita Referrer"}
    assert body["description"] == "Spine radiograph"
    assert body["endpoint"] == [{"reference": "Endpoint/dicomweb"}]
    assert body["modality"] == [
        {"system": codes.DCM, "code": "DX", "display": "Digital Radiography"}
    ]
    assert (body["numberOfSeries"], body["numberOfInstances"]) == (1, 1)
    (series,) = body["series"]
    assert series["uid"] == str(ds.SeriesInstanceUID)  # a plain UID, no urn:oid:
    assert series["modality"]["code"] == "DX"
    assert series["bodySite"] == {
        "system": codes.SNOMED,
        "code": "122495006",
        "display": "Thoracic spine",
    }
    assert series["started"] == "2024-03-05T10:15:00+01:00"
    assert series["instance"] == [
        {
            "uid": str(ds.SOPInstanceUID),
            "sopClass": {
                "system": "urn:ietf:rfc:3986",
                "code": "urn:oid:1.2.840.10008.5.1.4.1.1.1.1",
            },
            "number": 1,
        }
    ]


def test_merge_is_idempotent_and_counts_are_exact(study_uid: str) -> None:
    series_a, series_b = str(generate_uid()), str(generate_uid())
    datasets = [
        dx_image(PatientInfo(), study_uid, series_uid=series_a, instance_number=1),
        dx_image(PatientInfo(), study_uid, series_uid=series_a, instance_number=2),
        dx_image(PatientInfo(), study_uid, series_uid=series_b, series_number=2),
    ]
    body = None
    for ds in datasets:
        body = merge(body, ds)
    assert body is not None
    again = merge(body, datasets[1])
    assert again == body  # the same SOP instance twice changes nothing
    assert (body["numberOfSeries"], body["numberOfInstances"]) == (2, 3)
    assert [s["numberOfInstances"] for s in body["series"]] == [2, 1]
    assert [i["number"] for i in body["series"][0]["instance"]] == [1, 2]


def test_arrival_order_does_not_matter(study_uid: str) -> None:
    series = [str(generate_uid()) for _ in range(2)]
    datasets = [
        dx_image(
            PatientInfo(),
            study_uid,
            series_uid=series[i % 2],
            series_number=i % 2 + 1,
            instance_number=i,
        )
        for i in range(5)
    ]
    results = []
    for order in itertools.permutations(datasets):
        body = None
        for ds in order:
            body = merge(body, ds)
        results.append(json.dumps(body, sort_keys=True))
    assert len(set(results)) == 1


def test_sr_instance_gets_its_title_and_modality(study_uid: str) -> None:
    image = dx_image(PatientInfo(), study_uid)
    report = measurement_sr([image], heights=[Height("T12", "anterior", 20.0)])
    body = merge(merge(None, image), report)
    assert [m["code"] for m in body["modality"]] == ["DX", "SR"]
    sr_series = next(s for s in body["series"] if s["modality"]["code"] == "SR")
    assert sr_series["instance"][0]["title"] == "Imaging Measurement Report"
    assert sr_series["instance"][0]["sopClass"]["code"] == ("urn:oid:1.2.840.10008.5.1.4.1.1.88.34")


@pytest.mark.parametrize(
    ("term", "code"),
    [
        ("SPINE", "421060004"),
        ("TSPINE", "122495006"),
        ("LSPINE", "122496007"),
        ("TLSPINE", "1217256009"),
        ("CSPINE", "122494005"),
        ("CHEST", "816094009"),
        ("ABDOMEN", "818981001"),
        ("PELVIS", "816092008"),
        ("WHOLEBODY", "38266002"),
        ("SKULL", "89546000"),
        ("HIP", "24136001"),
        ("t-spine", "122495006"),  # case, hyphens and spaces are ignored
        ("Thoraco Lumbar Spine", None),  # not a defined term: text only
    ],
)
def test_body_part_examined_maps_to_snomed(term: str, code: str | None) -> None:
    site = BODY.coding(term)
    assert site is not None
    if code is None:
        assert site == {"display": term}
    else:
        assert site["system"] == codes.SNOMED and site["code"] == code


def test_laterality_and_missing_values(study_uid: str) -> None:
    ds = dx_image(PatientInfo(), study_uid, tz_offset=None)
    ds.ImageLaterality = "L"
    del ds.StudyTime
    ds.SeriesTime = "0930"
    del ds.ReferringPhysicianName
    body = merge(None, ds)
    series = body["series"][0]
    assert series["laterality"]["code"] == "419161000"
    assert body["started"] == "2024-03-05"  # a date without time needs no zone
    assert series["started"] == "2024-03-05T09:30:00+01:00"  # the configured zone
    assert "referrer" not in body


def test_endpoint_is_a_valid_wado_rs_endpoint() -> None:
    body = imaging_study.endpoint("https://pacs.example.org/dicomweb")
    validate_resource(body)
    assert body["connectionType"]["code"] == "dicom-wado-rs"
    assert body["payloadMimeType"] == ["application/dicom"]


# --- values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("da", "tm", "offset", "expected"),
    [
        ("20240305", "101500", "+0100", "2024-03-05T10:15:00+01:00"),
        ("20240305", "101500.25", "-0500", "2024-03-05T10:15:00.25-05:00"),
        ("20240305", "1015", None, "2024-03-05T10:15:00+01:00"),
        ("20240305", "10:15:00", None, "2024-03-05T10:15:00+01:00"),  # ACR-NEMA style
        ("20240305", "", None, "2024-03-05"),
        ("20240305", "99", None, "2024-03-05"),  # a time that is no time: date only
        ("2024030", "101500", None, None),
        ("20240231", None, None, None),
    ],
)
def test_dicom_date_time_to_fhir(
    da: str, tm: str | None, offset: str | None, expected: str | None
) -> None:
    assert values.fhir_datetime(da, tm, offset, CET) == expected


def test_dicom_dt_to_fhir() -> None:
    assert values.fhir_dt("20240305101500+0200", None, CET) == "2024-03-05T10:15:00+02:00"
    assert values.fhir_dt("20240305101500", "+0000", None) == "2024-03-05T10:15:00Z"
    assert values.fhir_dt("202403", None, CET) == "2024-03"
    assert values.fhir_dt("garbage", None, CET) is None


def test_person_name() -> None:
    assert values.person_name("Muster^Erika^Maria^Dr.^PhD") == {
        "family": "Muster",
        "given": ["Erika", "Maria"],
        "prefix": ["Dr."],
        "suffix": ["PhD"],
        "text": "Dr. Erika Maria Muster PhD",
    }
    assert values.person_name("") is None


# --- patient ----------------------------------------------------------------------------


def test_patient_key_default_system_and_issuer_table() -> None:
    ds = dx_image(PatientInfo(patient_id="123", issuer="HOSP_A"), "1.2.3")
    key = patient.patient_key(ds, default_system="urn:default", issuer_systems={})
    assert key is not None
    assert (key.system, key.value, key.issuer) == ("urn:default", "123", "HOSP_A")
    assert key.identifier()["assigner"] == {"display": "HOSP_A"}
    mapped = patient.patient_key(
        ds, default_system="urn:default", issuer_systems={"HOSP_A": "urn:oid:1.2.3.4"}
    )
    assert mapped is not None and (mapped.system, mapped.issuer) == ("urn:oid:1.2.3.4", None)


def test_patient_key_from_issuer_qualifiers() -> None:
    ds = dx_image(PatientInfo(patient_id="123", issuer="HOSP_A"), "1.2.3")
    item = Dataset()
    item.UniversalEntityID = "1.2.276.0.99.5"
    item.UniversalEntityIDType = "ISO"
    ds.IssuerOfPatientIDQualifiersSequence = [item]
    key = patient.patient_key(ds, default_system="urn:default", issuer_systems={})
    assert key is not None and key.system == "urn:oid:1.2.276.0.99.5"


def test_no_patient_id_no_key() -> None:
    ds = dx_image(PatientInfo(patient_id=""), "1.2.3")
    assert patient.patient_key(ds, default_system="urn:x", issuer_systems={}) is None


def test_new_patient_from_patient_module_is_tagged() -> None:
    ds = dx_image(PatientInfo(patient_id="P9", sex="M", birth_date="19500101"), "1.2.3")
    key = patient.patient_key(ds, default_system=codes.SID_DICOM_PATIENT_ID, issuer_systems={})
    body = patient.new_patient(ds, key)
    validate_resource(body)
    assert body["identifier"] == [{"system": codes.SID_DICOM_PATIENT_ID, "value": "P9"}]
    assert body["gender"] == "male" and body["birthDate"] == "1950-01-01"
    assert body["name"][0]["family"] == "Muster"
    assert patient.is_tagged(body, codes.TAG_NEEDS_RECONCILIATION)


def test_issuer_systems_setting() -> None:
    assert patient.parse_issuer_systems(" A=urn:a , B=urn:b ") == {"A": "urn:a", "B": "urn:b"}
    with pytest.raises(ValueError, match="ISSUER=system"):
        patient.parse_issuer_systems("A")


# --- the mapping files --------------------------------------------------------------------


def test_shipped_mapping_files_load() -> None:
    folder = mappings.default_mappings_dir()
    assert mappings.load(folder).body_parts.terms
    doc = json.loads((folder / "body-part.json").read_text("utf-8"))
    for term in (
        "SPINE",
        "TSPINE",
        "LSPINE",
        "TLSPINE",
        "CSPINE",
        "CHEST",
        "ABDOMEN",
        "PELVIS",
        "WHOLEBODY",
        "SKULL",
        "HIP",
    ):
        assert term in doc["terms"]


def test_broken_body_part_file_is_refused() -> None:
    with pytest.raises(ValueError, match="numeric SNOMED"):
        mappings.parse_body_parts({"terms": {"SPINE": {"code": "T-D04000"}}})


def test_copy_of_study_is_not_modified(study_uid: str) -> None:
    body = merge(None, dx_image(PatientInfo(), study_uid))
    frozen = copy.deepcopy(body)
    merge(body, dx_image(PatientInfo(), study_uid))
    assert body == frozen


def test_mappings_folder_is_the_repository_one() -> None:
    assert mappings.default_mappings_dir() == Path(__file__).resolve().parents[2] / "mappings"
