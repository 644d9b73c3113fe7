"""The DICOM listener: pynetdicom wiring, start, graceful stop.

:func:`build_ae` configures one pynetdicom ``AE`` from :class:`~kyphofhir.config.Settings`:
Verification, Storage Commitment Push Model and every storage SOP class pynetdicom knows
(about 170, more than the 128 presentation contexts one association may propose; an
acceptor has no such limit, so each peer proposes the ones it needs), each with every
transfer syntax pydicom knows, stored as received. :class:`Listener` runs it in threads
(one per association) and stops it gracefully.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import socketserver
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import pynetdicom
from pydicom import uid as dicom_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from kyphofhir.config import Settings
from kyphofhir.dicom.access import AccessPolicy
from kyphofhir.dicom.commitment import Commitment
from kyphofhir.dicom.handlers import Ingest, Receiver
from kyphofhir.services import imaging
from kyphofhir.services.context import Services
from kyphofhir.store.instances import InstanceStore

log = logging.getLogger(__name__)

__all__ = ["Listener", "accepted_transfer_syntaxes", "build_ae", "storage_sop_classes"]

NATIVE = [
    dicom_uid.ExplicitVRLittleEndian,
    dicom_uid.ImplicitVRLittleEndian,
    dicom_uid.ExplicitVRBigEndian,
    dicom_uid.DeflatedExplicitVRLittleEndian,
]


LOSSLESS_COMPRESSED = [
    dicom_uid.JPEGLosslessSV1,
    dicom_uid.JPEGLossless,
    dicom_uid.JPEGLSLossless,
    dicom_uid.JPEG2000Lossless,
    dicom_uid.JPEG2000MCLossless,
    dicom_uid.HTJ2KLossless,
    dicom_uid.HTJ2KLosslessRPCL,
    dicom_uid.RLELossless,
]


def accepted_transfer_syntaxes() -> list[str]:
    """Every transfer syntax pydicom knows, in the order of preference.

    When a peer proposes several in one presentation context the first of this list wins:
    encapsulated (compressed) ones first, lossless before lossy, then the native ones.
    A sender that offers its file's own compressed encoding next to uncompressed ones then
    sends the file as it is, without decoding it (many senders cannot), and it is stored
    as received. A sender configured to offer a lossy syntax for an uncompressed original
    would compress it: configure it not to (docs/dicom.md).
    """
    first = [*LOSSLESS_COMPRESSED]
    lossy = [ts for ts in dicom_uid.AllTransferSyntaxes if ts not in first and ts not in NATIVE]
    return [str(ts) for ts in [*first, *lossy, *NATIVE]]


def storage_sop_classes() -> list[str]:
    """Every storage SOP class UID pynetdicom knows (DX, CR, CT, MR, SC, SR, KO, PR, ...)."""
    return [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]


class SharedContexts(list[PresentationContext]):
    """The supported contexts, shared read-only by all associations.

    pynetdicom deep-copies the server's contexts for every association; with ~170 storage
    classes times ~40 transfer syntaxes that copy alone takes about 0.1 s per association.
    Negotiation only reads them (it builds new objects for its result), so the copy is
    the list itself.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        return list(self)


@functools.cache
def supported_contexts() -> SharedContexts:
    """Verification, Storage Commitment and all storage classes (built once: ~0.2 s)."""
    ae = AE()
    syntaxes = accepted_transfer_syntaxes()
    for sop_class in storage_sop_classes():
        ae.add_supported_context(sop_class, syntaxes)
    ae.add_supported_context(Verification, NATIVE)
    ae.add_supported_context(StorageCommitmentPushModel, NATIVE)
    return SharedContexts(ae.supported_contexts)


def build_ae(
    settings: Settings, receiver: Receiver, commitment: Commitment
) -> tuple[AE, list[Any]]:
    """The configured AE and the event handlers to start its server with."""
    # pynetdicom's "standard" handlers format every PDU for its own logger: off.
    pynetdicom._config.LOG_HANDLER_LEVEL = "none"
    ae = AE(ae_title=settings.dicom_ae_title)
    ae.maximum_associations = settings.dicom_max_associations
    ae.acse_timeout = settings.dicom_acse_timeout
    ae.dimse_timeout = settings.dicom_dimse_timeout
    ae.network_timeout = settings.dicom_network_timeout
    ae.require_called_aet = True  # reason 7, called AE title not recognised
    ae.require_calling_aet = sorted({p.ae_title for p in receiver.policy.allowed})
    # the contexts are given to the server (supported_contexts()), shared, not copied
    handlers: list[Any] = [
        (evt.EVT_REQUESTED, receiver.handle_requested),
        (evt.EVT_ESTABLISHED, receiver.handle_established),
        (evt.EVT_RELEASED, receiver.handle_closed),
        (evt.EVT_ABORTED, receiver.handle_closed),
        (evt.EVT_C_ECHO, receiver.handle_echo),
        (evt.EVT_C_STORE, receiver.handle_store),
        (evt.EVT_N_ACTION, commitment.handle_action),
    ]
    return ae, handlers


