"""The on-disk DICOM instance store: ``<root>/<study>/<series>/<sop>.dcm``.

Received instances are kept byte for byte as they were sent (Part 10 files: preamble,
file meta, the data set in the transfer syntax it arrived in). A write never leaves a
partial file under an instance's name:

1. the bytes go to a temporary file in the series folder, named
   ``.<sop>~<host>~<pid>~<random>.tmp`` (a dot file, never listed as an instance);
2. the file is fsynced, then renamed over ``<sop>.dcm`` (``os.replace``, atomic on POSIX);
3. the folder is fsynced so that the rename itself survives a power cut (and so are the
   parents of folders created for a new study or series).

A re-sent instance (same SOP Instance UID) replaces the stored file atomically: readers see
the old or the new bytes, never a mix, and the receiver answers success again. DICOM says
a SOP Instance UID names one object, so the two are the same instance; keeping the last
one sent lets a PACS correct an instance it sent with wrong attributes.

A process killed between steps 1 and 2 leaves its temporary file behind; :meth:`sweep`
(run when the listener starts) removes temporary files of dead processes of this host and
any older than a day.

Paths are built from UIDs, so every UID is checked against the DICOM UID syntax (digits
and dots, at most 64 characters) before it touches the file system.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

__all__ = ["InstanceStore", "InvalidUid", "StoredInstance", "is_uid"]

_LENIENT_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_TEMP = re.compile(r"^\.(?P<sop>[0-9.]+)~(?P<host>[A-Za-z0-9-]*)~(?P<pid>[0-9]+)~[0-9a-f]+\.tmp$")
SUFFIX = ".dcm"
STALE_TEMP_SECONDS = 24 * 3600


def is_uid(value: object) -> bool:
    """True for a syntactically usable UID: digits and dots, at most 64 characters.

    Leading zeros in a component are tolerated (strict PS3.5 forbids them, but real
    devices send them and they cannot escape a folder).
    """
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_LENIENT_UID.match(value))


class InvalidUid(ValueError):
    """A Study, Series or SOP Instance UID that cannot name a file."""


@dataclass(frozen=True)
class StoredInstance:
    """One instance durably in the store, handed to FHIR indexing.

    ``dataset`` is the data set as parsed without its pixel data (what
    ``dcmread(path, stop_before_pixels=True)`` gives), for mapping to FHIR.
    """

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: Path
    size: int
    dataset: Dataset = field(repr=False, compare=False)


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class InstanceStore:
    """Instances under ``root`` (``<data_dir>/dicom``); safe for many threads and processes.

    The store only moves bytes; parsing, checking and indexing are the receiver's and the
    services' business.
    """

    def __init__(self, root: Path | str, *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._host = _host_tag()

    @classmethod
    def for_data_dir(cls, data_dir: Path | str) -> InstanceStore:
        """The store of a service data folder (``<data_dir>/dicom``)."""
        return cls(Path(data_dir) / "dicom")

    # ------------------------------------------------------------------ naming

    def path_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """Where an instance lives (whether or not it is there); raises InvalidUid."""
        for name, uid in (
            ("Study Instance UID", study_uid),
            ("Series Instance UID", series_uid),
            ("SOP Instance UID", sop_instance_uid),
        ):
            if not is_uid(uid):
                raise InvalidUid(f"{name} {uid!r} is not a valid UID")
        return self.root / study_uid / series_uid / (sop_instance_uid + SUFFIX)

    # ------------------------------------------------------------------ writing

    def put(
        self,
        study_uid: str,
        series_uid: str,
        sop_instance_uid: str,
        parts: Iterable[bytes | bytearray | memoryview],
    ) -> tuple[Path, int, bool]:
        """Write an instance atomically and durably.

        Returns ``(path, size, created)``; ``created`` is False when an instance with the
        same UIDs was already there (it has now been replaced). Raises ``OSError`` (disk
        full: ``ENOSPC``) with nothing left under the instance's name.
        """
        final = self.path_for(study_uid, series_uid, sop_instance_uid)
        folder = final.parent
        self._make_dirs(folder)
        temp = folder / (
            f".{sop_instance_uid}~{self._host}~{os.getpid()}~{secrets.token_hex(6)}.tmp"
        )
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644
        )
        try:
            try:
                size = self._write_all(fd, parts)
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            created = not final.exists()
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        if self.fsync:
            _fsync_dir(folder)
        return final, size, created

    @staticmethod
    def _write_all(fd: int, parts: Iterable[bytes | bytearray | memoryview]) -> int:
        """Write every part (the one place that fills a file; tests make it fail)."""
        size = 0
        for part in parts:
            view = memoryview(part)
            while view:
                written = os.write(fd, view)
                view = view[written:]
                size += written
        return size

    def _make_dirs(self, folder: Path) -> None:
        """Create the series folder; fsync the parent of every folder created."""
        missing: list[Path] = []
        probe = folder
        while not probe.is_dir():
            missing.append(probe)
            if probe == probe.parent:
                break
            probe = probe.parent
        if not missing:
            return
        folder.mkdir(parents=True, exist_ok=True)
        if self.fsync:
            for created in missing:
                _fsync_dir(created.parent)

    def remove(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> bool:
        """Delete an instance (a store the FHIR side refused); True if it was there.

        Empty folders are left in place: a concurrent write may be about to use them.
        """
        final = self.path_for(study_uid, series_uid, sop_instance_uid)
        try:
            os.unlink(final)
        except FileNotFoundError:
            return False
        if self.fsync:
            _fsync_dir(final.parent)
        return True

    # ------------------------------------------------------------------ reading

    def exists(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> bool:
        """True if the instance's file is in the store."""
        try:
            return self.path_for(study_uid, series_uid, sop_instance_uid).is_file()
        except InvalidUid:
            return False

    def instance_path(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path | None:
        """The file of one instance, or None (also for UIDs that are not UIDs)."""
        try:
            path = self.path_for(study_uid, series_uid, sop_instance_uid)
        except InvalidUid:
            return None
        return path if path.is_file() else None

    def studies(self) -> list[str]:
        """Study Instance UIDs with at least a folder in the store, sorted."""
        return self._uid_dirs(self.root)

    def series(self, study_uid: str) -> list[str]:
        """Series Instance UIDs of a study, sorted; empty for an unknown study."""
        if not is_uid(study_uid):
            return []
        return self._uid_dirs(self.root / study_uid)

    def instances(self, study_uid: str, series_uid: str | None = None) -> list[Path]:
        """Instance files of a study (or of one series), sorted by series then name.

        Temporary files of writes in progress are never listed.
        """
        if not is_uid(study_uid) or (series_uid is not None and not is_uid(series_uid)):
            return []
        series = [series_uid] if series_uid is not None else self.series(study_uid)
        found: list[Path] = []
        for uid in series:
            folder = self.root / study_uid / uid
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                found.extend(
                    sorted(
                        entry
                        for entry in folder.iterdir()
                        if entry.name.endswith(SUFFIX)
                        and is_uid(entry.name[: -len(SUFFIX)])
                        and entry.is_file()
                    )
                )
        return found

    def iter_all(self) -> Iterator[tuple[str, str, str, Path]]:
        """Every instance as ``(study, series, sop, path)``."""
        for study in self.studies():
            for path in self.instances(study):
                yield study, path.parent.name, path.name[: -len(SUFFIX)], path

    @staticmethod
    def _uid_dirs(folder: Path) -> list[str]:
        try:
            entries = list(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(e.name for e in entries if is_uid(e.name) and e.is_dir())

    # ------------------------------------------------------------------ housekeeping

    def temp_files(self) -> list[Path]:
        """Temporary files of writes in progress or of writers that died."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("*/*/.*.tmp") if _TEMP.match(p.name))

    def sweep(self, max_age: float = STALE_TEMP_SECONDS) -> int:
        """Remove temporary files left by dead writers; returns how many.

        A temporary file is stale when its writer was a process of this host that no
        longer runs, or when it has not changed for ``max_age`` seconds (a writer on
        another host sharing the store). Live writers' files are left alone, so a second
        listener starting on the same store does not break the first one's writes.
        """
        removed = 0
        now = time.time()
        for path in self.temp_files():
            match = _TEMP.match(path.name)
            if match is None:  # pragma: no cover - filtered by temp_files
                continue
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue
            dead = match["host"] == self._host and not _pid_alive(int(match["pid"]))
            if dead or age > max_age:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed
