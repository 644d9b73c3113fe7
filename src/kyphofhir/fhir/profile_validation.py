"""Validation of a resource against a FHIR R4 profile (StructureDefinition). Pure.

No maintained Python validator for R4 StructureDefinitions installs here (the HL7 one
needs Java), so this module interprets exactly the rules our profiles (``profiles/``)
use, read from each profile's *differential* — what the profile adds to R4; the R4 base
rules are checked by :func:`kyphofhir.fhir.models.validate_resource` on every write:

* ``min``/``max`` cardinality (per parent element);
* ``fixed[x]`` (equal) and ``pattern[x]`` (contains: every key of the pattern, every
  pattern list item matched by some instance item);
* bindings: ``required`` is an error, ``extensible`` a warning, when no code is in the
  expansion of the ValueSet (CodeableConcept: any coding; Coding, Quantity, code, string);
  ValueSets the expander does not know are not checked;
* ``type``: the allowed types of a choice element (``value[x]``) and the target types of
  a Reference (``targetProfile`` of HL7 core types; ``urn:uuid:`` references are skipped);
* slicing with ``value``/``pattern`` discriminators on one element or ``$this``
  (extensions by ``url``, components by ``code``, categories by themselves), open or
  closed, with per-slice cardinality and rules;
* ``constraint`` invariants as FHIRPath (fhirpathpy, R4 model), evaluated on each
  instance of their element; an empty result counts as false, as in the HL7 validator.

A profile using anything else (``minValue[x]``, ``maxLength``, other discriminators) is
refused when it is loaded (:class:`ProfileError`), never silently half-checked.

Each problem is one :class:`~kyphofhir.errors.Issue` whose ``expression`` is the
element's location in the instance (``Observation.valueQuantity``,
``Condition.bodySite[0]``) and whose ``diagnostics`` starts with the profile and the rule
(``vas-observation: vas-1: …``, ``… min: …``).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from antlr4 import CommonTokenStream, InputStream, Token
from antlr4.error.ErrorListener import ErrorListener
from fhirpathpy import compile as fhirpath_compile
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models as _fhirpath_models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from kyphofhir.errors import Issue
from kyphofhir.fhir.primitives import choice_type

CORE = "http://hl7.org/fhir/StructureDefinition/"

ValueSetExpander = Callable[[str], "frozenset[tuple[str, str]] | None"]
"""ValueSet canonical → its (system, code) pairs, or None when it is not known."""

_MODEL: dict[str, Any] = _fhirpath_models["r4"]
_PATH2TYPE: dict[str, str] = _MODEL["path2Type"]

# ElementDefinition properties this validator understands (or that carry no rule).
_DOCUMENTATION = {
    "id",
    "path",
    "short",
    "definition",
    "comment",
    "requirements",
    "alias",
    "label",
    "code",
    "example",
    "mapping",
    "mustSupport",
    "isModifier",
    "isModifierReason",
    "isSummary",
    "meaningWhenMissing",
    "condition",
    "base",
    "extension",
    "representation",
    "contentReference",
}
_RULES = {"min", "max", "type", "binding", "constraint", "slicing", "sliceName"}


class ProfileError(ValueError):
    """A StructureDefinition this validator cannot apply faithfully."""


@dataclass
class _Invariant:
    key: str
    severity: str
    human: str
    expression: str
    evaluate: Callable[..., list[Any]]
    # the same test in Python, for the one common form (see _bounds)
    fast: Callable[[dict[str, Any]], bool] | None = None


_COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_BOUND = re.compile(r"^value\s*(>=|>|<=|<)\s*(-?\d+(?:\.\d+)?)$")


def _bounds(expression: str) -> Callable[[dict[str, Any]], bool] | None:
    """``value.exists() and value >= 0 and value <= 100`` as a Python test, or None.

    fhirpathpy needs about half a millisecond for such a range check; every outcome
    Observation has one. On an element whose instances are objects (a Quantity) it means:
    ``value`` is a number within every bound. ``tests/unit/test_profile_validation.py``
    checks that both give the same answers.
    """
    parts = [p.strip() for p in expression.split(" and ")]
    if len(parts) < 2 or parts[0] != "value.exists()":
        return None
    tests: list[tuple[Callable[[Any, Any], bool], Decimal]] = []
    for part in parts[1:]:
        match = _BOUND.match(part)
        if match is None:
            return None
        tests.append((_COMPARE[match.group(1)], Decimal(match.group(2))))

    def check(data: dict[str, Any]) -> bool:
        value = data.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        number = Decimal(str(value))
        return all(compare(number, bound) for compare, bound in tests)

    return check


@dataclass
class _Node:
    """One element of the differential, with its children and slices."""

    name: str  # the last path segment (``value[x]``, ``extension``)
    element: dict[str, Any] = field(default_factory=dict)
    children: dict[str, _Node] = field(default_factory=dict)
    slices: dict[str, _Node] = field(default_factory=dict)
    invariants: list[_Invariant] = field(default_factory=list)
    # slice membership: discriminator path → ("fixed" | "pattern", value)
    match: dict[str, tuple[str, Any]] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return str(self.element.get("path", ""))


@dataclass(frozen=True)
class Profile:
    """A compiled profile: its canonical URL, id, resource type and element tree."""

    url: str
    name: str
    type: str
    root: _Node


# ------------------------------------------------------------------------- compiling


def compile_profile(sd: dict[str, Any]) -> Profile:
    """The validation tree of a constraint StructureDefinition's differential."""
    name = str(sd.get("id") or sd.get("name") or sd.get("url"))
    url, rtype = sd.get("url"), sd.get("type")
    if not url or not rtype:
        raise ProfileError(f"StructureDefinition {name}: no url or type")
    if sd.get("derivation") != "constraint":
        raise ProfileError(f"StructureDefinition {name}: only constraints can be validated")
    elements = (sd.get("differential") or {}).get("element") or []
    root = _Node(rtype)
    for element in elements:
        element_id = str(element.get("id") or element.get("path") or "")
        segments = element_id.split(".")
        if segments[0] != rtype:
            raise ProfileError(f"{name}: element {element_id} is not under {rtype}")
        node = root
        for segment in segments[1:]:
            child_name, _, slice_name = segment.partition(":")
            node = node.children.setdefault(child_name, _Node(child_name))
            if slice_name:
                node = node.slices.setdefault(slice_name, _Node(child_name))
        unknown = set(element) - _DOCUMENTATION - _RULES
        unknown = {k for k in unknown if not k.startswith(("fixed", "pattern"))}
        if unknown:
            raise ProfileError(
                f"{name}: element {element_id} uses {', '.join(sorted(unknown))}, which "
                "this validator does not check"
            )
        node.element = element
        node.invariants = [_invariant(name, element_id, c) for c in element.get("constraint", [])]
    _compile_slices(name, root)
    return Profile(str(url), name, str(rtype), root)


