"""Service configuration: one typed object, documented defaults, ``KYPHOFHIR_*`` overrides.

Precedence, lowest first: the defaults below, then environment variables
``KYPHOFHIR_<FIELD NAME IN UPPER CASE>``, then explicit keyword overrides (what the
command line or a test passes). Every field's ``doc`` metadata is the documentation
the README's configuration table is generated from (``kyphofhir config``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "KYPHOFHIR_"


def _setting(default: Any, doc: str, example: str) -> Any:
    return field(default=default, metadata={"doc": doc, "example": example})


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment, in one place."""

    host: str = _setting("127.0.0.1", "Interface the HTTP server binds to.", "0.0.0.0")
    port: int = _setting(8080, "HTTP port; the FHIR base is http://HOST:PORT/fhir.", "8080")
    data_dir: str = _setting(
        "./kyphofhir-data",
        "Folder for the embedded SQLite database and later the DICOM instance store.",
        "/var/lib/kyphofhir",
    )
    db: str = _setting(
        "",
        "SQLAlchemy database URL; empty means an SQLite file `kyphofhir.sqlite3` in data_dir.",
        "postgresql+psycopg://kyphofhir@db.example.org:5432/kyphofhir",
    )
    base_url: str = _setting(
        "",
        "Public FHIR base URL used in Location headers and Bundle links; "
        "empty means derived from each request.",
        "https://fhir.example.org/fhir",
    )
    behind_proxy: bool = _setting(
        False,
        "Trust X-Forwarded-For/-Proto/-Host/-Prefix from one reverse proxy in front of the "
        "service (links and Location then use the public scheme and host).",
        "true",
    )
    workers: int = _setting(
        2, "Number of gunicorn worker processes for `serve`; scale this with the cores.", "4"
    )
    threads: int = _setting(
        1,
        "Threads per worker. Keep-alive works with one; more threads in one process compete "
        "for the GIL (benchmarks: reads 1,200/s with 1 thread, 920-970/s with 2).",
        "2",
    )
    max_body_bytes: int = _setting(
        16 * 1024 * 1024, "Largest accepted request body, in bytes; larger gets 413.", "33554432"
    )
    profiles_dir: str = _setting(
        "",
        "Folder with the conformance artefacts (profiles, CodeSystems, ValueSets, custom "
        "SearchParameters; JSON) used at start; empty means the repository's profiles/ "
        "folder when it exists.",
        "/etc/kyphofhir/profiles",
    )
    load_profiles: bool = _setting(
        True,
        "Store the artefacts of profiles_dir at start so they are served (idempotent: "
        "unchanged url+version are left alone); validation uses them either way.",
        "false",
    )
    mappings_dir: str = _setting(
        "",
        "Folder with the study mapping files (study-table.json, timepoints.json); empty "
        "means the repository's mappings/ folder.",
        "/etc/kyphofhir/mappings",
    )
    max_import_bytes: int = _setting(
        1024 * 1024 * 1024,
        "Largest study table accepted by POST ResearchStudy/{id}/$import, in bytes (it is "
        "streamed, so memory stays constant); larger gets 413.",
        "4294967296",
    )
    import_batch_rows: int = _setting(
        200,
        "Study table rows written per database transaction by an import; a batch with a "
        "failing write is redone row by row, so one bad row never loses the others.",
        "1000",
    )
    default_page_size: int = _setting(20, "Search/history page size when `_count` is absent.", "50")
    max_page_size: int = _setting(
        1000, "Largest honoured `_count`; larger values are capped.", "500"
    )
    max_include: int = _setting(
        1000,
        "Most resources _include/_revinclude may add to one page; more gets 400 (never a "
        "silently cut page).",
        "5000",
    )
    search_snapshot_rows: int = _setting(
        10000,
        "A search with more than one page keeps the ordered ids of its first this many "
        "matches as a snapshot, so paging sees exactly the resources that matched when "
        "it started; later pages continue by keyset. 0 turns snapshots off.",
        "50000",
    )
    search_snapshot_ttl: int = _setting(
        3600,
        "Seconds a search snapshot (and so its page links) lives; an expired link gets 410.",
        "600",
    )
    max_bundle_entries: int = _setting(
        10000, "Largest transaction/batch Bundle accepted (entries); larger gets 413.", "5000"
    )
    auto_migrate: bool = _setting(
        True, "Apply pending database migrations when the service starts.", "false"
    )
    log_level: str = _setting("INFO", "Log level for the service's loggers.", "DEBUG")
    odi_max_missing: int = _setting(
        1,
        "ODI sections that may be unanswered and still give a score (Fairbank: 1); with "
        "more missing the ODI Observation gets a dataAbsentReason instead of a value.",
        "2",
    )
    odi_texts_file: str = _setting(
        "",
        "Local JSON file with the licensed ODI statement texts, merged into the ODI "
        "Questionnaire only when it is served for display (docs/study-model.md); never "
        "commit it. Empty: codes and section titles only.",
        "/etc/kyphofhir/odi-texts.local.json",
    )

    dicom_port: int = _setting(
        11112,
        "DICOM listener port (C-ECHO, C-STORE, Storage Commitment); `serve` starts the "
        "listener with the HTTP server, 0 disables it (docs/dicom.md).",
        "104",
    )
    dicom_host: str = _setting(
        "",
        "Interface the DICOM listener binds to; empty means the same as host.",
        "0.0.0.0",
    )
    dicom_ae_title: str = _setting(
        "KYPHOFHIR",
        "The listener's AE title; associations calling another title are rejected.",
        "KYPHOFHIR_TEST",
    )
    dicom_allowed_aes: str = _setting(
        "",
        "Calling AE titles allowed to associate, comma-separated, each `AE`, `AE@host` "
        "or `AE@host:port` (port: where the peer receives Storage Commitment results on a "
        "new association). Empty: only peers on the loopback interface are accepted.",
        "PACS1@10.0.0.5:104,MODALITY2",
    )
    dicom_max_associations: int = _setting(
        16, "Most simultaneous DICOM associations; more are rejected (transient).", "32"
    )
    dicom_acse_timeout: int = _setting(
        30, "Seconds to wait for association negotiation and release messages.", "60"
    )
    dicom_dimse_timeout: int = _setting(
        60, "Seconds to wait for a DIMSE message (a peer's answer to an event report).", "120"
    )
    dicom_network_timeout: int = _setting(
        120, "Seconds an association may stay idle before it is aborted.", "300"
    )
    dicom_shutdown_timeout: int = _setting(
        30,
        "On SIGTERM, seconds open associations get to finish before those between two "
        "C-STOREs are aborted (a C-STORE being processed always completes).",
        "60",
    )
    dicom_patient_id_system: str = _setting(
        "https://kyphofhir.org/fhir/sid/dicom-patient-id",
        "Patient.identifier system a DICOM Patient ID (0010,0020) is matched under when "
        "its issuer does not select another one (docs/dicom.md, patient policy).",
        "urn:oid:1.2.276.0.99.1.1",
    )
    dicom_issuer_systems: str = _setting(
        "",
        "Issuer of Patient ID (0010,0021) values and the identifier system each stands "
        "for, as ISSUER=system pairs separated by commas.",
        "CHARITE=urn:oid:1.2.276.0.99.1.1,STUDY=https://kyphofhir.org/fhir/sid/study-subject",
    )
    dicom_timezone: str = _setting(
        "",
        "Time zone of DICOM dates and times without TimezoneOffsetFromUTC (FHIR needs one "
        "for a time): an IANA name or +HH:MM; empty means the server's local time zone.",
        "Europe/Berlin",
    )

    @property
    def database_url(self) -> str:
        """The effective SQLAlchemy URL (the SQLite default resolved under ``data_dir``)."""
        if self.db:
            return self.db
        path = (Path(self.data_dir) / "kyphofhir.sqlite3").resolve()
        return f"sqlite:///{path}"

    @property
    def profiles_path(self) -> Path:
        """The effective profiles folder (the repository's ``profiles/`` by default)."""
        if self.profiles_dir:
            return Path(self.profiles_dir)
        return Path(__file__).resolve().parents[2] / "profiles"

    @property
    def mappings_path(self) -> Path:
        """The effective mappings folder (the repository's ``mappings/`` by default)."""
        if self.mappings_dir:
            return Path(self.mappings_dir)
        return Path(__file__).resolve().parents[2] / "mappings"

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Build settings from defaults, the environment and explicit overrides.

        ``None`` values in ``overrides`` mean "not given" so that click options can be
        passed straight through.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _coerce(f.name, f.type, raw)
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            if key not in {f.name for f in dataclasses.fields(cls)}:
                raise ValueError(f"Unknown setting {key!r}")
            values[key] = value
        return cls(**values)

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any, str, str]]:
        """(name, env var, default, doc, example) for every setting, for docs and the CLI."""
        return [
            (
                f.name,
                ENV_PREFIX + f.name.upper(),
                f.default,
                f.metadata["doc"],
                f.metadata["example"],
            )
            for f in dataclasses.fields(cls)
        ]


def _coerce(name: str, type_name: Any, raw: str) -> Any:
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", "str")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(
                f"{ENV_PREFIX}{name.upper()} must be an integer, got {raw!r}"
            ) from None
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"{ENV_PREFIX}{name.upper()} must be true or false, got {raw!r}")
    return raw
