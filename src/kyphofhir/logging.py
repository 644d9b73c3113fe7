"""Logging set-up for the service (the package itself only adds a NullHandler)."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    """One line per record on stderr; the access log line carries no patient data."""
    root = logging.getLogger("kyphofhir")
    if any(getattr(h, "_kyphofhir", False) for h in root.handlers):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._kyphofhir = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
