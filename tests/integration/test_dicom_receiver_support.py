"""Shared helpers of the DICOM receiver tests (no tests here): data sets, listeners, SCUs.

Data sets are built with pydicom in the test; compressed transfer syntaxes get
encapsulated fragments of made-up bytes (nothing is ever decoded on the way).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import CTImageStorage, Verification

from kyphofhir.app import build_services
from kyphofhir.config import Settings
from kyphofhir.dicom.listener import Listener
from kyphofhir.dicom.parse import file_header
from kyphofhir.services.context import Services
from kyphofhir.store.instances import StoredInstance

Ingest = Callable[[Services, StoredInstance], None]
SETTING_NAMES = {f.name for f in dataclasses.fields(Settings)}

DCMTK = shutil.which("storescu") is not None and shutil.which("echoscu") is not None
needs_dcmtk = pytest.mark.skipif(not DCMTK, reason="dcmtk (storescu, echoscu) not installed")


def no_ingest(svc: Services, stored: StoredInstance) -> None:
    """An ingest that indexes nothing (tests of the receiver alone)."""


def make_dataset(
    transfer_syntax: str = ExplicitVRLittleEndian,
    *,
    sop_class: str = CTImageStorage,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    rows: int = 16,
    columns: int = 16,
    patient_id: str = "KF-DICOM-1",
) -> Dataset:
    """A small image data set (16-bit, MONOCHROME2) in ``transfer_syntax``."""
    ts = UID(transfer_syntax)
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop or generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Test^Receiver"
    ds.Modality = "CT"
    ds.StudyDate = "20240305"
    ds.InstanceNumber = 1
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if ts.is_compressed:
        frame = b"\xff\xd8" + bytes(range(256)) * 8 + b"\xff\xd9"
        ds.PixelData = encapsulate([frame])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = bytes(rows * columns * 2)
        ds["PixelData"].VR = "OW"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def write(ds: Dataset, folder: Path, meta: dict[str, str] | None = None) -> Path:
    """Save as a Part 10 file named after the SOP Instance UID.

    ``meta`` overrides file meta elements after pydicom has filled them from the data set
    (a sender whose command disagrees with its data set).
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    if meta:
        file_meta = read_file_meta_info(path)
        raw = path.read_bytes()
        body = raw[128 + 4 + 12 + int(file_meta.FileMetaInformationGroupLength) :]
        for keyword, value in meta.items():
            setattr(file_meta, keyword, value)
        path.write_bytes(file_header(file_meta) + body)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Running:
    listener: Listener
    settings: Settings
    svc: Services

    @property
    def port(self) -> int:
        return self.listener.address[1]

    @property
    def store_root(self) -> Path:
        return self.listener.store.root


def receiver_settings(db_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "db": db_url,
        "data_dir": str(data_dir),
        "host": "127.0.0.1",
        "auto_migrate": False,
        "dicom_shutdown_timeout": 5,
    }
    if "load_profiles" in SETTING_NAMES:  # the artefacts are not needed to receive
        values["load_profiles"] = False
    return Settings.load({**values, **overrides}, environ={})


