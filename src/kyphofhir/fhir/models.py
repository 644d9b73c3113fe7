"""The one import seam for ``fhir.resources``, and R4 structure validation.

kyphofhir speaks FHIR R4 (4.0.1). ``fhir.resources`` 8 ships R5 (default), R4B (4.3.0)
and STU3 models, no R4. R4B equals R4 for the structure of the types we serve except
where ``docs/fhir-version.md`` says otherwise, so the R4B models validate structure,
cardinality, data types, regexes and unknown elements. Two gaps of the models are closed
here with data taken from the official R4 definitions:

* pydantic coerces JSON kinds (``"active": "yes"`` becomes ``True``); FHIR JSON does not
  allow that, so booleans, integers, decimals and strings are checked for their JSON kind;
* required bindings on ``code`` elements are not enforced by the models; the allowed
  codes come from ``data/r4-required-bindings.json`` (generated from R4 4.0.1).
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.backboneelement import BackboneElement
from fhir.resources.R4B.resource import Resource as _ResourceModel
from fhirpathpy.models import models as _fhirpath_models
from pydantic import BaseModel, ValidationError

from kyphofhir.errors import InvalidResource, Issue
from kyphofhir.fhir.references import ID_RE as _ID_RE

FHIR_VERSION = "4.0.1"

JsonObject = dict[str, Any]


def _load_data(name: str) -> Any:
    return json.loads(resources.files("kyphofhir.data").joinpath(name).read_text("utf-8"))


SERVED_TYPES: tuple[str, ...] = tuple(_load_data("served-types.json"))
"""Resource types kyphofhir stores and serves (issue #3)."""

_REQUIRED_BINDINGS: dict[str, frozenset[str]] = {
    path: frozenset(codes)
    for path, codes in _load_data("r4-required-bindings.json")["bindings"].items()
}


# R4 contentReference elements (``Questionnaire.item.item`` is ``Questionnaire.item``),
# from the R4 model tables fhirpathpy ships.
_ELSEWHERE: dict[str, str] = _fhirpath_models["r4"]["pathsDefinedElsewhere"]


@dataclass(frozen=True)
class _Field:
    kind: str  # "bool" | "int" | "decimal" | "str" | "model" | "resource" | "any"
    model: type[BaseModel] | None
    is_list: bool
    element: str  # element name as in ElementDefinition.path ("value[x]" for choices)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Strip Optional/Annotated, return (inner type, is_list)."""
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0]
        elif origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (list, typing.List):  # noqa: UP006 - fhir.resources uses typing.List
            is_list = True
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation, is_list


@cache
def _fields(model: type[BaseModel]) -> dict[str, _Field]:
    out: dict[str, _Field] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key.startswith("_") or name == "fhir_comments":
            continue
        inner, is_list = _unwrap(info.annotation)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        choice = extra.get("one_of_many")
        element = f"{choice}[x]" if isinstance(choice, str) else key
        kind, nested = "any", None
        if inner is bool:
            kind = "bool"
        elif inner is int:
            kind = "int"
        elif inner is Decimal or inner is float:
            kind = "decimal"
        elif (
            isinstance(inner, type)
            and inner.__name__.endswith("Type")
            and inner.__module__ == "abc"
        ):
            target = inner.__name__[: -len("Type")]
            if target in ("Resource", "DomainResource"):
                kind = "resource"
            elif target != "FHIRPrimitiveExtension":
                kind, nested = "model", model_class(target)
        elif isinstance(inner, type):
            kind = "str"
        out[key] = _Field(kind, nested, is_list, element)
    return out


@cache
def model_class(name: str) -> type[BaseModel]:
    """The R4B model class for a resource, data type or backbone element name."""
    cls: type[BaseModel] = get_fhir_model_class(name)
    return cls


def is_served_type(name: str) -> bool:
    return name in SERVED_TYPES


def is_known_type(name: str) -> bool:
    """True for any FHIR resource type name (served or not)."""
    try:
        return issubclass(model_class(name), _ResourceModel)
    except (ValueError, KeyError, AttributeError):
        return False


def validate_resource(resource: JsonObject, *, expected_type: str | None = None) -> None:
    """Raise :class:`InvalidResource` unless ``resource`` is valid R4 structure.

    Every problem becomes one issue whose ``expression`` points at the element,
    e.g. ``Patient.name[0].given``.
    """
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not is_known_type(rtype):
        raise InvalidResource(
            f"Unknown or missing resourceType {rtype!r}.",
            expression=["resourceType"],
            details_code="MSG_UNKNOWN_TYPE",
        )
    if expected_type is not None and rtype != expected_type:
        raise InvalidResource(
            f"Resource type {rtype} does not match the URL's type {expected_type}.",
            expression=["resourceType"],
            details_code="MSG_RESOURCE_TYPE_MISMATCH",
        )
    issues: list[Issue] = []
    try:
        _check_json_kinds(resource, model_class(rtype), rtype, rtype, issues)
    except RecursionError:
        raise InvalidResource(
            "The resource is nested too deeply to be processed.",
            details_code="MSG_CANT_PARSE_CONTENT",
        ) from None
    try:
        model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        for err in exc.errors():
            issues.append(
                Issue(
                    "error",
                    "structure" if err["type"] == "extra_forbidden" else "value",
                    f"{_describe(err)}",
                    (_expression(rtype, err["loc"]),),
                    "MSG_CANT_PARSE_CONTENT",
                )
            )
    except (ValueError, TypeError) as exc:  # model root validators raise these directly
        issues.append(Issue("error", "invariant", str(exc), (rtype,), "MSG_CANT_PARSE_CONTENT"))
    if issues:
        seen: set[tuple[str, ...]] = set()
        unique = []
        for issue in issues:  # the R4 checks run first; the model may repeat them
            if issue.expression not in seen:
                seen.add(issue.expression)
                unique.append(issue)
        first, rest = unique[0], unique[1:]
        raise InvalidResource(
            first.diagnostics,
            expression=first.expression,
            details_code=first.details_code,
            issues=rest,
            code=first.code,
        )


