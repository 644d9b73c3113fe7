"""Storage Commitment (push model) over real associations, with the real FHIR indexing.

A pynetdicom SCU stores instances, asks for commitment (N-ACTION) and receives the result
(N-EVENT-REPORT), on the same association or, when it has closed it, on a new one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, StorageCommitmentPushModel
from test_dicom_receiver_support import (
    Running,
    association,
    free_port,
    make_dataset,
    module_services,
    receiver_settings,
    running_listener,
    send_files,
    write,
)

from kyphofhir.app import build_services
from kyphofhir.dicom import commitment
from kyphofhir.services import imaging
from kyphofhir.services.context import Services
from kyphofhir.store.instances import StoredInstance

WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"


@pytest.fixture(scope="module")
def dicom_services(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    yield from module_services(sqlite_template, tmp_path_factory)


class Switchable:
    """The real ingest, or none at all while ``skip`` is set (a file not indexed)."""

    def __init__(self) -> None:
        self.skip = False

    def __call__(self, svc: Services, stored: StoredInstance) -> None:
        if not self.skip:
            imaging.ingest(svc, stored)


@pytest.fixture
def indexing() -> Switchable:
    return Switchable()


@pytest.fixture
def listener(dicom_services: Services, tmp_path: Path, indexing: Switchable) -> Iterator[Running]:
    with running_listener(dicom_services, tmp_path / "data", ingest=indexing) as running:
        yield running


def action_information(references: list[tuple[str, str]]) -> tuple[str, Dataset]:
    transaction = generate_uid()
    info = Dataset()
    info.TransactionUID = transaction
    items = []
    for sop_class, sop in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop
        items.append(item)
    info.ReferencedSOPSequence = DicomSequence(items)
    return transaction, info


class Reports:
    """N-EVENT-REPORTs received by the test SCU."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()

    def handle(self, event: Any) -> tuple[int, None]:
        self.received.append((int(event.event_type), event.event_information))
        self.arrived.set()
        return 0x0000, None


def commit_on_same_association(port: int, references: list[tuple[str, str]]) -> tuple[int, Dataset]:
    reports = Reports()
    transaction, info = action_information(references)
    contexts = [(StorageCommitmentPushModel, [ExplicitVRLittleEndian])]
    with association(
        port, contexts, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)]
    ) as assoc:
        assert assoc.is_established
        status, _reply = assoc.send_n_action(
            info, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE
        )
        assert int(status.Status) == 0x0000
        assert reports.arrived.wait(15), "no N-EVENT-REPORT"
    ((event_type, result),) = reports.received
    assert result.TransactionUID == transaction
    return event_type, result


def refs(result: Dataset, keyword: str) -> dict[str, Any]:
    return {
        item.ReferencedSOPInstanceUID: item.get("FailureReason") for item in result.get(keyword, [])
    }


def test_commitment_only_for_instances_stored_and_indexed(
    listener: Running, indexing: Switchable, tmp_path: Path
) -> None:
    study = generate_uid()
    stored = [write(make_dataset(study=study), tmp_path / "a") for _ in range(2)]
    assert send_files(listener.port, stored) == [0, 0]
    indexing.skip = True  # on disk, never indexed
    unindexed = make_dataset(study=study)
    assert send_files(listener.port, [write(unindexed, tmp_path / "b")]) == [0]
    indexing.skip = False
    deleted = make_dataset(study=study)  # indexed, then its file disappears
    assert send_files(listener.port, [write(deleted, tmp_path / "c")]) == [0]
    next(listener.store_root.rglob(f"{deleted.SOPInstanceUID}.dcm")).unlink()

    ok = [(CTImageStorage, p.stem) for p in stored]
    unknown = generate_uid()
    event_type, result = commit_on_same_association(
        listener.port,
        [
            *ok,
            (CTImageStorage, unknown),
            (MRImageStorage, stored[0].stem),  # stored as CT
            (CTImageStorage, unindexed.SOPInstanceUID),
            (CTImageStorage, deleted.SOPInstanceUID),
        ],
    )
    assert event_type == 2  # some failed
    assert refs(result, "ReferencedSOPSequence") == {p.stem: None for p in stored}
    assert result.RetrieveAETitle == "KYPHOFHIR"
    assert refs(result, "FailedSOPSequence") == {
        unknown: 0x0112,
        stored[0].stem: 0x0119,
        unindexed.SOPInstanceUID: 0x0112,
        deleted.SOPInstanceUID: 0x0112,
    }


