"""DICOM → FHIR on SQLite and PostgreSQL: ImagingStudy, Patient policy, SR Observations,
timepoints, concurrency, reconcile, and the no-SR transaction example.

Instances go through ``services.imaging.ingest`` exactly as the receiver calls it (file
in the instance store first, then the FHIR work), and once through the real listener;
results are read back over real HTTP.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from imaging_samples import (
    DX_FOR_PRESENTATION,
    Height,
    PatientInfo,
    dx_image,
    measurement_sr,
    send,
    write,
)
from kyphofhir.cli import main
from kyphofhir.services import imaging
from kyphofhir.services.context import Services
from kyphofhir.store.instances import StoredInstance
from kyphofhir.study import builders, codes

STUDY = builders.DEFAULT_STUDY_ID
ISSUERS = f"STUDY={codes.SID_STUDY_SUBJECT}"
EXAMPLE = (
    Path(__file__).resolve().parents[2] / "docs" / "examples" / "measurements-transaction.json"
)
TAG = f"{codes.CS_IMAGING_TAG}|"


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """PatientIDs issued by "STUDY" are study-subject ids (``dicom_issuer_systems``)."""
    return {**app_config, "dicom_issuer_systems": ISSUERS, "base_url": "https://pacs.test/fhir"}


@pytest.fixture
def svc(app: Flask) -> Services:
    services: Services = app.extensions["kyphofhir"]
    return services


def search(http: Any, query: str) -> list[dict[str, Any]]:
    r = http.get(f"/{query}")
    assert r.status_code == 200, r.content
    return [e["resource"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"]


def one_study(http: Any, study_uid: str) -> dict[str, Any]:
    (study,) = search(http, f"ImagingStudy?identifier=urn:dicom:uid|urn:oid:{study_uid}")
    return study


def enrol(
    http: Any, subject: str, *, index: str = "2024-03-01", fractures: tuple[str, ...] = ("T12",)
) -> str:
    """A study subject in the BKP arm with fracture Conditions; returns the Patient id."""
    resources = [
        builders.research_study(STUDY),
        builders.patient(STUDY, subject, sex="female", birth_date="1948-05-02"),
        builders.research_subject(STUDY, subject, arm="bkp", enrolled=index, index_date=index),
        builders.myeloma_condition(STUDY, subject),
        *(builders.fracture_condition(STUDY, subject, level) for level in fractures),
    ]
    for resource in resources:
        r = http.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
        assert r.status_code in (200, 201), r.content
    return str(resources[1]["id"])


HEIGHTS = [
    Height("T12", "anterior", 18.5),
    Height("T12", "posterior", 24.0),
    Height("L1", "anterior", 22.0),
]


def test_study_patient_endpoint_and_sr_observations_without_duplicates(
    svc: Services, http: Any
) -> None:
    uid = str(generate_uid())
    who = PatientInfo(patient_id="MRN-1001", name="Muster^Erika", sex="F")
    series = str(generate_uid())
    images = [dx_image(who, uid, series_uid=series, instance_number=n) for n in (1, 2)]
    report = measurement_sr(images, heights=HEIGHTS, kyphosis={"T12": 14.5}, time_point="month-3")
    results = send(svc, *images, report)
    assert [r.study_changed for r in results] == [False, False, False]  # re-sends: no change
    send(svc, *images, report)  # the same study sent twice

    study = one_study(http, uid)
    assert study["meta"]["versionId"] == "3"  # one version per new instance, nothing else
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (2, 3)
    assert [m["code"] for m in study["modality"]] == ["DX", "SR"]
    assert study["endpoint"] == [{"reference": "Endpoint/dicomweb"}]
    assert "encounter" not in study  # the patient is in no study: no timepoint, no flag
    # the value-only token form finds it too
    assert search(http, f"ImagingStudy?identifier=urn:oid:{uid}")[0]["id"] == study["id"]

    (patient,) = search(http, f"Patient?identifier={codes.SID_DICOM_PATIENT_ID}|MRN-1001")
    assert study["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert patient["meta"]["tag"][0]["code"] == "needs-reconciliation"
    assert patient["name"][0]["family"] == "Muster" and patient["gender"] == "female"
    assert len(search(http, f"Patient?_tag={TAG}needs-reconciliation")) == 1

    endpoint = http.get("/Endpoint/dicomweb").json()
    assert endpoint["address"] == "https://pacs.test/dicomweb"
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"

    observations = search(http, f"Observation?subject=Patient/{patient['id']}&_count=50")
    assert len(observations) == 4
    assert {o["meta"]["versionId"] for o in observations} == {"1"}
    codes_found = sorted(o["code"]["coding"][0]["code"] for o in observations)
    assert codes_found == ["kyphosis-angle", "vbh-anterior", "vbh-anterior", "vbh-posterior"]
    for o in observations:
        assert o["partOf"][0]["reference"] == f"ImagingStudy/{study['id']}"
        assert "profile" not in o["meta"]  # no visit, no fracture: not the study profile
    by_key = search(
        http,
        f"Observation?identifier={codes.SID_SR_MEASUREMENT}|"
        f"{report.SOPInstanceUID}/{observations[0]['identifier'][0]['value'].split('/', 1)[1]}",
    )
    assert len(by_key) == 1


def test_enrolled_subject_gets_visits_fracture_links_and_window_flags(
    svc: Services, http: Any
) -> None:
    patient_id = enrol(http, "BKP-007", fractures=("T12",))
    month6 = builders.visit_encounter(STUDY, "BKP-007", "month-6", arm="bkp", date="2024-09-01")
    assert http.put(f"/Encounter/{month6['id']}", json=month6).status_code == 201
    who = PatientInfo(patient_id="BKP-007", issuer="STUDY")

    # month 3 by TID 1502 (the date, day 101, agrees)
    uid = str(generate_uid())
    image = dx_image(who, uid, study_date="20240610")
    send(
        svc,
        image,
        measurement_sr([image], heights=HEIGHTS, kyphosis={"T12": 12.0}, time_point="3 months"),
    )
    study = one_study(http, uid)
    assert study["subject"] == {"reference": f"Patient/{patient_id}"}  # matched, not created
    assert not search(http, f"Patient?_tag={TAG}needs-reconciliation")
    visit = http.get(f"/{study['encounter']['reference']}").json()
    assert visit["type"][0]["coding"][0]["code"] == "month-3"
    measured = search(
        http,
        f"Observation?code={codes.CS_MEASURE}|vbh-anterior"
        f"&encounter.type={codes.CS_TIMEPOINT}|month-3",
    )
    assert sorted(o["bodySite"]["text"] for o in measured) == ["L1", "T12"]
    t12 = next(o for o in measured if o["bodySite"]["text"] == "T12")
    fracture = builders.fracture_condition(STUDY, "BKP-007", "T12")
    assert t12["focus"] == [{"reference": f"Condition/{fracture['id']}"}]
    assert t12["meta"]["profile"] == [codes.structure_definition("vertebral-height-observation")]
    assert t12["extension"][0]["valueReference"] == {"reference": f"ResearchStudy/{STUDY}"}
    l1 = next(o for o in measured if o["bodySite"]["text"] == "L1")
    assert "focus" not in l1 and "profile" not in l1["meta"]  # no L1 fracture: none created
    (angle,) = search(http, f"Observation?code={codes.CS_MEASURE}|kyphosis-angle")
    assert angle["meta"]["profile"] == [codes.structure_definition("kyphosis-angle-observation")]

    # month 6 by date (day 184), onto the visit Encounter that already exists
    uid6 = str(generate_uid())
    send(svc, dx_image(who, uid6, study_date="20240901"))
    assert one_study(http, uid6)["encounter"] == {"reference": f"Encounter/{month6['id']}"}

    # day 304 lies in no window: kept and flagged, never dropped
    late = str(generate_uid())
    send(svc, dx_image(who, late, study_date="20241230"))
    study = one_study(http, late)
    assert "encounter" not in study
    assert search(http, f"ImagingStudy?_tag={TAG}outside-window")[0]["id"] == study["id"]


def test_concurrent_ingest_of_one_study_gives_exact_counts(svc: Services, http: Any) -> None:
    uid = str(generate_uid())
    series = [str(generate_uid()) for _ in range(3)]
    who = PatientInfo(patient_id="MRN-CONC")
    batches = [
        [
            dx_image(
                who,
                uid,
                series_uid=series[(t + n) % 3],
                series_number=(t + n) % 3 + 1,
                instance_number=t * 10 + n,
            )
            for n in range(4)
        ]
        for t in range(8)
    ]
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(batch: list[Dataset]) -> None:
        try:
            barrier.wait()
            for ds in batch:
                imaging.ingest_dataset(svc, ds)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    study = one_study(http, uid)
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (3, 32)
    assert sum(len(s["instance"]) for s in study["series"]) == 32
    assert len(search(http, "Patient?identifier=MRN-CONC")) == 1
    assert study["meta"]["versionId"] == "32"


def _send_over_dicom(port: int, paths: list[Path]) -> list[int]:
    """One association (pynetdicom as the SCU) storing ``paths``; the statuses."""
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(DX_FOR_PRESENTATION, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="KYPHOFHIR")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(path).Status) for path in paths]
    finally:
        assoc.release()


def test_concurrent_associations_through_the_listener(svc: Services, http: Any) -> None:
    """8 associations store instances of one study at once through the real listener."""
    from kyphofhir.dicom.listener import Listener

    uid = str(generate_uid())
    who = PatientInfo(patient_id="MRN-NET")
    series = [str(generate_uid()) for _ in range(3)]
    folder = Path(svc.settings.data_dir) / "outgoing"
    batches = [
        [
            write(
                dx_image(
                    who, uid, series_uid=series[n], series_number=n + 1, instance_number=t * 10 + n
                ),
                folder,
            )
            for n in range(3)
        ]
        for t in range(8)
    ]
    settings = dataclasses.replace(svc.settings, host="127.0.0.1", dicom_shutdown_timeout=5)
    listener = Listener(settings, svc)  # the real ingest: services.imaging.ingest
    port = listener.start(port=0)[1]
    statuses: list[list[int]] = []
    try:
        threads = [
            threading.Thread(target=lambda b=b: statuses.append(_send_over_dicom(port, b)))
            for b in batches
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        listener.stop(grace=2)
    assert statuses == [[0, 0, 0]] * 8
    study = one_study(http, uid)
    assert (study["numberOfSeries"], study["numberOfInstances"]) == (3, 24)


def test_reconcile_moves_a_dicom_patient_into_the_study_subject(
    svc: Services, http: Any, app_config: dict[str, Any]
) -> None:
    target = enrol(http, "BKP-021", fractures=("T12",))
    who = PatientInfo(patient_id="MRN-555", name="Doe^Jane")  # the hospital MRN: unknown here
    uid = str(generate_uid())
    image = dx_image(who, uid, study_date="20240610")
    send(svc, image, measurement_sr([image], heights=HEIGHTS[:1], time_point="month-3"))
    (source,) = search(http, f"Patient?_tag={TAG}needs-reconciliation")
    assert "encounter" not in one_study(http, uid)

    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "dicom",
            "reconcile",
            "--from",
            f"Patient/{source['id']}",
            "--into",
            f"Patient/{target}",
            "--db",
            app_config["db"],
            "--data-dir",
            app_config["data_dir"],
        ],
        env={"KYPHOFHIR_DICOM_ISSUER_SYSTEMS": ISSUERS},
    )
    assert result.exit_code == 0, result.output
    assert "1 imaging stud" in result.output

    study = one_study(http, uid)
    assert study["subject"] == {"reference": f"Patient/{target}"}
    assert (
        http.get(f"/{study['encounter']['reference']}").json()["type"][0]["coding"][0]["code"]
        == "month-3"
    )
    (height,) = search(
        http, f"Observation?subject=Patient/{target}&code={codes.CS_MEASURE}|vbh-anterior"
    )
    assert height["encounter"] == study["encounter"]  # re-derived from the SR in the store
    assert height["meta"]["profile"] == [codes.structure_definition("vertebral-height-observation")]
    assert not search(http, f"Observation?subject=Patient/{source['id']}")

    merged = http.get(f"/Patient/{source['id']}").json()
    assert merged["active"] is False
    assert merged["link"] == [{"other": {"reference": f"Patient/{target}"}, "type": "replaced-by"}]
    assert "tag" not in merged["meta"]
    kept = http.get(f"/Patient/{target}").json()
    assert {"system": codes.SID_DICOM_PATIENT_ID, "value": "MRN-555"} in kept["identifier"]
    assert kept["link"] == [{"other": {"reference": f"Patient/{source['id']}"}, "type": "replaces"}]

    # the next study with that Patient ID goes straight to the study subject
    later = str(generate_uid())
    send(svc, dx_image(who, later, study_date="20240901"))
    assert one_study(http, later)["subject"] == {"reference": f"Patient/{target}"}
    assert len(search(http, "Patient?identifier=MRN-555")) == 2  # the merged one stays

    bad = runner.invoke(
        main,
        [
            "dicom",
            "reconcile",
            "--from",
            f"Patient/{target}",
            "--into",
            f"Patient/{target}",
            "--db",
            app_config["db"],
            "--data-dir",
            app_config["data_dir"],
        ],
    )
    assert bad.exit_code != 0 and "itself" in bad.output


def test_measurements_transaction_example_references_the_study(svc: Services, http: Any) -> None:
    bundle = json.loads(EXAMPLE.read_text("utf-8"))
    study_uid = bundle["entry"][0]["resource"]["partOf"][0]["reference"].split("urn:oid:")[1]
    patient_ref = bundle["entry"][0]["resource"]["subject"]["reference"]
    mrn = patient_ref.split("|")[1].split("&")[0]
    early = http.post("", json=bundle)  # before the images: nothing to refer to
    assert early.status_code == 412, early.content
    send(svc, dx_image(PatientInfo(patient_id=mrn), study_uid))
    r = http.post("", json=bundle)
    assert r.status_code == 200, r.content
    assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["201"] * len(
        bundle["entry"]
    )
    study = one_study(http, study_uid)
    made = search(http, f"Observation?part-of=ImagingStudy/{study['id']}&_count=50")
    assert len(made) == len(bundle["entry"])
    for o in made:
        assert o["derivedFrom"] == [{"reference": f"ImagingStudy/{study['id']}"}]
        assert o["subject"] == study["subject"]
    again = http.post("", json=bundle)  # conditional creates: nothing new the second time
    assert [e["response"]["status"][:3] for e in again.json()["entry"]] == ["200"] * len(
        bundle["entry"]
    )


def test_ingest_many_writes_each_study_once(svc: Services, http: Any) -> None:
    """A group of instances of two studies in one unit of work: one version per study."""
    uids = [str(generate_uid()), str(generate_uid())]
    who = PatientInfo(patient_id="MRN-BATCH")
    images = [dx_image(who, uids[n % 2], instance_number=n) for n in range(6)]
    store = imaging.instance_store(svc.settings)
    stored = []
    for ds in images:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        uid, series, sop = (
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            str(ds.SOPInstanceUID),
        )
        path, size, _ = store.put(uid, series, sop, [buffer.getvalue()])
        stored.append(
            StoredInstance(
                uid, series, sop, str(ds.SOPClassUID), "1.2.840.10008.1.2.1", path, size, ds
            )
        )
    results = imaging.ingest_many(svc, stored)
    assert [r.study_created for r in results] == [True, True]
    for uid in uids:
        study = one_study(http, uid)
        assert study["meta"]["versionId"] == "1"
        assert (study["numberOfSeries"], study["numberOfInstances"]) == (3, 3)
    assert len(search(http, "Patient?identifier=MRN-BATCH")) == 1
    again = imaging.ingest_many(svc, stored)
    assert [r.study_changed for r in again] == [False, False]
