"""Storage Commitment Push Model (PS3.4 Annex J): N-ACTION in, N-EVENT-REPORT out.

A PACS asks (N-ACTION, Action Type 1) whether we have taken responsibility for a list of
instances, so that it may delete its own copy. The N-ACTION is answered at once; the
result follows as an N-EVENT-REPORT (Event Type 1: all committed, 2: some failed):

- on the same association when the requester keeps it open (pynetdicom sends requests
  from an acceptor by pausing the association's reactor, so the report follows the
  N-ACTION response in order);
- otherwise on a new association to the requester, when its ``dicom_allowed_aes`` entry
  gives a port (``PACS1@10.0.0.5:104``), proposing the SCP role for the SOP class
  (PS3.4 J.3.3); without a port the report cannot be delivered and is logged (the
  requester times out and asks again).

An instance is committed only if it is **indexed** (an ImagingStudy lists it: searched
with the R4 ``instance`` parameter) **and** its file is in the instance store. Anything
else fails with reason ``0x0112`` (no such object instance); a different SOP class than
the one indexed fails with ``0x0119``; a database outage fails everything with ``0x0110``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pynetdicom import AE, build_role
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, A_RELEASE
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from kyphofhir.dicom.access import AccessPolicy
from kyphofhir.dicom.status import ActionStatus, CommitmentFailure
from kyphofhir.services.context import Services, ServiceUnavailable
from kyphofhir.services.search import search
from kyphofhir.store.base import UnitOfWork
from kyphofhir.store.instances import InstanceStore, is_uid

log = logging.getLogger(__name__)

# The well-known SOP Instance of the Storage Commitment Push Model SOP Class
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1
EVENT_ALL_SUCCEEDED = 1
EVENT_SOME_FAILED = 2
DICOM_UID_SYSTEM = "urn:dicom:uid"
UIDS_PER_SEARCH = 50
SETTLE_SECONDS = 0.3


@dataclass(frozen=True)
class Indexed:
    """Where the FHIR side has an instance: its study, series and SOP class."""

    study_uid: str
    series_uid: str
    sop_class_uid: str | None


def _oid(value: object) -> str:
    text = str(value or "")
    return text[len("urn:oid:") :] if text.startswith("urn:oid:") else text


def indexed_instances(svc: Services, sop_uids: Sequence[str]) -> dict[str, Indexed]:
    """The instances among ``sop_uids`` that an ImagingStudy lists (one read unit)."""
    wanted = sorted({uid for uid in sop_uids if is_uid(uid)})

    def work(uow: UnitOfWork) -> dict[str, Indexed]:
        found: dict[str, Indexed] = {}
        for start in range(0, len(wanted), UIDS_PER_SEARCH):
            chunk = wanted[start : start + UIDS_PER_SEARCH]
            result = search(
                svc,
                uow,
                "ImagingStudy",
                [("instance", ",".join(chunk)), ("_count", str(svc.settings.max_page_size))],
                snapshot=False,
            )
            targets = set(chunk)
            for stored in result.page.items:
                if stored.text is None:
                    continue
                _collect(orjson.loads(stored.text), targets, found)
        return found

    return svc.run(False, work)


def _collect(study: dict[str, Any], targets: set[str], found: dict[str, Indexed]) -> None:
    study_uid = next(
        (
            _oid(ident.get("value"))
            for ident in study.get("identifier", [])
            if ident.get("system") == DICOM_UID_SYSTEM
        ),
        None,
    )
    if not study_uid:
        return
    for series in study.get("series", []):
        for instance in series.get("instance", []):
            uid = instance.get("uid")
            if uid in targets:
                sop_class = (instance.get("sopClass") or {}).get("code")
                found[uid] = Indexed(
                    study_uid, str(series.get("uid")), _oid(sop_class) if sop_class else None
                )


def check_commitment(
    svc: Services, store: InstanceStore, references: Sequence[tuple[str, str]]
) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
    """Split ``(sop class, sop instance)`` pairs into committed and failed (with reason)."""
    try:
        indexed = indexed_instances(svc, [sop for _, sop in references])
    except ServiceUnavailable as exc:
        log.error("storage commitment: database unavailable: %s", exc)
        return [], [(c, i, CommitmentFailure.PROCESSING_FAILURE) for c, i in references]
    ok: list[tuple[str, str]] = []
    failed: list[tuple[str, str, int]] = []
    for sop_class, sop in references:
        where = indexed.get(sop)
        if where is None or not store.exists(where.study_uid, where.series_uid, sop):
            failed.append((sop_class, sop, CommitmentFailure.NO_SUCH_OBJECT_INSTANCE))
        elif where.sop_class_uid is not None and where.sop_class_uid != sop_class:
            failed.append((sop_class, sop, CommitmentFailure.CLASS_INSTANCE_CONFLICT))
        else:
            ok.append((sop_class, sop))
    return ok, failed


def event_information(
    transaction_uid: str,
    ok: Sequence[tuple[str, str]],
    failed: Sequence[tuple[str, str, int]],
    ae_title: str,
) -> tuple[int, Dataset]:
    """(Event Type ID, Event Information) of the N-EVENT-REPORT (PS3.4 J.3.3)."""
    info = Dataset()
    info.TransactionUID = transaction_uid
    if ok:
        info.RetrieveAETitle = ae_title
        items = []
        for sop_class, sop in ok:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop
            items.append(item)
        info.ReferencedSOPSequence = DicomSequence(items)
    if failed:
        items = []
        for sop_class, sop, reason in failed:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop
            item.FailureReason = int(reason)
            items.append(item)
        info.FailedSOPSequence = DicomSequence(items)
    return (EVENT_SOME_FAILED if failed else EVENT_ALL_SUCCEEDED), info


class Commitment:
    """The N-ACTION handler and the delivery of its N-EVENT-REPORT."""

    def __init__(
        self,
        svc: Services,
        store: InstanceStore,
        policy: AccessPolicy,
        ae_title: str,
        make_requestor: Callable[[], AE],
    ) -> None:
        self.svc = svc
        self.store = store
        self.policy = policy
        self.ae_title = ae_title
        self.make_requestor = make_requestor
        self.threads: list[threading.Thread] = []

    def handle_action(self, event: Event) -> tuple[int, Dataset | None]:
        """EVT_N_ACTION: check the request, answer it, report from another thread."""
        if event.action_type != REQUEST_STORAGE_COMMITMENT:
            return ActionStatus.NO_SUCH_ACTION, None
        try:
            info = event.action_information
            transaction_uid = str(info.get("TransactionUID") or "")
            items = info.get("ReferencedSOPSequence")
        except Exception as exc:  # undecodable action information
            log.warning("storage commitment request refused: %s", exc)
            return ActionStatus.INVALID_ARGUMENT_VALUE, None
        if not transaction_uid or items is None:
            return ActionStatus.MISSING_ATTRIBUTE, None
        references: list[tuple[str, str]] = []
        for item in items:
            sop_class = str(item.get("ReferencedSOPClassUID") or "")
            sop = str(item.get("ReferencedSOPInstanceUID") or "")
            if not sop_class or not sop:
                return ActionStatus.INVALID_ARGUMENT_VALUE, None
            references.append((sop_class, sop))
        assoc = event.assoc
        thread = threading.Thread(
            target=self._report,
            args=(assoc, transaction_uid, references),
            name=f"commitment-{transaction_uid[-12:]}",
            daemon=True,
        )
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()
        return ActionStatus.SUCCESS, None

    def _report(
        self, assoc: Association, transaction_uid: str, references: list[tuple[str, str]]
    ) -> None:
        try:
            ok, failed = check_commitment(self.svc, self.store, references)
            event_type, info = event_information(transaction_uid, ok, failed, self.ae_title)
            log.info(
                "storage commitment %s: %d committed, %d failed",
                transaction_uid,
                len(ok),
                len(failed),
            )
            if self._staying(assoc) and self._send(assoc, event_type, info):
                log.info("storage commitment %s reported on the same association", transaction_uid)
                return
            self._send_on_new_association(assoc, event_type, info)
        except Exception:
            log.exception("storage commitment %s: report failed", transaction_uid)

    @staticmethod
    def _staying(assoc: Association, window: float = SETTLE_SECONDS) -> bool:
        """Does the requester keep the association open for the report?

        Many requesters (Orthanc) release right after the N-ACTION response; a report
        sent into that release would make them abort. Give the release a moment to show.
        """
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:
            if not assoc.is_established:
                return False
            if isinstance(assoc.dul.peek_next_pdu(), (A_RELEASE, A_ABORT, A_P_ABORT)):
                return False
            time.sleep(0.01)
        return assoc.is_established

    def _send(self, assoc: Association, event_type: int, info: Dataset) -> bool:
        try:
            status, _ = assoc.send_n_event_report(
                info, event_type, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
            )
        except RuntimeError:  # released meanwhile
            return False
        code = getattr(status, "Status", None)
        if code is None:
            return False
        if code != 0x0000:
            log.warning("storage commitment report answered with status 0x%04X", code)
        return True

    def _send_on_new_association(
        self, previous: Association, event_type: int, info: Dataset
    ) -> None:
        calling = str(previous.requestor.ae_title).strip()
        address = str(previous.requestor.address)
        peer = self.policy.peer(calling, address)
        if peer is None or peer.port is None:
            log.warning(
                "storage commitment report for %s lost: the association was closed and "
                "dicom_allowed_aes gives no port for it (AE@host:port)",
                calling,
            )
            return
        requestor = self.make_requestor()
        requestor.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        assoc = requestor.associate(
            peer.host or address, peer.port, ae_title=calling, ext_neg=[role]
        )
        if not assoc.is_established:
            log.warning(
                "storage commitment report: %s:%s refused the association", address, peer.port
            )
            return
        try:
            if self._send(assoc, event_type, info):
                log.info("storage commitment reported on a new association to %s", calling)
            else:
                log.warning("storage commitment report to %s got no answer", calling)
        finally:
            if assoc.is_established:
                assoc.release()

    def join(self, timeout: float) -> None:
        """Wait (bounded) for reports still being delivered, at shutdown."""
        for thread in self.threads:
            thread.join(timeout)
