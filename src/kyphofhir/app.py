"""Application factory: ``create_app(settings)``; nothing happens at import time."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from kyphofhir import api
from kyphofhir.config import Settings
from kyphofhir.search.extract import Extractor
from kyphofhir.search.registry import SearchRegistry
from kyphofhir.services.context import Services
from kyphofhir.store.sql.backend import SqlStore
from kyphofhir.store.sql.migrate import upgrade

log = logging.getLogger(__name__)


def build_services(settings: Settings) -> Services:
    """Store, registry and extractor for ``settings`` (migrating the schema if enabled)."""
    store = SqlStore(settings.database_url, pool_size=max(4, settings.threads + 2))
    if settings.auto_migrate:
        upgrade(store.engine)
    registry = SearchRegistry.default()
    extractor = Extractor(registry)
    extractor.warm()
    return Services(store=store, registry=registry, extractor=extractor, settings=settings)


def create_app(
    settings: Settings | None = None, test_config: Mapping[str, Any] | None = None
) -> Flask:
    """Build the WSGI application.

    ``settings`` defaults to :meth:`Settings.load` (defaults < ``KYPHOFHIR_*`` env);
    ``test_config`` is merged into those settings (handy in tests: ``{"db": url}``).
    """
    if settings is None:
        settings = Settings.load(test_config)
    elif test_config:
        settings = Settings.load({**settings.__dict__, **test_config}, environ={})
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["KYPHOFHIR_BASE_URL"] = settings.base_url
    app.config["KYPHOFHIR_SETTINGS"] = settings
    app.extensions["kyphofhir"] = build_services(settings)
    api.init_app(app)
    log.info("kyphofhir ready on %s", settings.database_url.split("@")[-1])
    return app
