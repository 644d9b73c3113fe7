"""The listener as a child process of ``kyphofhir serve``.

``serve`` runs gunicorn, whose master process forks HTTP workers and restarts them; the
DICOM listener is long-lived, threaded and must finish its C-STOREs on shutdown, so it
gets a process of its own: ``python -m kyphofhir dicom --parent-pid <master>``, started by
``serve`` before gunicorn and stopped (SIGTERM, bounded wait) when gunicorn returns. The
child stops by itself when its parent disappears (even after a SIGKILL of the master), so
it never outlives the service. The HTTP workers are unaffected by DICOM traffic and the
other way round; ``kyphofhir dicom`` runs the very same code alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from typing import Any

from kyphofhir.config import ENV_PREFIX, Settings

log = logging.getLogger(__name__)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment that makes a child's ``Settings.load()`` equal ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        env[ENV_PREFIX + f.name.upper()] = text
    return env


def start_child(settings: Settings) -> subprocess.Popen[bytes]:
    """Start ``kyphofhir dicom`` for ``settings`` (already migrated: no migration)."""
    # the HTTP workers migrate nothing and load the profiles; the child does neither
    names = {f.name for f in dataclasses.fields(settings)}
    quiet: dict[str, Any] = {"auto_migrate": False, "load_profiles": False}
    child_settings = dataclasses.replace(settings, **{k: v for k, v in quiet.items() if k in names})
    command = [sys.executable, "-m", "kyphofhir", "dicom", "--parent-pid", str(os.getpid())]
    return subprocess.Popen(command, env=settings_environment(child_settings))


def stop_child(child: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM the child, wait for its graceful stop (plus a margin), then SIGKILL it."""
    if child.poll() is None:
        child.terminate()
        try:
            return child.wait(timeout + 10)
        except subprocess.TimeoutExpired:
            log.error("DICOM listener did not stop in time: killing it")
            child.kill()
            return child.wait()
    return child.returncode