def _invariant(profile: str, element_id: str, constraint: dict[str, Any]) -> _Invariant:
    expression = constraint.get("expression")
    key = str(constraint.get("key") or "?")
    if not expression:
        raise ProfileError(f"{profile}: constraint {key} on {element_id} has no expression")
    try:
        _check_syntax(str(expression))
        evaluate = fhirpath_compile(str(expression), _MODEL)
        evaluate({"resourceType": element_id.split(".")[0]}, {})  # unknown functions fail here
    except Exception as exc:  # noqa: BLE001 - the FHIRPath parser raises assorted errors
        raise ProfileError(f"{profile}: constraint {key}: bad FHIRPath ({exc})") from exc
    return _Invariant(
        key,
        str(constraint.get("severity") or "error"),
        str(constraint.get("human") or ""),
        str(expression),
        evaluate,
        _bounds(str(expression)) if "." in element_id else None,
    )


class _RaiseOnSyntaxError(ErrorListener):  # type: ignore[misc]
    def syntaxError(  # noqa: N802 - the antlr4 interface
        self, recognizer: Any, symbol: Any, line: int, column: int, msg: str, e: Any
    ) -> None:
        raise ValueError(f"column {column}: {msg}")


def _check_syntax(expression: str) -> None:
    """fhirpathpy's parser recovers from syntax errors silently; a profile must not."""
    listener = _RaiseOnSyntaxError()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    parser.expression()
    if parser.getCurrentToken().type != Token.EOF:
        raise ValueError(f"unexpected text after column {parser.getCurrentToken().column}")


