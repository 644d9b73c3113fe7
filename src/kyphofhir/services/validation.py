"""Profile validation on write and for ``$validate``, against the artefacts of ``profiles/``.

The profiles, ValueSets and CodeSystems are read once per process from the profiles
folder (``Settings.profiles_path``); the copies the server stores and serves at start-up
(:mod:`kyphofhir.services.conformance`) are the same files. Bindings are expanded with
the same code as the ``:in`` search modifier (:func:`terminology.expand_with`).

Unknown profiles: a profile under kyphofhir's own canonical base that the server does
not have is an error (a typo would otherwise switch validation off unnoticed); any other
profile — HL7 core, the national or vendor profiles an EHR tags its resources with — is
accepted on write and reported as a warning by ``$validate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from kyphofhir.errors import FhirError, Invalid, Issue, NotFound, Unprocessable
from kyphofhir.fhir.profile_validation import CORE, ProfileError, ProfileValidator
from kyphofhir.services import terminology
from kyphofhir.services.context import Services

OWN_PROFILES = "https://kyphofhir.org/fhir/StructureDefinition/"
CONFORMANCE_TYPES = (
    "CodeSystem",
    "ValueSet",
    "StructureDefinition",
    "SearchParameter",
    "Questionnaire",
)


@dataclass(frozen=True)
class Artefacts:
    """The conformance resources of a profiles folder, by type and canonical URL."""

    folder: Path
    resources: tuple[dict[str, Any], ...]

    def of_type(self, rtype: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r.get("resourceType") == rtype]

    def get(self, rtype: str, url: str) -> dict[str, Any] | None:
        bare = url.split("|")[0]
        return next((r for r in self.of_type(rtype) if r.get("url") == bare), None)

    def find(self, rtype: str, url: str) -> dict[str, Any]:
        """A :data:`terminology.Finder` over the folder (unknown → NotFound)."""
        found = self.get(rtype, url)
        if found is None:
            raise NotFound(f"The {rtype} {url} is not in {self.folder}.")
        return found


@cache
def read_artefacts(folder: Path) -> Artefacts:
    """Every conformance resource in ``folder`` (``*.json``, recursively; Bundles opened)."""
    out: list[dict[str, Any]] = []
    if folder.is_dir():
        for path in sorted(folder.rglob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ProfileError(f"{path}: not readable JSON ({exc})") from exc
            items = [data]
            if isinstance(data, dict) and data.get("resourceType") == "Bundle":
                items = [e.get("resource") for e in data.get("entry") or [] if isinstance(e, dict)]
            for item in items:
                if isinstance(item, dict) and item.get("resourceType") in CONFORMANCE_TYPES:
                    if not item.get("url"):
                        raise ProfileError(f"{path}: {item['resourceType']} without url")
                    out.append(item)
    return Artefacts(folder, tuple(out))


@cache
def validator_for(folder: Path) -> ProfileValidator:
    """The validator of the profiles in ``folder`` (built once per process and folder)."""
    artefacts = read_artefacts(folder)

    def expand(url: str) -> frozenset[tuple[str, str]] | None:
        if artefacts.get("ValueSet", url) is None:
            return None
        return frozenset(terminology.expand_with(artefacts.find, url, "binding"))

    validator = ProfileValidator.from_structure_definitions(
        artefacts.of_type("StructureDefinition"), expand
    )
    for url in sorted(validator.bindings()):
        if url.startswith("https://kyphofhir.org/"):
            try:
                if not validator.expansion(url):
                    raise ProfileError(f"{folder}: the ValueSet {url} expands to nothing")
            except FhirError as exc:
                raise ProfileError(f"{folder}: the ValueSet {url}: {exc.diagnostics}") from exc
    return validator


def validator(svc: Services) -> ProfileValidator:
    """The validator of ``svc``'s profiles folder (built on first use; ``app`` warms it)."""
    return validator_for(svc.settings.profiles_path)


def validate(svc: Services, resource: dict[str, Any], extra: tuple[str, ...] = ()) -> list[Issue]:
    """Every issue of ``resource`` against its ``meta.profile`` and ``extra`` profiles.

    ``extra`` (the ``profile`` parameter of ``$validate``) must be known: the spec says a
    server that cannot validate against a nominated profile returns an error.
    """
    v = validator(svc)
    for url in extra:
        if v.get(url) is None:
            raise Invalid(
                f"The profile {url} is not known to this server.",
                expression=["profile"],
                code="not-supported",
                details_code="MSG_PARAM_INVALID",
            )
    meta = resource.get("meta")
    listed = meta.get("profile") if isinstance(meta, dict) else None
    claimed = [u for u in listed if isinstance(u, str)] if isinstance(listed, list) else []
    issues: list[Issue] = []
    for url in dict.fromkeys([*claimed, *extra]):
        profile = v.get(url)
        if profile is not None:
            issues += v.validate(resource, profile)
        elif url.startswith(OWN_PROFILES):
            issues.append(_unknown(resource, url, "error"))
        elif url.split("|")[0] != f"{CORE}{resource.get('resourceType')}":
            issues.append(_unknown(resource, url, "warning"))
    return issues


def _unknown(resource: dict[str, Any], url: str, severity: str) -> Issue:
    what = "is not a profile this server has" if severity == "error" else "is not known here"
    return Issue(
        severity,
        "not-supported",
        f"meta.profile {url} {what}; the resource was checked against R4 only.",
        (f"{resource.get('resourceType')}.meta.profile",),
    )


def check(svc: Services, resource: dict[str, Any]) -> None:
    """The write-time check: 422 with every error when a claimed profile is not met."""
    meta = resource.get("meta")
    if not isinstance(meta, dict) or not meta.get("profile"):
        return  # the common case: nothing claimed, nothing to do
    errors = [i for i in validate(svc, resource) if i.severity in ("error", "fatal")]
    if errors:
        first = errors[0]
        raise Unprocessable(
            first.diagnostics,
            expression=first.expression,
            code=first.code,
            details_code="MSG_RESOURCE_NOT_ALLOWED",
            issues=errors[1:],
        )
