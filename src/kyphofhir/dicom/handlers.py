"""Event handlers of the listener: access check, C-ECHO, C-STORE, per-association logs.

Every DIMSE handler returns a status and never raises (an exception would make pynetdicom
answer its own 0xC211 without our cleanup). The C-STORE path, in order:

1. check the data set's structure and read it without pixel data (``parse.decode``):
   unreadable → ``0xC210``, nothing stored;
2. identifiers: Study/Series/SOP Instance UID and SOP Class UID present and valid, the SOP
   Instance UID equal to the command's → else ``0xC212``; the SOP Class UID equal to the
   presentation context's abstract syntax and the command's Affected SOP Class UID →
   else ``0xA900``;
3. write the Part 10 file into the instance store (temp name, fsync, rename, fsync dir):
   any ``OSError`` (disk full) → ``0xA700``, nothing left under the instance's name;
4. ``ingest(svc, stored)``: the FHIR resources in one unit of work. Database down or a
   write race lost five times → ``0xA700``; the mapping refusing the instance → ``0xC213``;
   anything else → ``0xC211``. In all three the file is removed again if this store had
   created it, so an instance is never acknowledged without its FHIR indexing and a
   retry by the sender re-does both;
5. ``0x0000``.

Writes of the same SOP Instance UID are serialised inside the process, so one sender's
failing ingest cannot remove the file another association has just had acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from kyphofhir.dicom.access import AccessPolicy
from kyphofhir.dicom.parse import DecodeError, decode
from kyphofhir.dicom.status import StoreStatus
from kyphofhir.errors import Conflict, FhirError
from kyphofhir.services.context import Services, ServiceUnavailable
from kyphofhir.store.instances import InstanceStore, StoredInstance, is_uid

log = logging.getLogger(__name__)

Ingest = Callable[[Services, StoredInstance], None]

# A-ASSOCIATE-RJ: rejected-permanent (1), source service-user (1), reason 3
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
# rejected-transient (2), source service-provider presentation (3), temporary congestion
REJECT_SHUTTING_DOWN = (0x02, 0x03, 0x01)


class KeyedLocks:
    """One lock per key while someone holds or waits for it (no false sharing)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._mutex:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._mutex:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class Identifiers(ValueError):
    """Study/Series/SOP Instance UID or SOP Class UID missing or invalid."""


@dataclass
class AssociationLog:
    """What one association did, for its single INFO line."""

    calling_ae: str
    address: str
    started: float = field(default_factory=time.monotonic)
    stored: int = 0
    failed: int = 0
    received_bytes: int = 0