def _compile_slices(profile: str, node: _Node) -> None:
    for child in node.children.values():
        if child.slices:
            slicing = child.element.get("slicing")
            if not slicing:
                raise ProfileError(
                    f"{profile}: {child.path or child.name} has slices but no slicing"
                )
            for discriminator in slicing.get("discriminator") or []:
                kind, path = discriminator.get("type"), discriminator.get("path")
                simple = bool(path) and not any(c in str(path) for c in ".()$")
                if kind not in ("value", "pattern") or not (simple or path == "$this"):
                    raise ProfileError(
                        f"{profile}: discriminator {kind}:{path} on {child.path} is not supported"
                    )
                for slice_name, member in child.slices.items():
                    member.match[path] = _slice_value(profile, slice_name, member, path)
        for member in child.slices.values():
            _compile_slices(profile, member)
        _compile_slices(profile, child)


def _slice_value(profile: str, slice_name: str, member: _Node, path: str) -> tuple[str, Any]:
    target = member if path == "$this" else member.children.get(path)
    if target is not None:
        for key, value in target.element.items():
            if key.startswith("fixed"):
                return ("fixed", value)
            if key.startswith("pattern"):
                return ("pattern", value)
    if path == "url":
        for type_ in member.element.get("type") or []:
            if type_.get("profile"):
                return ("fixed", type_["profile"][0])
    raise ProfileError(f"{profile}: slice {slice_name} has no value for its discriminator {path}")


# ------------------------------------------------------------------------- validating


@dataclass(frozen=True)
class _Value:
    """One instance of an element: its JSON, location and FHIR type (if known)."""

    json: Any
    location: str
    type: str | None