def test_commitment_all_committed(listener: Running, tmp_path: Path) -> None:
    paths = [write(make_dataset(), tmp_path) for _ in range(3)]
    assert send_files(listener.port, paths) == [0, 0, 0]
    event_type, result = commit_on_same_association(
        listener.port, [(CTImageStorage, p.stem) for p in paths]
    )
    assert event_type == 1
    assert "FailedSOPSequence" not in result
    assert len(result.ReferencedSOPSequence) == 3


def test_commitment_request_without_transaction_is_refused(listener: Running) -> None:
    contexts = [(StorageCommitmentPushModel, [ExplicitVRLittleEndian])]
    _, info = action_information([(CTImageStorage, generate_uid())])
    del info.TransactionUID
    with association(listener.port, contexts) as assoc:
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assert int(status.Status) == 0x0120
        status, _ = assoc.send_n_action(info, 7, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assert int(status.Status) == 0x0123


def test_report_on_a_new_association_when_the_requester_has_left(
    dicom_services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The requester releases right after the N-ACTION response; the report comes to the
    port its allowed-AE entry names, on an association the listener opens."""
    reports = Reports()
    own = AE(ae_title="TESTSCU")
    own.add_supported_context(StorageCommitmentPushModel, ExplicitVRLittleEndian)
    own_port = free_port()
    server = own.start_server(
        ("127.0.0.1", own_port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)],
    )
    released = threading.Event()
    original = commitment.check_commitment

    def after_release(*args: Any) -> Any:
        released.wait(10)
        return original(*args)

    monkeypatch.setattr(commitment, "check_commitment", after_release)
    try:
        with running_listener(
            dicom_services,
            tmp_path / "data",
            ingest=imaging.ingest,
            dicom_allowed_aes=f"TESTSCU@127.0.0.1:{own_port}",
        ) as running:
            path = write(make_dataset(), tmp_path)
            assert send_files(running.port, [path]) == [0]
            transaction, info = action_information([(CTImageStorage, path.stem)])
            contexts = [(StorageCommitmentPushModel, [ExplicitVRLittleEndian])]
            with association(running.port, contexts) as assoc:
                status, _ = assoc.send_n_action(
                    info, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE
                )
                assert int(status.Status) == 0
            released.set()
            assert reports.arrived.wait(15), "no report on a new association"
    finally:
        assert server is not None
        server.shutdown()
    ((event_type, result),) = reports.received
    assert event_type == 1 and result.TransactionUID == transaction


def test_store_index_and_commit_on_both_backends(db_url: str, tmp_path: Path) -> None:
    """The whole path on SQLite and on PostgreSQL: C-STORE, FHIR indexing, commitment."""
    svc = build_services(receiver_settings(db_url, tmp_path))
    try:
        with running_listener(svc, tmp_path / "data", ingest=None) as running:
            study = generate_uid()
            paths = [write(make_dataset(study=study), tmp_path / "in") for _ in range(3)]
            assert send_files(running.port, paths) == [0, 0, 0]
            event_type, result = commit_on_same_association(
                running.port, [(CTImageStorage, p.stem) for p in paths]
            )
            assert event_type == 1 and len(result.ReferencedSOPSequence) == 3
        found = commitment.indexed_instances(svc, [p.stem for p in paths])
        assert {where.study_uid for where in found.values()} == {study}
    finally:
        svc.store.dispose()