def _describe(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "Unknown element (not part of FHIR R4)."
    msg = str(err["msg"])
    return msg.split("\n")[0]


def _expression(rtype: str, loc: tuple[Any, ...]) -> str:
    out = rtype
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not part.startswith("function-"):
            out += "." + part
    return out


_KIND_CHECKS: dict[str, tuple[tuple[type, ...], str]] = {
    "bool": ((bool,), "a JSON boolean"),
    "int": ((int,), "a JSON integer"),
    "decimal": ((int, float, Decimal), "a JSON number"),
    "str": ((str,), "a JSON string"),
}


# Data types that exist in R4B but not in R4 (docs/fhir-version.md): an element whose JSON
# name ends with one of them (``valueCodeableReference``, ``fixedRatioRange``) is not R4.
_R4B_ONLY_TYPE_SUFFIXES = ("CodeableReference", "RatioRange")


@cache
def _json_keys(model: type[BaseModel]) -> frozenset[str]:
    """The JSON property names FHIR allows on ``model`` (aliases, ``_x`` primitive extensions).

    pydantic also accepts python field names (``class_fhir``, ``gender__ext``,
    ``fhir_comments``) because the models set ``populate_by_name``; FHIR JSON does not.
    """
    keys = {
        info.alias or name for name, info in model.model_fields.items() if name != "fhir_comments"
    }
    keys.add("resourceType")
    return frozenset(k for k in keys if not k.endswith(_R4B_ONLY_TYPE_SUFFIXES))


def _canonical_backbone_path(path: str) -> str:
    """``Questionnaire.item.item`` → ``Questionnaire.item`` (R4 contentReference elements)."""
    return _ELSEWHERE.get(path, path)


def _check_json_kinds(
    data: JsonObject, model: type[BaseModel], where: str, path: str, issues: list[Issue]
) -> None:
    """Walk the JSON next to the model: FHIR property names, JSON kinds, required bindings."""
    fields = _fields(model)
    allowed_keys = _json_keys(model)
    if issubclass(model, _ResourceModel) and "id" in data:
        rid = data["id"]
        if not isinstance(rid, str) or not _ID_RE.match(rid):
            issues.append(
                Issue(
                    "error",
                    "value",
                    "A resource id is 1-64 characters of A-Z a-z 0-9 - .",
                    (f"{where}.id",),
                    "MSG_ID_INVALID",
                )
            )
    for key, value in data.items():
        if key not in allowed_keys:
            issues.append(
                Issue(
                    "error",
                    "structure",
                    "Unknown element (not part of FHIR R4).",
                    (f"{where}.{key}",),
                    "MSG_UNKNOWN_ELEMENT",
                )
            )
            continue
        spec = fields.get(key)
        if spec is None:
            continue  # primitive extension (``_gender``): checked by the model
        items = value if spec.is_list and isinstance(value, list) else [value]
        for index, item in enumerate(items):
            here = f"{where}.{key}" + (f"[{index}]" if spec.is_list else "")
            if item is None:
                continue
            if spec.kind in _KIND_CHECKS:
                _check_primitive(spec, item, here, path, issues)
            elif spec.kind == "model" and spec.model is not None and isinstance(item, dict):
                sub = spec.model
                sub_path = (
                    _canonical_backbone_path(f"{path}.{spec.element}")
                    if issubclass(sub, BackboneElement)
                    else _type_name(sub)
                )
                _check_json_kinds(item, sub, here, sub_path, issues)
            elif spec.kind == "resource" and isinstance(item, dict):
                rtype = item.get("resourceType")
                if isinstance(rtype, str) and is_known_type(rtype):
                    _check_json_kinds(item, model_class(rtype), here, rtype, issues)


def _check_primitive(spec: _Field, item: Any, here: str, path: str, issues: list[Issue]) -> None:
    allowed, label = _KIND_CHECKS[spec.kind]
    bad_bool = spec.kind != "bool" and isinstance(item, bool)
    if not isinstance(item, allowed) or bad_bool:
        issues.append(
            Issue("error", "value", f"Must be {label}.", (here,), "MSG_CANT_PARSE_CONTENT")
        )
        return
    codes = _REQUIRED_BINDINGS.get(f"{path}.{spec.element}")
    if codes is not None and isinstance(item, str) and item not in codes:
        issues.append(
            Issue(
                "error",
                "code-invalid",
                f"Code {item!r} is not in the required value set for {path}.{spec.element}.",
                (here,),
                "MSG_CODE_INVALID",
            )
        )


def _type_name(model: type[BaseModel]) -> str:
    getter = getattr(model, "get_resource_type", None)
    return str(getter()) if callable(getter) else model.__name__