class _Run:
    """The state of one validation: the profile, the resource and the issues so far."""

    def __init__(self, validator: ProfileValidator, profile: Profile, resource: dict[str, Any]):
        self.validator = validator
        self.profile = profile
        self.resource = resource
        self.issues: list[Issue] = []

    def issue(
        self, rule: str, location: str, message: str, code: str, severity: str = "error"
    ) -> None:
        self.issues.append(
            Issue(severity, code, f"{self.profile.name}: {rule}: {message}", (location,))
        )

    # -- the tree

    def node(self, node: _Node, parents: list[_Value]) -> None:
        for child in node.children.values():
            for parent in parents:
                if not isinstance(parent.json, dict):
                    continue
                values = list(_children(parent, child))
                self.element(child, parent, values)

    def element(self, node: _Node, parent: _Value, values: list[_Value]) -> None:
        where = f"{parent.location}.{node.name.removesuffix('[x]')}"
        self.cardinality(node, where, len(values))
        for value in values:
            self.rules(node, value)
        if node.slices:
            self.sliced(node, parent, values, where)
        self.node(node, [v for v in values if isinstance(v.json, dict)])

    def sliced(self, node: _Node, parent: _Value, values: list[_Value], where: str) -> None:
        members: dict[str, list[_Value]] = {name: [] for name in node.slices}
        for value in values:
            matched = [n for n, s in node.slices.items() if _in_slice(s, value.json)]
            for name in matched:
                members[name].append(value)
            if not matched and (node.element.get("slicing") or {}).get("rules") == "closed":
                self.issue(
                    "slice",
                    value.location,
                    f"{value.location} matches none of the slices of {node.path} (closed).",
                    "structure",
                )
        for name, member in node.slices.items():
            self.cardinality(member, f"{where}:{name}", len(members[name]), label=where)
            for value in members[name]:
                self.rules(member, value)
            self.node(member, [v for v in members[name] if isinstance(v.json, dict)])

    def cardinality(self, node: _Node, where: str, count: int, label: str | None = None) -> None:
        minimum = node.element.get("min")
        maximum = node.element.get("max")
        location = label or where
        if isinstance(minimum, int) and count < minimum:
            self.issue(
                "min",
                location,
                f"{where}: at least {minimum} required, found {count}.",
                "required",
            )
        if maximum not in (None, "*") and count > int(str(maximum)):
            self.issue(
                "max",
                location,
                f"{where}: at most {maximum} allowed, found {count}.",
                "structure",
            )

    def rules(self, node: _Node, value: _Value) -> None:
        element = node.element
        self.types(element, value)
        for key, expected in element.items():
            if key.startswith("fixed") and value.json != expected:
                self.issue(
                    "fixed",
                    value.location,
                    f"{value.location} must be exactly {_short(expected)}.",
                    "value",
                )
            elif key.startswith("pattern") and not _contains(value.json, expected):
                self.issue(
                    "pattern",
                    value.location,
                    f"{value.location} must contain {_short(expected)}.",
                    "value",
                )
        binding = element.get("binding")
        if binding and binding.get("valueSet"):
            self.binding(binding, value)
        for invariant in node.invariants:
            self.invariant(invariant, value)

    def types(self, element: dict[str, Any], value: _Value) -> None:
        allowed = element.get("type") or []
        if not allowed:
            return
        codes = {t.get("code") for t in allowed}
        if element.get("path", "").endswith("[x]") and value.type not in codes:
            self.issue(
                "type",
                value.location,
                f"{value.location}: type {value.type} is not allowed here "
                f"(allowed: {', '.join(sorted(str(c) for c in codes))}).",
                "structure",
            )
            return
        targets = [
            p[len(CORE) :]
            for t in allowed
            if t.get("code") == "Reference"
            for p in t.get("targetProfile") or []
            if p.startswith(CORE)
        ]
        if targets and isinstance(value.json, dict):
            found = _reference_type(value.json, self.resource)
            if found is not None and found not in targets:
                self.issue(
                    "type",
                    value.location,
                    f"{value.location} must refer to {' or '.join(targets)}, not {found}.",
                    "structure",
                )

    def binding(self, binding: dict[str, Any], value: _Value) -> None:
        strength = binding.get("strength")
        if strength not in ("required", "extensible"):
            return
        url = str(binding["valueSet"])
        expansion = self.validator.expansion(url)
        if expansion is None or _bound(value.json, expansion):
            return
        self.issue(
            "binding",
            value.location,
            f"{value.location}: no code from the value set {url} ({strength} binding).",
            "code-invalid",
            "error" if strength == "required" else "warning",
        )

    def invariant(self, invariant: _Invariant, value: _Value) -> None:
        detail = ""
        if invariant.fast is not None and isinstance(value.json, dict):
            ok = invariant.fast(value.json)
        else:
            target: Any = value.json
            if value.location != self.profile.type and value.type:
                target = ResourceNode.create_node(value.json, value.type)  # type: ignore[no-untyped-call]
            try:
                ok = invariant.evaluate(target, {"resource": self.resource}) == [True]
            except Exception as exc:  # noqa: BLE001 - fhirpathpy raises assorted errors
                ok = False
                detail = f" (could not be evaluated: {exc})"
        if not ok:
            self.issue(
                invariant.key,
                value.location,
                f"{invariant.human or invariant.expression}{detail} [{invariant.expression}]",
                "invariant",
                "warning" if invariant.severity == "warning" else "error",
            )


def _children(parent: _Value, node: _Node) -> Iterator[_Value]:
    """The instances of ``node`` in the JSON object ``parent``."""
    data: dict[str, Any] = parent.json
    name = node.name
    path = node.path or f"{parent.type}.{name}"
    if name.endswith("[x]"):
        prefix = name[:-3]
        for key, value in data.items():
            suffix = key[len(prefix) :]
            if key.startswith(prefix) and suffix[:1].isupper():
                type_name = choice_type(suffix)
                yield from _listed(value, f"{parent.location}.{key}", type_name)
        return
    if name not in data:
        if f"_{name}" in data:  # a primitive with only an id/extension
            yield from _listed(data[f"_{name}"], f"{parent.location}.{name}", None)
        return
    yield from _listed(data[name], f"{parent.location}.{name}", _PATH2TYPE.get(path, path))


def _listed(value: Any, location: str, type_name: str | None) -> Iterator[_Value]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield _Value(item, f"{location}[{i}]", type_name)
    else:
        yield _Value(value, location, type_name)


