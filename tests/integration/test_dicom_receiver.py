"""The DICOM receiver over real associations on 127.0.0.1, with pynetdicom as the sender.

Each test starts the listener in this process on a free port (SQLite database, temporary
data folder) and talks to it with a pynetdicom SCU. Files are sent byte for byte from disk
(pynetdicom's chunked sending), so broken files reach the receiver as they are.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
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
from pynetdicom.sop_class import (
    BasicTextSRStorage,
    ComprehensiveSRStorage,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    EnhancedSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    KeyObjectSelectionDocumentStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    Verification,
)
from test_dicom_receiver_support import (
    Running,
    association,
    instance_files,
    make_dataset,
    module_services,
    running_listener,
    send_files,
    visible_temp_files,
    write,
)

from kyphofhir.dicom.access import AccessPolicy, AllowedPeer, parse_allowed_aes
from kyphofhir.dicom.listener import accepted_transfer_syntaxes, storage_sop_classes
from kyphofhir.errors import Invalid
from kyphofhir.services.context import Services, ServiceUnavailable
from kyphofhir.store.instances import InstanceStore, StoredInstance

SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]


@pytest.fixture(scope="module")
def dicom_services(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    yield from module_services(sqlite_template, tmp_path_factory)


@pytest.fixture
def listener(dicom_services: Services, tmp_path: Path) -> Iterator[Running]:
    with running_listener(dicom_services, tmp_path / "data") as running:
        yield running


def dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file (everything after the file meta)."""
    raw = path.read_bytes()
    meta = read_file_meta_info(path)
    group_length = int(meta.FileMetaInformationGroupLength)
    return raw[128 + 4 + 12 + group_length :]


# ------------------------------------------------------------------ echo and store


def test_echo(listener: Running) -> None:
    with association(listener.port) as assoc:
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0x0000


def test_store_in_every_transfer_syntax_kept_as_sent(listener: Running, tmp_path: Path) -> None:
    study = generate_uid()
    sent = [write(make_dataset(ts, study=study), tmp_path / "out" / ts) for ts in SYNTAXES]
    assert send_files(listener.port, sent) == [0x0000] * len(SYNTAXES)
    stored = {p.name: p for p in instance_files(listener.store_root)}
    assert len(stored) == len(SYNTAXES)
    for path, ts in zip(sent, SYNTAXES, strict=True):
        kept = stored[path.name]
        assert kept.parent.parent.name == study
        assert str(read_file_meta_info(kept).TransferSyntaxUID) == ts
        assert str(read_file_meta_info(kept).SourceApplicationEntityTitle).strip() == "TESTSCU"
        assert dataset_bytes(kept) == dataset_bytes(path), ts  # byte for byte
    assert visible_temp_files(listener.store_root) == []


def test_all_storage_classes_are_accepted(listener: Running) -> None:
    classes = storage_sop_classes()
    assert len(classes) > 128  # more than one association can propose
    for chunk in (classes[:120], classes[120:]):
        contexts = [(uid, [ExplicitVRLittleEndian]) for uid in chunk]
        with association(listener.port, contexts) as assoc:
            assert assoc.is_established
            assert len(assoc.accepted_contexts) == len(chunk)
    named = [
        DigitalXRayImageStorageForPresentation,
        ComputedRadiographyImageStorage,
        CTImageStorage,
        MRImageStorage,
        SecondaryCaptureImageStorage,
        BasicTextSRStorage,
        EnhancedSRStorage,
        ComprehensiveSRStorage,
        KeyObjectSelectionDocumentStorage,
        GrayscaleSoftcopyPresentationStateStorage,
    ]
    assert set(named) <= set(classes)


def test_a_compressed_offer_is_taken_as_sent(listener: Running) -> None:
    """One context offering a compressed and native syntaxes: the compressed one (the
    sender's file as it is, nothing to decode); lossless before lossy."""
    order = accepted_transfer_syntaxes()
    assert order.index(JPEGLosslessSV1) < order.index(JPEGBaseline8Bit)
    assert order.index(JPEGBaseline8Bit) < order.index(ExplicitVRLittleEndian)
    assert order.index(ExplicitVRLittleEndian) < order.index(ImplicitVRLittleEndian)
    offers = [
        ([ExplicitVRLittleEndian, JPEGBaseline8Bit], JPEGBaseline8Bit),
        ([JPEGBaseline8Bit, JPEG2000Lossless, ExplicitVRLittleEndian], JPEG2000Lossless),
        ([ImplicitVRLittleEndian, ExplicitVRLittleEndian], ExplicitVRLittleEndian),
    ]
    contexts = [(CTImageStorage, offered) for offered, _ in offers]
    with association(listener.port, contexts) as assoc:
        chosen = [cx.transfer_syntax[0] for cx in assoc.accepted_contexts]
    assert chosen == [expected for _, expected in offers]


