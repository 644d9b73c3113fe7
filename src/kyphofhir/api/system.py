"""System-level interactions: capabilities, transaction/batch, system history."""

from __future__ import annotations

from flask import Blueprint, Response, request

from kyphofhir.services import validation
from kyphofhir.services.capability import capability_statement
from kyphofhir.services.transaction import Prefer, process

from .interactions import history_response, search_response, services
from .negotiation import base_url, fhir_response, parse_body, prefer_return


def metadata() -> Response:
    svc = services()
    profiles = validation.validator(svc).supported_profiles()
    return fhir_response(capability_statement(svc.registry, base_url(), profiles))


def transaction() -> Response:
    body = parse_body(request)
    result = process(services(), body, base=base_url(), prefer=Prefer(prefer_return(request)))
    return fhir_response(result)


def system_search() -> Response:
    return search_response(None)


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/metadata", view_func=metadata, methods=["GET"])
    bp.add_url_rule("", view_func=transaction, methods=["POST"])
    bp.add_url_rule("/", view_func=transaction, methods=["POST"], endpoint="transaction_slash")
    bp.add_url_rule("", view_func=system_search, methods=["GET"])
    bp.add_url_rule("/", view_func=system_search, methods=["GET"], endpoint="system_search_slash")
    bp.add_url_rule(
        "/_history",
        view_func=lambda: history_response(None, None),
        endpoint="system_history",
        methods=["GET"],
    )
