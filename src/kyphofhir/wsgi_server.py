"""gunicorn wiring for ``kyphofhir serve``: gthread workers (keep-alive), app per worker."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from kyphofhir.config import Settings


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}",
            "workers": s.workers,
            "threads": s.threads,
            "worker_class": "gthread",
            "keepalive": 5,
            "timeout": 120,
            "graceful_timeout": 30,
            "loglevel": s.log_level.lower(),
            "limit_request_line": 8190,
        }
        # gunicorn >= 24 opens a control socket under $HOME by default; two instances would
        # share it and the service has no use for it.
        if "control_socket_disable" in self.cfg.settings:
            options["control_socket_disable"] = True
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from kyphofhir.app import create_app
        from kyphofhir.logging import configure_logging

        configure_logging(self.settings.log_level)
        return create_app(self.settings)


def run(settings: Settings) -> None:
    _Server(settings).run()