def test_same_instance_twice_is_idempotent(listener: Running, tmp_path: Path) -> None:
    ds = make_dataset()
    first = write(ds, tmp_path / "a")
    ds.InstanceNumber = 2  # a corrected re-send of the same SOP instance
    second = write(ds, tmp_path / "b")
    assert send_files(listener.port, [first]) == [0x0000]
    assert send_files(listener.port, [second, second]) == [0x0000, 0x0000]
    files = instance_files(listener.store_root)
    assert len(files) == 1
    assert dcmread(files[0]).InstanceNumber == 2  # the last one sent is kept
    assert visible_temp_files(listener.store_root) == []


# ------------------------------------------------------------------ broken data sets


def _truncated(path: Path, keep: float) -> Path:
    raw = path.read_bytes()
    out = path.with_name(path.stem + f"-cut{int(keep * 100)}.dcm")
    out.write_bytes(raw[: int(len(raw) * keep)])
    return out


def test_broken_data_sets_are_refused_and_the_association_keeps_serving(
    listener: Running, tmp_path: Path
) -> None:
    native = write(make_dataset(rows=256, columns=256), tmp_path / "n")
    encapsulated = write(make_dataset(JPEGBaseline8Bit), tmp_path / "j")
    garbage = tmp_path / "garbage.dcm"
    meta_end = len(native.read_bytes()) - len(dataset_bytes(native))
    garbage.write_bytes(native.read_bytes()[:meta_end] + os.urandom(4000))
    good = write(make_dataset(), tmp_path / "g")
    broken = [_truncated(native, 0.5), _truncated(encapsulated, 0.7), garbage]
    statuses = send_files(listener.port, [*broken, good])
    assert statuses == [0xC210, 0xC210, 0xC210, 0x0000]
    assert [p.name for p in instance_files(listener.store_root)] == [good.name]
    with association(listener.port) as assoc:  # the listener is still there
        assert int(assoc.send_c_echo().Status) == 0


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("StudyInstanceUID", None),
        ("SeriesInstanceUID", None),
        ("SeriesInstanceUID", "1.2.840.10008.99/../../etc"),
        ("StudyInstanceUID", "1." + "2" * 70),
    ],
)
def test_missing_or_invalid_identifiers_are_refused(
    listener: Running, tmp_path: Path, attribute: str, value: str | None
) -> None:
    ds = make_dataset()
    with warnings.catch_warnings():  # pydicom warns about the invalid UI values
        warnings.simplefilter("ignore")
        if value is None:
            del ds[attribute]
        else:
            ds[attribute].value = value
        path = write(ds, tmp_path)
    assert send_files(listener.port, [path]) == [0xC212]
    assert instance_files(listener.store_root) == []
    assert list(listener.store_root.rglob("*")) == []


def test_sop_instance_uid_differing_from_the_command_is_refused(
    listener: Running, tmp_path: Path
) -> None:
    other = generate_uid()  # the command's Affected SOP Instance UID
    path = write(make_dataset(), tmp_path, meta={"MediaStorageSOPInstanceUID": other})
    assert send_files(listener.port, [path]) == [0xC212]
    assert instance_files(listener.store_root) == []


def test_data_set_of_another_sop_class_gets_a900(listener: Running, tmp_path: Path) -> None:
    ds = make_dataset(sop_class=MRImageStorage)  # context and command say CT:
    path = write(ds, tmp_path, meta={"MediaStorageSOPClassUID": CTImageStorage})
    assert send_files(listener.port, [path]) == [0xA900]
    assert instance_files(listener.store_root) == []


# ------------------------------------------------------------------ out of resources


