"""A peer we did not write: dcmtk's ``echoscu`` and ``storescu`` against the listener.

``TCP_NODELAY=1`` is set for the dcmtk tools (without it dcmtk leaves Nagle's algorithm
on and every answer waits about 40 ms for the delayed ACK).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)
from test_dicom_receiver_support import (
    Running,
    instance_files,
    make_dataset,
    module_services,
    needs_dcmtk,
    running_listener,
    write,
)

from kyphofhir.services.context import Services

pytestmark = [pytest.mark.dcmtk, needs_dcmtk]

# storescu proposes uncompressed syntaxes unless told which others to offer
PROPOSE = {
    ExplicitVRLittleEndian: "-xe",
    ImplicitVRLittleEndian: "-xi",
    ExplicitVRBigEndian: "-xb",
    DeflatedExplicitVRLittleEndian: "-xd",
    JPEGBaseline8Bit: "-xy",
    JPEGExtended12Bit: "-xx",
    JPEGLosslessSV1: "-xs",
    JPEGLSLossless: "-xt",
    JPEGLSNearLossless: "-xu",
    JPEG2000Lossless: "-xv",
    JPEG2000: "-xw",
    RLELossless: "-xr",
}


@pytest.fixture(scope="module")
def dicom_services(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    yield from module_services(sqlite_template, tmp_path_factory)


@pytest.fixture
def listener(dicom_services: Services, tmp_path: Path) -> Iterator[Running]:
    with running_listener(dicom_services, tmp_path / "data") as running:
        yield running


def dcmtk(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)


def test_echoscu(listener: Running) -> None:
    done = dcmtk("echoscu", "-aec", "KYPHOFHIR", "127.0.0.1", str(listener.port))
    assert done.returncode == 0, done.stderr


def test_echoscu_wrong_called_ae_title(listener: Running) -> None:
    done = dcmtk("echoscu", "-aec", "ELSEWHERE", "127.0.0.1", str(listener.port))
    assert done.returncode != 0
    assert "Rejected Permanent" in done.stderr
    assert "Called AE Title Not Recognized" in done.stderr


def test_echoscu_not_an_allowed_ae(dicom_services: Services, tmp_path: Path) -> None:
    with running_listener(dicom_services, tmp_path / "d", dicom_allowed_aes="PACS1") as running:
        port = str(running.port)
        refused = dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "KYPHOFHIR", "127.0.0.1", port)
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stderr
        allowed = dcmtk("echoscu", "-aet", "PACS1", "-aec", "KYPHOFHIR", "127.0.0.1", port)
        assert allowed.returncode == 0, allowed.stderr


def test_storescu_every_transfer_syntax_stored_as_sent(listener: Running, tmp_path: Path) -> None:
    study = generate_uid()
    for ts, option in PROPOSE.items():
        path = write(make_dataset(ts, study=study), tmp_path / ts)
        done = dcmtk(
            "storescu", option, "-aec", "KYPHOFHIR", "127.0.0.1", str(listener.port), str(path)
        )
        assert done.returncode == 0, (ts, done.stderr)
    stored = instance_files(listener.store_root)
    assert len(stored) == len(PROPOSE)
    kept = sorted(str(read_file_meta_info(p).TransferSyntaxUID) for p in stored)
    assert kept == sorted(PROPOSE)


def test_storescu_several_files_one_association(listener: Running, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    paths = [str(write(make_dataset(study=study, series=series), tmp_path)) for _ in range(5)]
    done = dcmtk("storescu", "-aec", "KYPHOFHIR", "127.0.0.1", str(listener.port), *paths)
    assert done.returncode == 0, done.stderr
    assert len(listener.listener.store.instances(study, series)) == 5