class Receiver:
    """The listener's state shared by all associations (threads)."""

    def __init__(
        self,
        svc: Services,
        store: InstanceStore,
        ingest: Ingest,
        policy: AccessPolicy,
    ) -> None:
        self.svc = svc
        self.store = store
        self.ingest = ingest
        self.policy = policy
        self.draining = False
        self._instance_locks = KeyedLocks()
        self._busy = threading.Condition()
        self._in_flight: dict[int, int] = {}  # id(association) -> running handlers
        self._logs: dict[int, AssociationLog] = {}

    # ------------------------------------------------------------ association level

    def handle_requested(self, event: Event) -> None:
        """EVT_REQUESTED: refuse peers the access policy does not allow (deny by default)."""
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title if primitive is not None else "").strip()
        address = str(assoc.requestor.address)
        if self.draining:
            log.info("association from %s (%s) refused: shutting down", calling, address)
            self._reject(event, REJECT_SHUTTING_DOWN)
            return
        if not self.policy.permits(calling, address):
            log.warning(
                "association from calling AE %r at %s rejected: not an allowed AE",
                calling,
                address,
            )
            self._reject(event, REJECT_CALLING_AE)

    @staticmethod
    def _reject(event: Event, reason: tuple[int, int, int]) -> None:
        assoc = event.assoc
        assoc.acse.send_reject(*reason)
        # As pynetdicom does for its own rejections: wait until the DUL has sent it.
        assoc.kill()

    def handle_established(self, event: Event) -> None:
        assoc = event.assoc
        self._logs[id(assoc)] = AssociationLog(
            str(assoc.requestor.ae_title).strip(), str(assoc.requestor.address)
        )

    def handle_closed(self, event: Event) -> None:
        """EVT_RELEASED / EVT_ABORTED: one INFO line per association (no patient data)."""
        entry = self._logs.pop(id(event.assoc), None)
        if entry is None:
            return
        log.info(
            "association %s from %s (%s): %d stored, %d failed, %.1f MB, %.2f s",
            "released" if event.event.name == "EVT_RELEASED" else "aborted",
            entry.calling_ae,
            entry.address,
            entry.stored,
            entry.failed,
            entry.received_bytes / 1e6,
            time.monotonic() - entry.started,
        )

    # ------------------------------------------------------------ in-flight tracking

    @contextmanager
    def _tracking(self, assoc: object) -> Iterator[None]:
        key = id(assoc)
        with self._busy:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield
        finally:
            with self._busy:
                left = self._in_flight[key] - 1
                if left:
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]
                self._busy.notify_all()

    def busy(self, assoc: object) -> bool:
        """True while a handler runs for ``assoc`` (it must not be aborted then)."""
        with self._busy:
            return id(assoc) in self._in_flight

    def wait_idle(self, deadline: float) -> bool:
        """Wait until no handler runs, at most until ``deadline`` (monotonic)."""
        with self._busy:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._busy.wait(remaining)
        return True

    # ------------------------------------------------------------ DIMSE services

    def handle_echo(self, event: Event) -> int:
        """C-ECHO: always success."""
        return 0x0000

    def handle_store(self, event: Event) -> int:
        """C-STORE: see the module docstring; never raises."""
        with self._tracking(event.assoc):
            try:
                status = self._store(event)
            except Exception:
                log.exception("C-STORE failed unexpectedly")
                status = StoreStatus.PROCESSING_FAILURE
        entry = self._logs.get(id(event.assoc))
        if entry is not None:
            if status == StoreStatus.SUCCESS:
                entry.stored += 1
            else:
                entry.failed += 1
        return int(status)

    def _store(self, event: Event) -> StoreStatus:
        request = cast(C_STORE, event.request)
        data = request.DataSet.getvalue() if request.DataSet is not None else b""
        entry = self._logs.get(id(event.assoc))
        if entry is not None:
            entry.received_bytes += len(data)
        calling = str(event.assoc.requestor.ae_title).strip()
        meta = event.file_meta
        if calling:
            meta.SourceApplicationEntityTitle = calling
        try:
            received = decode(data, meta)
        except DecodeError as exc:
            log.warning("C-STORE from %s refused (0xC210): %s", calling, exc)
            return StoreStatus.CANNOT_DECODE
        ds = received.dataset
        try:
            study, series, sop, sop_class = _identifiers(ds)
        except Identifiers as exc:
            log.warning("C-STORE from %s refused (0xC212): %s", calling, exc)
            return StoreStatus.MISSING_IDENTIFIERS
        context_class = str(event.context.abstract_syntax)
        affected_class = str(request.AffectedSOPClassUID or "")
        if sop_class != context_class or sop_class != affected_class:
            log.warning(
                "C-STORE from %s refused (0xA900): SOP Class UID %s in the data set, %s in "
                "the presentation context, %s in the command",
                calling,
                sop_class,
                context_class,
                affected_class,
            )
            return StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
        if sop != str(request.AffectedSOPInstanceUID or ""):
            log.warning(
                "C-STORE from %s refused (0xC212): SOP Instance UID in the data set differs "
                "from the command's Affected SOP Instance UID",
                calling,
            )
            return StoreStatus.MISSING_IDENTIFIERS
        with self._instance_locks.hold(sop):
            return self._keep(received.header, data, ds, meta, study, series, sop, sop_class)

    def _keep(
        self,
        header: bytes,
        data: bytes,
        ds: Dataset,
        meta: Any,
        study: str,
        series: str,
        sop: str,
        sop_class: str,
    ) -> StoreStatus:
        try:
            path, size, created = self.store.put(study, series, sop, (header, data))
        except OSError as exc:
            log.error("C-STORE refused (0xA700): cannot write to the instance store: %s", exc)
            return StoreStatus.OUT_OF_RESOURCES
        stored = StoredInstance(
            study_uid=study,
            series_uid=series,
            sop_instance_uid=sop,
            sop_class_uid=sop_class,
            transfer_syntax_uid=str(meta.TransferSyntaxUID),
            path=path,
            size=size,
            dataset=ds,
        )
        try:
            self.ingest(self.svc, stored)
        except (ServiceUnavailable, Conflict) as exc:
            log.error("C-STORE refused (0xA700): FHIR indexing unavailable: %s", exc)
            status = StoreStatus.OUT_OF_RESOURCES
        except FhirError as exc:
            log.warning("C-STORE refused (0xC213): FHIR indexing refused it: %s", exc)
            status = StoreStatus.CANNOT_INDEX
        except Exception:
            log.exception("C-STORE refused (0xC211): FHIR indexing failed")
            status = StoreStatus.PROCESSING_FAILURE
        else:
            return StoreStatus.SUCCESS
        if created:
            try:
                self.store.remove(study, series, sop)
            except OSError as exc:  # it stays unindexed: commitment will not confirm it
                log.error("could not remove an instance that was not indexed: %s", exc)
        return status


def _identifiers(ds: Dataset) -> tuple[str, str, str, str]:
    """(study, series, sop instance, sop class) UIDs of a data set, all valid UIDs."""
    values: list[str] = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        try:
            value = ds.get(keyword)
        except Exception as exc:  # a value pydicom cannot convert
            raise Identifiers(f"{keyword} cannot be read: {exc}") from exc
        text = str(value).strip().rstrip("\x00") if value is not None else ""
        if not text:
            raise Identifiers(f"{keyword} is missing")
        if not is_uid(text):
            raise Identifiers(f"{keyword} is not a valid UID")
        values.append(text)
    return values[0], values[1], values[2], values[3]
