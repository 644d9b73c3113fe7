"""Application factory: ``create_app(settings)``; nothing happens at import time."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from kyphofhir import api
from kyphofhir.config import Settings
from kyphofhir.search.extract import Extractor
from kyphofhir.search.profiles import load_search_parameters
from kyphofhir.search.registry import SearchRegistry
from kyphofhir.services import conformance, imaging, validation
from kyphofhir.services.context import Services
from kyphofhir.store.sql.backend import SqlStore
from kyphofhir.store.sql.migrate import upgrade

log = logging.getLogger(__name__)


def build_services(settings: Settings) -> Services:
    """Store, registry and extractor for ``settings`` (migrating the schema if enabled)."""
    store = SqlStore(settings.database_url, pool_size=max(4, settings.threads + 2))
    if settings.auto_migrate:
        upgrade(store.engine)
    registry = SearchRegistry.default(load_search_parameters(settings.profiles_path))
    extractor = Extractor(registry)
    extractor.warm()
    svc = Services(store=store, registry=registry, extractor=extractor, settings=settings)
    validation.validator(svc)  # compile the profiles now: a broken one stops the start
    imaging.config(settings)  # DICOM mapping tables and settings: broken ones stop it too
    if settings.load_profiles:
        conformance.load(svc)  # serve profiles/ (unchanged artefacts are not rewritten)
    return svc


def create_app(
    settings: Settings | Mapping[str, Any] | None = None,
    test_config: Mapping[str, Any] | None = None,
) -> Flask:
    """Build the WSGI application.

    ``settings`` defaults to :meth:`Settings.load` (defaults < ``KYPHOFHIR_*`` env).
    ``test_config`` (or a mapping passed as the first argument, Flask-style) overrides
    settings by name, case-insensitively and with or without the ``KYPHOFHIR_`` prefix
    (``{"db": url}``, ``{"KYPHOFHIR_DB": url}``); other keys (``TESTING``) go to
    ``app.config``.
    """
    if isinstance(settings, Mapping):
        test_config = {**settings, **(test_config or {})}
        settings = None
    overrides, flask_config = _split_config(test_config or {})
    if settings is None:
        settings = Settings.load(overrides)
    elif overrides:
        settings = dataclasses.replace(settings, **overrides)
    app = Flask(__name__)
    if settings.behind_proxy:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)  # type: ignore[method-assign]
    app.config.update(flask_config)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["KYPHOFHIR_BASE_URL"] = settings.base_url
    app.config["KYPHOFHIR_SETTINGS"] = settings
    app.extensions["kyphofhir"] = build_services(settings)
    api.init_app(app)
    log.info("kyphofhir ready on %s", settings.database_url.split("@")[-1])
    return app


def _split_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in dataclasses.fields(Settings)}
    overrides: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in config.items():
        name = key.lower().removeprefix("kyphofhir_")
        if name in names:
            overrides[name] = value
        else:
            rest[key] = value
    return overrides, rest