def module_services(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    """Services on an SQLite database of the test module's own (built once: 0.5 s); a
    module-scoped fixture of each test module yields from it."""
    folder = tmp_path_factory.mktemp("dicom-db")
    path = folder / "kyphofhir.sqlite3"
    shutil.copy(sqlite_template, path)
    svc = build_services(receiver_settings(f"sqlite:///{path}", folder))
    yield svc
    svc.store.dispose()


@contextmanager
def running_listener(
    svc: Services,
    data_dir: Path,
    ingest: Ingest | None = no_ingest,
    **overrides: Any,
) -> Iterator[Running]:
    """A listener on 127.0.0.1 and a free port, in this process, stopped afterwards.

    ``ingest=None`` means the real one (``services.imaging.ingest``).
    """
    settings = dataclasses.replace(svc.settings, data_dir=str(data_dir), **overrides)
    listener = Listener(settings, svc, ingest=ingest)
    listener.start(port=0)
    try:
        yield Running(listener, settings, svc)
    finally:
        listener.stop(grace=2)


def scu(
    contexts: Sequence[tuple[str, Sequence[str]]] | None = None,
    ae_title: str = "TESTSCU",
) -> AE:
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for abstract, syntaxes in contexts or [(Verification, [ExplicitVRLittleEndian])]:
        ae.add_requested_context(abstract, list(syntaxes))
    return ae


@contextmanager
def association(
    port: int,
    contexts: Sequence[tuple[str, Sequence[str]]] | None = None,
    ae_title: str = "TESTSCU",
    called: str = "KYPHOFHIR",
    **kwargs: Any,
) -> Iterator[Association]:
    assoc = scu(contexts, ae_title).associate("127.0.0.1", port, ae_title=called, **kwargs)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def send_files(port: int, paths: list[Path], ae_title: str = "TESTSCU") -> list[int]:
    """C-STORE each file byte for byte (chunked from disk, never decoded); statuses."""
    metas = [read_file_meta_info(p) for p in paths]
    pairs = {(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas}
    requested = [(sop_class, [ts]) for sop_class, ts in sorted(pairs)]  # one context each
    statuses: list[int] = []
    old = pynetdicom._config.STORE_SEND_CHUNKED_DATASET
    pynetdicom._config.STORE_SEND_CHUNKED_DATASET = True
    try:
        with association(port, requested, ae_title=ae_title) as assoc:
            assert assoc.is_established, "association not established"
            for path in paths:
                rsp = assoc.send_c_store(path)
                statuses.append(int(rsp.Status) if "Status" in rsp else -1)
    finally:
        pynetdicom._config.STORE_SEND_CHUNKED_DATASET = old
    return statuses


def instance_files(root: Path) -> list[Path]:
    """Every ``*.dcm`` under the store root."""
    return sorted(root.rglob("*.dcm")) if root.exists() else []


def visible_temp_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.tmp")) if root.exists() else []


# ----------------------------------------------------------------- the CLI as a process


def cli_env(db_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KYPHOFHIR_")}
    env.update(
        {
            "KYPHOFHIR_DB": db_url,
            "KYPHOFHIR_DATA_DIR": str(data_dir),
            "KYPHOFHIR_HOST": "127.0.0.1",
            "KYPHOFHIR_LOG_LEVEL": "INFO",
            "KYPHOFHIR_LOAD_PROFILES": "false",
        }
    )
    env.update({f"KYPHOFHIR_{k.upper()}": v for k, v in settings.items()})
    return env


def start_cli_listener(
    db_url: str, data_dir: Path, port: int, log: Path, **settings: str
) -> subprocess.Popen[bytes]:
    """``kyphofhir dicom --port PORT`` as a subprocess; returns once it answers C-ECHO."""
    offset = log.stat().st_size if log.exists() else 0
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kyphofhir", "dicom", "--port", str(port)],
        env=cli_env(db_url, data_dir, **settings),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    wait_for_echo(port, proc, log, offset)
    return proc


def wait_for_echo(
    port: int, proc: subprocess.Popen[bytes] | None, log: Path, offset: int = 0
) -> None:
    """Wait for the listener's start line in its log, then check it answers C-ECHO.

    (pynetdicom leaks a socket when it associates to a closed port, so the port is not
    probed before the listener says it is open.)
    """
    deadline = time.monotonic() + 60
    started = f":{port} (allowed"
    while started not in log.read_bytes()[offset:].decode(errors="replace"):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"listener exited: {log.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise AssertionError(f"listener did not come up: {log.read_text(errors='replace')}")
        time.sleep(0.1)
    with association(port) as assoc:
        assert assoc.is_established and int(assoc.send_c_echo().Status) == 0