def test_disk_full_gets_a700_and_leaves_nothing(
    listener: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_after_half(fd: int, parts: Any) -> int:
        data = b"".join(bytes(p) for p in parts)
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    path = write(make_dataset(), tmp_path)
    monkeypatch.setattr(InstanceStore, "_write_all", staticmethod(full_after_half))
    assert send_files(listener.port, [path]) == [0xA700]
    assert instance_files(listener.store_root) == []
    assert visible_temp_files(listener.store_root) == []
    monkeypatch.undo()
    assert send_files(listener.port, [path]) == [0x0000]  # the retry succeeds


def test_database_unavailable_gets_a700_and_no_file(
    dicom_services: Services, tmp_path: Path
) -> None:
    down = threading.Event()

    def ingest(svc: Services, stored: StoredInstance) -> None:
        assert stored.path.is_file()  # durably stored before indexing
        assert stored.dataset.SOPInstanceUID == stored.sop_instance_uid
        assert "PixelData" not in stored.dataset
        if down.is_set():
            raise ServiceUnavailable("The database is unavailable; the request was not processed.")

    with running_listener(dicom_services, tmp_path / "data", ingest=ingest) as running:
        kept = write(make_dataset(), tmp_path / "kept")
        assert send_files(running.port, [kept]) == [0x0000]
        down.set()
        new = write(make_dataset(), tmp_path / "new")
        assert send_files(running.port, [new, kept]) == [0xA700, 0xA700]
        # the new instance is gone (a retry re-does both); the one acknowledged earlier stays
        assert [p.name for p in instance_files(running.store_root)] == [kept.name]
        down.clear()
        assert send_files(running.port, [new]) == [0x0000]
        assert len(instance_files(running.store_root)) == 2


@pytest.mark.parametrize(
    ("error", "status"),
    [(Invalid("Patient module cannot make a Patient."), 0xC213), (RuntimeError("bug"), 0xC211)],
)
def test_indexing_failure_is_refused_and_removed(
    dicom_services: Services, tmp_path: Path, error: Exception, status: int
) -> None:
    def ingest(svc: Services, stored: StoredInstance) -> None:
        raise error

    with running_listener(dicom_services, tmp_path / "data", ingest=ingest) as running:
        assert send_files(running.port, [write(make_dataset(), tmp_path)]) == [status]
        assert instance_files(running.store_root) == []


# ------------------------------------------------------------------ concurrency


def test_eight_associations_store_at_the_same_time(
    dicom_services: Services, tmp_path: Path
) -> None:
    """Every one of 8 associations is inside its C-STORE handler at the same moment."""
    together = threading.Barrier(8, timeout=20)

    def ingest(svc: Services, stored: StoredInstance) -> None:
        if stored.dataset.InstanceNumber == 1:
            together.wait()

    study = generate_uid()
    with running_listener(
        dicom_services, tmp_path / "data", ingest=ingest, dicom_max_associations=8
    ) as running:
        batches = []
        for n in range(8):
            series = generate_uid()
            paths = []
            for number in (1, 2, 3):
                ds = make_dataset(study=study, series=series)
                ds.InstanceNumber = number
                paths.append(write(ds, tmp_path / f"s{n}"))
            batches.append(paths)
        results: dict[int, list[int]] = {}

        def run(n: int) -> None:
            results[n] = send_files(running.port, batches[n], ae_title=f"SCU{n}")

        threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == {n: [0, 0, 0] for n in range(8)}
        assert len(instance_files(running.store_root)) == 24
        assert len(running.listener.store.series(study)) == 8


# ------------------------------------------------------------------ access control


def _reject_reason(assoc: Any) -> tuple[int, int, int]:
    rsp = assoc.acceptor.primitive
    return (rsp.result, rsp.result_source, rsp.diagnostic)


@pytest.mark.parametrize(
    ("allowed", "calling", "accepted"),
    [
        ("PACS1, TESTSCU", "TESTSCU", True),
        ("TESTSCU@127.0.0.1", "TESTSCU", True),
        ("TESTSCU@localhost:4242", "TESTSCU", True),
        ("PACS1", "TESTSCU", False),
        ("TESTSCU@10.11.12.13", "TESTSCU", False),  # right title, wrong host
    ],
)
def test_allowed_aes(
    dicom_services: Services, tmp_path: Path, allowed: str, calling: str, accepted: bool
) -> None:
    with running_listener(dicom_services, tmp_path / "data", dicom_allowed_aes=allowed) as running:
        with association(running.port, ae_title=calling) as assoc:
            if accepted:
                assert assoc.is_established
                assert int(assoc.send_c_echo().Status) == 0
            else:
                assert assoc.is_rejected
                # rejected-permanent, service-user, calling AE title not recognised
                assert _reject_reason(assoc) == (0x01, 0x01, 0x03)


def test_wrong_called_ae_title_is_rejected(listener: Running) -> None:
    with association(listener.port, called="NOTKYPHO") as assoc:
        assert assoc.is_rejected
        assert _reject_reason(assoc) == (0x01, 0x01, 0x07)


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:  # a UDP "connect" picks the outgoing interface; no packet is sent
            probe.connect(("10.255.255.255", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_default_policy_accepts_only_loopback_peers(
    dicom_services: Services, tmp_path: Path
) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address")
    with running_listener(dicom_services, tmp_path / "data", dicom_host="0.0.0.0") as running:
        with association(running.port) as assoc:  # from 127.0.0.1
            assert assoc.is_established
        from test_dicom_receiver_support import scu

        remote = scu().associate(
            address, running.port, ae_title="KYPHOFHIR", bind_address=(address, 0)
        )
        assert remote.is_rejected
        assert _reject_reason(remote) == (0x01, 0x01, 0x03)


def test_policy_and_setting_syntax() -> None:
    assert parse_allowed_aes(" PACS1 , MOD2@10.0.0.5, ORTHANC@[::1]:4242,X@host.example:104") == (
        AllowedPeer("PACS1"),
        AllowedPeer("MOD2", "10.0.0.5"),
        AllowedPeer("ORTHANC", "::1", 4242),
        AllowedPeer("X", "host.example", 104),
    )
    for bad in ("@10.0.0.1", "A" * 17, "PACS@", "PACS@host:99999", "PA\\CS"):
        with pytest.raises(ValueError, match="dicom_allowed_aes"):
            parse_allowed_aes(bad)
    default = AccessPolicy()
    assert default.permits("ANY", "127.0.0.1") and default.permits("ANY", "::1")
    assert default.permits("ANY", "::ffff:127.0.0.1")
    assert not default.permits("ANY", "192.168.1.20")
    listed = AccessPolicy.from_setting("PACS1@192.168.1.20,MOD")
    assert listed.permits("PACS1", "192.168.1.20") and listed.permits("MOD", "10.1.1.1")
    assert not listed.permits("PACS1", "192.168.1.21")
    assert not listed.permits("OTHER", "127.0.0.1")  # loopback gets no exemption


# ------------------------------------------------------------------ the store itself


def test_store_lists_instances_and_sweeps_only_dead_writers_temp_files(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path / "dicom")
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    path, size, created = store.put(study, series, sop, [b"DICM", b"-data"])
    assert (size, created) == (9, True)
    assert store.put(study, series, sop, [b"again"])[2] is False
    assert store.studies() == [study] and store.series(study) == [series]
    assert store.instances(study) == [path] == store.instances(study, series)
    assert store.instance_path(study, series, sop) == path
    assert store.instance_path(study, series, "../x") is None
    dead = subprocess_pid_that_exited()
    stale = path.parent / f".{generate_uid()}~{store._host}~{dead}~abc123.tmp"
    live = path.parent / f".{generate_uid()}~{store._host}~{os.getpid()}~abc124.tmp"
    for temp in (stale, live):
        temp.write_bytes(b"partial")
    assert store.instances(study) == [path]  # temporary files are never instances
    assert store.sweep() == 1
    assert not stale.exists() and live.exists()
    assert store.remove(study, series, sop) and not store.exists(study, series, sop)


def subprocess_pid_that_exited() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_verification_context_in_ae(listener: Running) -> None:
    with association(listener.port, [(Verification, [ImplicitVRLittleEndian])]) as assoc:
        assert assoc.is_established


def test_stop_aborts_idle_associations_after_the_grace(
    dicom_services: Services, tmp_path: Path
) -> None:
    """An association left open (between two C-STOREs) does not hold the shutdown."""
    with running_listener(dicom_services, tmp_path / "data") as running:
        with association(running.port) as assoc:
            assert assoc.is_established
            start = time.monotonic()
            running.listener.stop(grace=0.5)
            assert time.monotonic() - start < 5
            deadline = time.monotonic() + 5
            while assoc.is_established and time.monotonic() < deadline:
                time.sleep(0.05)
            assert assoc.is_aborted
