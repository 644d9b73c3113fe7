"""Orthanc as the PACS: it pushes a study to kyphofhir and asks for storage commitment.

Orthanc (Debian package ``orthanc``) is started by the test with a configuration of its
own (temporary folders, its own ports, HTTP for local clients only, no plugins) where
kyphofhir is a DICOM modality. The study is uploaded to Orthanc over its REST API and
Orthanc is asked to C-STORE it to kyphofhir, as a PACS administrator would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom.uid import JPEGBaseline8Bit, generate_uid
from pynetdicom.sop_class import CTImageStorage
from test_dicom_receiver_support import (
    Running,
    free_port,
    instance_files,
    make_dataset,
    module_services,
    running_listener,
    write,
)

from kyphofhir.dicom.commitment import indexed_instances
from kyphofhir.services.context import Services

ORTHANC = shutil.which("Orthanc") or (
    "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
)
pytestmark = pytest.mark.skipif(ORTHANC is None, reason="Orthanc is not installed")


@pytest.fixture(scope="module")
def dicom_services(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    yield from module_services(sqlite_template, tmp_path_factory)


class Orthanc:
    def __init__(self, http_port: int, dicom_port: int) -> None:
        self.base = f"http://127.0.0.1:{http_port}"
        self.dicom_port = dicom_port
        self.http = requests.Session()

    def get(self, path: str) -> Any:
        r = self.http.get(self.base + path, timeout=30)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body)
        r = self.http.post(self.base + path, data=data, timeout=60)
        r.raise_for_status()
        return r.json()


@pytest.fixture
def listener(dicom_services: Services, tmp_path: Path) -> Iterator[Running]:
    """kyphofhir with the real FHIR indexing; ORTHANC is the only allowed AE (its
    commitment reports go back to Orthanc's own DICOM port)."""
    orthanc_dicom = free_port()
    with running_listener(
        dicom_services,
        tmp_path / "kf",
        ingest=None,
        dicom_allowed_aes=f"ORTHANC@127.0.0.1:{orthanc_dicom}",
    ) as running:
        running.orthanc_dicom_port = orthanc_dicom  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def orthanc(listener: Running, tmp_path: Path) -> Iterator[Orthanc]:
    assert ORTHANC is not None
    folder = tmp_path / "orthanc"
    folder.mkdir()
    http_port = free_port()
    dicom_port: int = listener.orthanc_dicom_port  # type: ignore[attr-defined]
    config = {
        "Name": "kyphofhir-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,  # HTTP for local clients only
        "AuthenticationEnabled": False,
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,  # receives kyphofhir's storage commitment reports
        "DicomModalities": {"kyphofhir": ["KYPHOFHIR", "127.0.0.1", listener.port]},
        "DicomScuTimeout": 30,
        "Plugins": [],
        "StorageCompression": False,
        "SaveJobs": False,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config))
    log = folder / "orthanc.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([ORTHANC, str(path)], stdout=out, stderr=subprocess.STDOUT)
    client = Orthanc(http_port, dicom_port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get("/system")
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log.read_text(errors="replace")) from None
                time.sleep(0.1)
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_orthanc_pushes_a_study_and_gets_it_committed(
    listener: Running, orthanc: Orthanc, dicom_services: Services, tmp_path: Path
) -> None:
    study, series = generate_uid(), generate_uid()
    files = [
        write(make_dataset(study=study, series=series, patient_id="KF-ORTHANC-1"), tmp_path)
        for _ in range(3)
    ]
    jpeg = make_dataset(JPEGBaseline8Bit, study=study, patient_id="KF-ORTHANC-1")
    files.append(write(jpeg, tmp_path / "jpeg"))
    for path in files:
        orthanc.post("/instances", path.read_bytes())
    (orthanc_study,) = orthanc.get("/studies")

    # the PACS administrator's "send to kyphofhir"
    job = orthanc.post("/modalities/kyphofhir/store", {"Resources": [orthanc_study]})
    assert job.get("FailedInstancesCount", 0) == 0, job
    assert sorted(p.name for p in instance_files(listener.store_root)) == sorted(
        p.name for p in files
    )
    sops = [p.stem for p in files]
    assert set(indexed_instances(dicom_services, sops)) == set(sops)

    # storage commitment, so that the PACS may delete its copy; one unknown instance
    unknown = generate_uid()
    request = {
        "DicomInstances": [[CTImageStorage, sop] for sop in [*sops, unknown]],
        "Timeout": 30,
    }
    answer = orthanc.post("/modalities/kyphofhir/storage-commitment", request)
    report: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        report = orthanc.get(answer["Path"])
        if report.get("Status") != "Pending":
            break
        time.sleep(0.2)
    assert report.get("Status") == "Failure", report  # one failed, the others committed
    assert sorted(item["SOPInstanceUID"] for item in report["Success"]) == sorted(sops)
    assert [(f["SOPInstanceUID"], f["FailureReason"]) for f in report["Failures"]] == [
        (unknown, 0x0112)
    ]