def _in_slice(member: _Node, value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    for path, (kind, expected) in member.match.items():
        got = value if path == "$this" else value.get(path)
        if kind == "fixed" and got != expected:
            return False
        if kind == "pattern" and not _contains(got, expected):
            return False
    return True


def _contains(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: ``value`` has everything ``pattern`` has."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            _contains(value.get(k), v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(_contains(i, p) for i in items) for p in pattern)
    if isinstance(pattern, int | float) and not isinstance(pattern, bool):
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and Decimal(str(value)) == Decimal(str(pattern))
        )
    return bool(value == pattern)


def _bound(value: Any, expansion: frozenset[tuple[str, str]]) -> bool:
    if isinstance(value, str):
        return any(code == value for _, code in expansion)
    if not isinstance(value, dict):
        return False
    codings = value.get("coding") if "coding" in value or "text" in value else [value]
    for coding in codings or []:
        if isinstance(coding, dict) and (coding.get("system"), coding.get("code")) in expansion:
            return True
    return False


def _reference_type(reference: dict[str, Any], resource: dict[str, Any]) -> str | None:
    """The resource type a Reference points at, or None when that cannot be told."""
    text = reference.get("reference")
    if not isinstance(text, str):
        return None
    if text.startswith("#"):
        for contained in resource.get("contained") or []:
            if isinstance(contained, dict) and contained.get("id") == text[1:]:
                return str(contained.get("resourceType"))
        return None
    if text.startswith(("urn:uuid:", "urn:oid:")):
        return None
    parts = text.split("/_history/")[0].rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else None


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


# ------------------------------------------------------------------------- the registry


class ProfileValidator:
    """The profiles a server knows, and the ValueSet expansions their bindings need."""

    def __init__(self, profiles: Iterable[Profile], expand: ValueSetExpander) -> None:
        self._profiles = {p.url: p for p in profiles}
        self._expand = expand
        self._expansions: dict[str, frozenset[tuple[str, str]] | None] = {}

    @classmethod
    def from_structure_definitions(
        cls, definitions: Iterable[dict[str, Any]], expand: ValueSetExpander
    ) -> ProfileValidator:
        return cls(
            (compile_profile(sd) for sd in definitions if sd.get("derivation") == "constraint"),
            expand,
        )

    @property
    def urls(self) -> list[str]:
        return sorted(self._profiles)

    def get(self, url: str) -> Profile | None:
        return self._profiles.get(url.split("|")[0])

    def supported_profiles(self) -> dict[str, list[str]]:
        """Resource type → the canonical URLs of its profiles (CapabilityStatement)."""
        out: dict[str, list[str]] = {}
        for profile in sorted(self._profiles.values(), key=lambda p: p.url):
            out.setdefault(profile.type, []).append(profile.url)
        return out

    def expansion(self, url: str) -> frozenset[tuple[str, str]] | None:
        key = url.split("|")[0]
        if key not in self._expansions:
            self._expansions[key] = self._expand(key)
        return self._expansions[key]

    def bindings(self) -> set[str]:
        """Every ValueSet the known profiles bind to (to check they can be expanded)."""
        out: set[str] = set()

        def walk(node: _Node) -> None:
            binding = node.element.get("binding") or {}
            if binding.get("valueSet") and binding.get("strength") in ("required", "extensible"):
                out.add(str(binding["valueSet"]).split("|")[0])
            for child in [*node.children.values(), *node.slices.values()]:
                walk(child)

        for profile in self._profiles.values():
            walk(profile.root)
        return out

    def validate(self, resource: dict[str, Any], profile: Profile) -> list[Issue]:
        """Every issue of ``resource`` against ``profile`` (errors and warnings)."""
        rtype = str(resource.get("resourceType"))
        if rtype != profile.type:
            return [
                Issue(
                    "error",
                    "invalid",
                    f"{profile.name}: the profile is for {profile.type}, not {rtype}.",
                    (rtype,),
                )
            ]
        run = _Run(self, profile, resource)
        root = _Value(resource, rtype, rtype)
        run.rules(profile.root, root)
        run.node(profile.root, [root])
        return run.issues
