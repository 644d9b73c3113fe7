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
        "Folder with custom SearchParameters (JSON) loaded at start; empty means the "
        "repository's profiles/ folder when it exists.",
        "/etc/kyphofhir/profiles",
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