def _requestor_factory(settings: Settings) -> Callable[[], AE]:
    def make() -> AE:
        ae = AE(ae_title=settings.dicom_ae_title)
        ae.acse_timeout = settings.dicom_acse_timeout
        ae.dimse_timeout = settings.dicom_dimse_timeout
        ae.network_timeout = settings.dicom_network_timeout
        return ae

    return make


class Listener:
    """One DICOM listener: ``start()`` (non-blocking), ``stop()``, or ``serve()`` (blocking).

    ``ingest`` defaults to ``kyphofhir.services.imaging.ingest``; tests pass their own.
    """

    def __init__(
        self,
        settings: Settings,
        svc: Services,
        store: InstanceStore | None = None,
        ingest: Ingest | None = None,
    ) -> None:
        if settings.dicom_max_associations < 1:
            raise ValueError("dicom_max_associations must be at least 1")
        self.settings = settings
        self.store = store or InstanceStore.for_data_dir(settings.data_dir)
        policy = AccessPolicy.from_setting(settings.dicom_allowed_aes)
        self.receiver = Receiver(svc, self.store, ingest or imaging.ingest, policy)
        self.commitment = Commitment(
            svc, self.store, policy, settings.dicom_ae_title, _requestor_factory(settings)
        )
        self.ae, self._handlers = build_ae(settings, self.receiver, self.commitment)
        self.server: ThreadedAssociationServer | None = None
        self._stop = threading.Event()
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (the port is real when 0 was asked for)."""
        if self.server is None:
            raise RuntimeError("the listener is not started")
        sock = self.server.socket
        if sock is None:
            raise RuntimeError("the listener is stopped")
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    def start(self, port: int | None = None) -> tuple[str, int]:
        """Sweep stale temporary files, bind and serve in background threads."""
        removed = self.store.sweep()
        if removed:
            log.info("removed %d temporary file(s) of interrupted writes", removed)
        host = self.settings.dicom_host or self.settings.host
        bind_port = self.settings.dicom_port if port is None else port
        server = self.ae.make_server(
            (host, bind_port),
            evt_handlers=self._handlers,
            contexts=supported_contexts(),
            server_class=ThreadedAssociationServer,
        )
        # as AE.start_server(block=False), with a shorter poll so that stop() is quick
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="dicom-listener",
            daemon=True,
        )
        thread.start()
        self.ae._servers.append(server)
        self.server = server
        bound = self.address
        log.info(
            "DICOM listener %s on %s:%d (allowed: %s)",
            self.settings.dicom_ae_title,
            bound[0],
            bound[1],
            self.settings.dicom_allowed_aes or "loopback peers only",
        )
        return bound

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let open associations finish for ``grace`` seconds, then
        abort those between two C-STOREs; a C-STORE being processed always completes."""
        if self._stopped or self.server is None:
            return
        self._stopped = True
        grace = float(self.settings.dicom_shutdown_timeout if grace is None else grace)
        server = self.server
        self.receiver.draining = True
        # pynetdicom's server.shutdown() would also join every association thread,
        # without a bound: stop the accept loop and close the socket ourselves.
        socketserver.BaseServer.shutdown(server)
        if server.socket is not None:
            server.socket.close()
        deadline = time.monotonic() + grace
        while self._open(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        remaining = self._open(server)
        if remaining:
            log.warning("shutdown: aborting %d association(s) still open", len(remaining))
        for assoc in remaining:
            while self.receiver.busy(assoc):  # its C-STORE completes first
                time.sleep(0.01)
            # pynetdicom's abort() waits for its state machine to settle; never let a
            # peer that does not answer hold the shutdown
            aborting = threading.Thread(target=assoc.abort, daemon=True)
            aborting.start()
            aborting.join(5)
        self.receiver.wait_idle(time.monotonic() + grace)
        self.commitment.join(min(grace, 5.0))
        if server in self.ae._servers:
            self.ae._servers.remove(server)
        log.info("DICOM listener stopped")

    @staticmethod
    def _open(server: ThreadedAssociationServer) -> list[Any]:
        """Established associations (a connection still negotiating holds no data and
        ends by itself at the ACSE timeout; the process does not wait for it)."""
        return [a for a in server.active_associations if a.is_established]

    def request_stop(self) -> None:
        """Ask :meth:`serve` to stop (signal handlers, parent watch)."""
        self._stop.set()

    def serve(self, parent_pid: int | None = None) -> None:
        """Start, block until SIGTERM/SIGINT (or the parent process is gone), stop."""

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping the DICOM listener", signum)
            self._stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self._stop.wait(0.5):
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.warning("parent process %d is gone: stopping", parent_pid)
                    break
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
