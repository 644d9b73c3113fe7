"""Operations: ``$validate`` on every type, and the terminology operations.

Thin views: the input parameters come from the query string (GET) or a POSTed
``Parameters`` resource (``$validate`` also takes the bare resource), the work is done in
``services.validation`` and ``services.terminology_ops``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request

from kyphofhir.errors import FhirError, Invalid
from kyphofhir.fhir.models import validate_resource
from kyphofhir.fhir.outcome import operation_outcome
from kyphofhir.services import crud, terminology_ops, validation
from kyphofhir.services.context import Services
from kyphofhir.store.base import UnitOfWork

from .interactions import services
from .negotiation import fhir_response, parse_body

Work = Callable[[Services, UnitOfWork, str | None, terminology_ops.OperationInput], Any]


def _parameters(body: Any) -> dict[str, list[Any]]:
    """``Parameters.parameter`` → name → values (``value[x]``, ``resource`` or parts)."""
    out: dict[str, list[Any]] = {}
    for parameter in body.get("parameter") or []:
        if not isinstance(parameter, dict) or not parameter.get("name"):
            raise Invalid("Every Parameters.parameter needs a name.", expression=["Parameters"])
        key = next((k for k in parameter if k.startswith("value")), None)
        if key is not None:
            value = parameter[key]
        elif "resource" in parameter:
            value = parameter["resource"]
        else:
            value = parameter.get("part")
        out.setdefault(str(parameter["name"]), []).append(value)
    return out


def _input(allow_resource: bool = False) -> terminology_ops.OperationInput:
    values: dict[str, list[Any]] = {}
    for key, value in request.args.items(multi=True):
        if key not in ("_format", "_pretty"):
            values.setdefault(key, []).append(value)
    if request.method == "POST" and request.get_data(cache=True).strip():
        body = parse_body(request)
        if not isinstance(body, dict):
            raise Invalid("The body must be a Parameters resource.")
        if body.get("resourceType") == "Parameters":
            for key, items in _parameters(body).items():
                values.setdefault(key, []).extend(items)
        elif allow_resource and body.get("resourceType"):
            values.setdefault("resource", []).append(body)
        else:
            raise Invalid("The body must be a Parameters resource.", expression=["resourceType"])
    return terminology_ops.OperationInput(values)


def _terminology(rtype: str, work: Work) -> Callable[..., Response]:
    def view(rid: str | None = None) -> Response:
        svc = services()
        params = _input()
        return fhir_response(svc.run(False, lambda uow: work(svc, uow, rid, params)))

    view.__name__ = f"{rtype}_{work.__name__}"
    return view


def validate_operation(rtype: str, rid: str | None = None) -> Response:
    """``$validate``: 200 with an OperationOutcome listing every issue found."""
    crud.check_type(rtype)
    svc = services()
    params = _input(allow_resource=True)
    resource = params.one("resource")
    profiles = tuple(str(p) for p in params.values.get("profile") or [])
    if params.text("mode") == "delete":
        return fhir_response(operation_outcome([]))
    if resource is None:
        if rid is None:
            raise Invalid("$validate needs the resource to validate.", expression=["resource"])
        resource = svc.run(False, lambda uow: crud.read(svc, uow, rtype, rid)).json()
    if not isinstance(resource, dict) or resource.get("resourceType") != rtype:
        raise Invalid(
            f"$validate on {rtype} takes a {rtype} resource.", expression=["resourceType"]
        )
    issues = []
    try:
        validate_resource(resource)
    except FhirError as exc:
        issues += list(exc.issues)
    issues += validation.validate(svc, resource, profiles)
    return fhir_response(operation_outcome(issues))


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/<fhir_type:rtype>/$validate", view_func=validate_operation, methods=["POST"])
    bp.add_url_rule(
        "/<fhir_type:rtype>/<rid>/$validate",
        view_func=validate_operation,
        endpoint="validate_instance",
        methods=["GET", "POST"],
    )
    for rtype, name, work in (
        ("CodeSystem", "$lookup", terminology_ops.lookup),
        ("ValueSet", "$expand", terminology_ops.expand),
        ("ValueSet", "$validate-code", terminology_ops.validate_code),
    ):
        view = _terminology(rtype, work)
        bp.add_url_rule(f"/{rtype}/{name}", view_func=view, methods=["GET", "POST"])
        bp.add_url_rule(
            f"/{rtype}/<rid>/{name}",
            view_func=view,
            endpoint=f"{view.__name__}_instance",
            methods=["GET", "POST"],
        )
