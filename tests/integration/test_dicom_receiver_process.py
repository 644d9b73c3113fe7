"""The listener as the operator runs it: ``kyphofhir dicom`` and ``kyphofhir serve``.

SIGKILL in the middle of a transfer leaves no instance file and no FHIR resource for
the instance that was not acknowledged (and the next start sweeps stale temporary
files); SIGTERM lets the C-STORE in flight finish before the process exits.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import evt
from pynetdicom.sop_class import CTImageStorage
from test_dicom_receiver_support import (
    cli_env,
    free_port,
    instance_files,
    make_dataset,
    receiver_settings,
    running_listener,
    scu,
    send_files,
    start_cli_listener,
    visible_temp_files,
    wait_for_echo,
    write,
)

from kyphofhir.app import build_services
from kyphofhir.dicom.commitment import indexed_instances
from kyphofhir.store.instances import InstanceStore


@pytest.fixture
def db_file(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "kyphofhir.sqlite3"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


class Paused:
    """Blocks the sending SCU after a few P-DATA PDUs of a big instance, until released:
    the instance is then known to be in the middle of its transfer."""

    def __init__(self, after: int = 5) -> None:
        self.after = after
        self.count = 0
        self.reached = threading.Event()
        self.go = threading.Event()

    def handle(self, event: Any) -> None:
        if type(event.pdu).__name__ != "P_DATA_TF":
            return
        self.count += 1
        if self.count == self.after:
            self.reached.set()
            self.go.wait(30)


def big_instance(tmp_path: Path, study: str) -> Path:
    return write(make_dataset(study=study, rows=1024, columns=1024), tmp_path / "big")


def send_paused(port: int, path: Path, paused: Paused, result: list[Any]) -> None:
    """C-STORE ``path`` on a new association with the pausing handler; status or error."""
    old = pynetdicom._config.STORE_SEND_CHUNKED_DATASET
    pynetdicom._config.STORE_SEND_CHUNKED_DATASET = True
    assoc = scu([(CTImageStorage, [ExplicitVRLittleEndian])]).associate(
        "127.0.0.1", port, ae_title="KYPHOFHIR", evt_handlers=[(evt.EVT_PDU_SENT, paused.handle)]
    )
    try:
        rsp = assoc.send_c_store(path)
        result.append(int(rsp.Status) if "Status" in rsp else None)
        if assoc.is_established:
            assoc.release()
    except Exception as exc:  # the peer vanished
        result.append(exc)
    finally:
        pynetdicom._config.STORE_SEND_CHUNKED_DATASET = old
        # pynetdicom does not close a socket whose peer has gone (shutdown() raises first)
        raw = getattr(assoc.dul.socket, "socket", None)
        if raw is not None:
            raw.close()


def test_sigkill_mid_transfer_leaves_no_partial_instance(db_file: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    log = tmp_path / "listener.log"
    proc = start_cli_listener(db_file, data, port, log)
    study = generate_uid()
    try:
        acknowledged = write(make_dataset(study=study), tmp_path / "ok")
        assert send_files(port, [acknowledged]) == [0]
        big = big_instance(tmp_path, study)
        paused, result = Paused(), list[Any]()
        sender = threading.Thread(target=send_paused, args=(port, big, paused, result))
        sender.start()
        assert paused.reached.wait(20), "the transfer never started"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        paused.go.set()
        sender.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert result and result[0] != 0x0000  # never acknowledged
    root = data / "dicom"
    assert [p.name for p in instance_files(root)] == [acknowledged.name]
    svc = build_services(receiver_settings(db_file, data))
    try:
        assert set(indexed_instances(svc, [acknowledged.stem, big.stem])) == {acknowledged.stem}

        # a writer killed between its temporary file and the rename leaves this behind:
        store = InstanceStore(root)
        dead = subprocess.Popen(["true"])
        dead.wait()
        series = next(p for p in (root / study).iterdir())
        stale = series / f".{big.stem}~{store._host}~{dead.pid}~0123ab.tmp"
        stale.write_bytes(b"\0" * 1000)
        assert store.instances(study) == instance_files(root)  # never listed as an instance
        # the next start (here in this process, with the real indexing) sweeps it
        with running_listener(svc, data, ingest=None) as running:
            assert visible_temp_files(root) == []
            assert send_files(running.port, [big]) == [0]  # the sender's retry
        assert set(indexed_instances(svc, [big.stem])) == {big.stem}
    finally:
        svc.store.dispose()


def _port_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def test_sigterm_lets_the_store_in_flight_finish(db_file: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    log = tmp_path / "listener.log"
    proc = start_cli_listener(db_file, data, port, log, dicom_shutdown_timeout="20")
    try:
        big = big_instance(tmp_path, generate_uid())
        paused, result = Paused(), list[Any]()
        sender = threading.Thread(target=send_paused, args=(port, big, paused, result))
        sender.start()
        assert paused.reached.wait(20)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not _port_closed(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _port_closed(port), "still accepting new associations after SIGTERM"
        paused.go.set()
        sender.join(30)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert result == [0x0000], log.read_text()
    assert [p.name for p in instance_files(data / "dicom")] == [big.name]
    assert "DICOM listener stopped" in log.read_text()


@pytest.mark.slow
def test_serve_starts_and_stops_the_listener(db_file: str, tmp_path: Path) -> None:
    import requests

    http_port, dicom_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    env = cli_env(db_file, tmp_path / "data", dicom_port=str(dicom_port), workers="1")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kyphofhir", "serve", "--port", str(http_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_echo(dicom_port, proc, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"http://127.0.0.1:{http_port}/fhir/metadata", timeout=5)
                if r.status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert send_files(dicom_port, [write(make_dataset(), tmp_path)]) == [0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _port_closed(dicom_port)
    assert "DICOM listener stopped" in log.read_text()


def test_dicom_command_refuses_port_zero(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kyphofhir", "dicom", "--port", "0"],
        env=cli_env("sqlite:///" + str(tmp_path / "x.sqlite3"), tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "disabled" in done.stderr
