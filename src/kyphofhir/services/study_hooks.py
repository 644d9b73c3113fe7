"""Study rules that run inside a write: the server-computed ODI total Observation.

``crud`` calls :func:`after_write` after every stored version and :func:`after_delete`
after every deletion, in the same unit of work, so a plain create or update, their
conditional forms and every entry of a transaction or batch Bundle all get the same
behaviour, and a failing transaction leaves neither the response nor its score behind.

For an ODI QuestionnaireResponse (``questionnaire`` = the ODI canonical, any version):

- ``completed``, ``amended`` and ``stopped``: the score (``study.odi``) is written to
  ``Observation/odi-<response id>``: created, or updated as a new version when the
  response changes (not written again when nothing in it changed);
- ``in-progress``: not scored (provisional answers);
- ``entered-in-error``, a deletion, or a response that stops being an ODI response: an
  existing ODI Observation becomes a new version with status ``entered-in-error`` (its
  history keeps what was asserted), and is scored again if the response comes back.

Invalid answers are checked whatever the status: 422 naming the item.

:func:`for_display` merges a licensed site's ODI statement texts (``odi_texts_file``)
into the ODI Questionnaire when it is read; nothing of them is ever stored.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any

import orjson

from kyphofhir.errors import Conflict, FhirError
from kyphofhir.services import crud
from kyphofhir.services.context import Services
from kyphofhir.store.base import StoredResource, UnitOfWork
from kyphofhir.study import codes, odi

log = logging.getLogger(__name__)

_QR = "QuestionnaireResponse"


def after_write(
    svc: Services, uow: UnitOfWork, content: dict[str, Any], previous: StoredResource | None
) -> None:
    """Keep the derived ODI Observation in step with a QuestionnaireResponse just written."""
    if content.get("resourceType") != _QR:
        return
    rid = str(content["id"])
    if not odi.is_odi_response(content):
        if _was_odi(previous):
            _withdraw(svc, uow, rid)
        return
    score = odi.score_response(content, max_missing=svc.settings.odi_max_missing)
    if content.get("status") not in odi.SCORED_STATUSES:
        if previous is not None and not previous.deleted:  # a new response has no score
            _withdraw(svc, uow, rid)
        return
    body = odi.observation(content, score)
    try:
        if previous is None:
            # A new response has no Observation yet: create without a read, so the
            # store keeps batching the creates of a transaction.
            crud.create(svc, uow, "Observation", body, new_id=body["id"])
            return
        current = _existing(uow, rid, strict=True)
        if current is not None and _same(current.json(), body):
            return
        crud.update(svc, uow, "Observation", body["id"], body)
    except FhirError as exc:
        raise _located(body["id"], exc) from exc


def after_delete(svc: Services, uow: UnitOfWork, deleted: StoredResource) -> None:
    """A deleted ODI response withdraws its Observation (``deleted`` = the last version)."""
    if deleted.type == _QR and _was_odi(deleted):
        _withdraw(svc, uow, deleted.id)


def _was_odi(stored: StoredResource | None) -> bool:
    return stored is not None and not stored.deleted and odi.is_odi_response(stored.json())


def _existing(uow: UnitOfWork, response_id: str, *, strict: bool) -> StoredResource | None:
    """The live ODI Observation of a response. An Observation with its id that is not
    derived from the response is someone else's: 409 if ``strict``, else left alone."""
    oid = odi.observation_id(response_id)
    current = uow.get("Observation", oid, for_update=True)
    if current is None or current.deleted:
        return None
    derived = current.json().get("derivedFrom") or []
    if {"reference": f"{_QR}/{response_id}"} not in derived:
        if not strict:
            return None
        raise Conflict(
            f"Observation/{oid} exists but is not the ODI score of {_QR}/{response_id}; "
            "the server cannot record the score.",
            expression=["QuestionnaireResponse"],
        )
    return current


def _withdraw(svc: Services, uow: UnitOfWork, response_id: str) -> None:
    current = _existing(uow, response_id, strict=False)
    if current is None:
        return
    body = current.json()
    if body.get("status") == "entered-in-error":
        return
    body["status"] = "entered-in-error"
    try:
        crud.update(svc, uow, "Observation", current.id, body)
    except FhirError as exc:
        raise _located(current.id, exc) from exc


def _same(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    def strip(body: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (body.get("meta") or {}).items() if k == "profile"}
        return {**body, "meta": meta}

    return strip(stored) == strip(new)


def _located(oid: str, exc: FhirError) -> FhirError:
    """The same error, saying it concerns the derived Observation, not the request body."""
    return type(exc)(
        f"The ODI score Observation/{oid} computed from this {_QR}: {exc.diagnostics}",
        expression=exc.expression,
        details_code=exc.details_code,
        issues=exc.extra_issues,
        code=exc.issue_code,
    )


# --- licensed ODI texts, for display only ---------------------------------------------

_texts_lock = threading.Lock()
_texts_cache: dict[str, tuple[tuple[int, int], dict[str, odi.SectionTexts]]] = {}


def for_display(svc: Services, stored: StoredResource) -> StoredResource:
    """``stored`` as a read serves it: the ODI Questionnaire gets the site's licensed
    texts when ``odi_texts_file`` is set; everything else is returned unchanged."""
    path = svc.settings.odi_texts_file
    if not path or stored.type != "Questionnaire" or stored.text is None:
        return stored
    body = stored.json()
    if odi.canonical_url(body.get("url")) != codes.QUESTIONNAIRE_ODI:
        return stored
    texts = _load_texts(path)
    if not texts:
        return stored
    merged = orjson.dumps(odi.merge_texts(body, texts)).decode("utf-8")
    return dataclasses.replace(stored, text=merged)


def _load_texts(path: str) -> dict[str, odi.SectionTexts]:
    """The parsed texts file, read again when it changes; empty (and logged) if broken,
    so a configuration mistake shows the shipped titles rather than failing reads."""
    try:
        stat = Path(path).stat()
        version = (stat.st_mtime_ns, stat.st_size)
        with _texts_lock:
            cached = _texts_cache.get(path)
            if cached and cached[0] == version:
                return cached[1]
            texts = odi.parse_texts(orjson.loads(Path(path).read_bytes()))
            _texts_cache[path] = (version, texts)
            return texts
    except (OSError, ValueError) as exc:
        log.warning("ODI texts file %s not used: %s", path, exc)
        return {}
