"""Generate the conformance artefacts in ``profiles/`` from ``kyphofhir.study.codes``.

Every code, display and URL comes from ``codes.py``; this script only arranges them into
FHIR R4 CodeSystems, ValueSets, SearchParameters, the ODI Questionnaire and
StructureDefinitions. A StructureDefinition is written here as its *differential*; its
*snapshot* is the R4 base snapshot (``scripts/data/r4-base-elements.json``, see
``scripts/extract_r4_base.py``) with the differential merged in. The output is
deterministic (fixed date, sorted files), so ``tests/integration/test_profiles_build.py``
can check that the committed JSON is what this script writes. Usage::

    .venv/bin/python scripts/build_profiles.py          # rewrite profiles/*.json
    .venv/bin/python scripts/build_profiles.py --check  # exit 1 if profiles/ is stale

No ODI statement text is used anywhere: section titles, codes and ordinal values only.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kyphofhir.study import codes

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "profiles"
BASE_ELEMENTS = Path(__file__).resolve().parent / "data" / "r4-base-elements.json"

VERSION = "0.1.0"
DATE = "2026-11-25"
PUBLISHER = "kyphofhir"
FHIR_VERSION = "4.0.1"
CORE = "http://hl7.org/fhir/StructureDefinition/"
CONCEPT_PROPERTIES = "http://hl7.org/fhir/concept-properties"

Json = dict[str, Any]


def _common(rtype: str, rid: str, url: str, name: str, title: str, description: str) -> Json:
    return {
        "resourceType": rtype,
        "id": rid,
        "url": url,
        "version": VERSION,
        "name": name,
        "title": title,
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": PUBLISHER,
        "description": description,
    }


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.replace("_", "-").split("-"))


# --------------------------------------------------------------------------- CodeSystems


def _code_system(
    name: str,
    title: str,
    description: str,
    concepts: list[Json],
    properties: list[Json] | None = None,
    hierarchical: bool = False,
) -> Json:
    out = _common("CodeSystem", name, codes.code_system(name), _pascal(name), title, description)
    out["caseSensitive"] = True
    out["valueSet"] = codes.value_set(name)
    if hierarchical:
        out["hierarchyMeaning"] = "part-of"
    out["content"] = "complete"
    out["count"] = _count(concepts)
    if properties:
        out["property"] = properties
    out["concept"] = concepts
    return out


def _count(concepts: list[Json]) -> int:
    return sum(1 + _count(c.get("concept", [])) for c in concepts)


def measure_cs() -> Json:
    concepts = []
    for m in codes.MEASURES.values():
        props: list[Json] = [{"code": "unit", "valueString": m.unit}]
        if m.equivalent:
            props.append({"code": "equivalent", "valueCoding": m.equivalent})
        concepts.append(
            {"code": m.code, "display": m.display, "definition": m.definition, "property": props}
        )
    return _code_system(
        "measure",
        "kyphofhir measures",
        "Radiographic and derived measures of the kyphoplasty study for which LOINC and "
        "DICOM have no dedicated code. Each concept states its UCUM unit and, where one "
        "exists, the DICOM/SNOMED CT concept sent as an extra coding.",
        concepts,
        [
            {
                "code": "unit",
                "description": "The UCUM unit the value is recorded in.",
                "type": "string",
            },
            {
                "code": "equivalent",
                "description": "DICOM or SNOMED CT concept sent as an additional coding.",
                "type": "Coding",
            },
        ],
    )


def odi_cs() -> Json:
    sections = []
    for section, title in codes.ODI_SECTIONS.items():
        answers = [
            {
                "code": codes.odi_answer_code(section, level),
                "display": codes.odi_answer_display(section, level),
                "property": [{"code": "ordinal", "valueDecimal": level}],
            }
            for level in codes.ODI_LEVELS
        ]
        sections.append(
            {
                "code": section,
                "display": title,
                "property": [{"code": "notSelectable", "valueBoolean": True}],
                "concept": answers,
            }
        )
    return _code_system(
        "odi",
        "Oswestry Disability Index sections and answer levels",
        "The ten sections of the Oswestry Disability Index (ODI v2.1a) with their titles, "
        "and for each section its six answer levels scored 0 (least disability) to 5 (most "
        "disability). The statement texts are copyrighted and not part of this code system.",
        sections,
        [
            {
                "code": "notSelectable",
                "uri": f"{CONCEPT_PROPERTIES}#notSelectable",
                "description": "A section, not an answer.",
                "type": "boolean",
            },
            {
                "code": "ordinal",
                "description": "The score of an answer level (0-5).",
                "type": "decimal",
            },
        ],
        hierarchical=True,
    )


def timepoint_cs() -> Json:
    concepts = []
    for tp in codes.TIMEPOINTS.values():
        concepts.append(
            {
                "code": tp.code,
                "display": tp.display,
                "property": [{"code": "equivalent", "valueCoding": c} for c in tp.extra],
            }
        )
    return _code_system(
        "timepoint",
        "kyphofhir study timepoints",
        "The protocol's visits, arm-neutral. Their windows (days from the index date) are "
        "configured in mappings/timepoints.json, not here.",
        concepts,
        [
            {
                "code": "equivalent",
                "description": "DICOM CID 6146 or UMLS concept sent as an additional coding.",
                "type": "Coding",
            }
        ],
    )


def treatment_cs() -> Json:
    concepts = [{"code": code, "display": display} for code, display in codes.TREATMENTS.items()]
    return _code_system(
        "treatment",
        "kyphofhir treatments",
        "Treatments of the study for which no SNOMED CT concept is confirmed yet; CPT or "
        "OPS codes are sent as additional codings where a site has them.",
        concepts,
    )


def arm_cs() -> Json:
    concepts = [
        {
            "code": arm,
            "display": description,
            "property": [
                {"code": "arm-type", "valueCoding": {"system": codes.ARM_TYPE, "code": t}}
            ],
        }
        for arm, (t, description) in codes.ARMS.items()
    ]
    return _code_system(
        "arm",
        "kyphofhir study arms",
        "The arms of the kyphoplasty study; ResearchSubject.assignedArm and "
        "ResearchStudy.arm.name use these codes.",
        concepts,
        [
            {
                "code": "arm-type",
                "description": "The arm type (research-study-arm-type).",
                "type": "Coding",
            }
        ],
    )


# --------------------------------------------------------------------------- ValueSets


def _value_set(name: str, title: str, description: str, include: list[Json]) -> Json:
    out = _common("ValueSet", name, codes.value_set(name), _pascal(name), title, description)
    out["immutable"] = False
    out["compose"] = {"include": include}
    return out


def vertebra_vs() -> Json:
    concepts = [
        {"code": sct, "display": f"{level} vertebra"} for level, sct in codes.VERTEBRAE.items()
    ]
    return _value_set(
        "vertebra",
        "Vertebrae T1-L5",
        "The thoracic and lumbar vertebrae in SNOMED CT (DICOM CID 7603 Vertebra).",
        [{"system": codes.SNOMED, "concept": concepts}],
    )


def whole_system_vs(name: str, title: str) -> Json:
    return _value_set(
        name,
        title,
        f"All codes of the kyphofhir {name} code system.",
        [{"system": codes.code_system(name)}],
    )


def measure_vs(name: str, title: str, members: Iterable[str]) -> Json:
    concepts = [{"code": c, "display": codes.MEASURES[c].display} for c in members]
    return _value_set(
        name,
        title,
        f"{title}: codes of the kyphofhir measure code system.",
        [{"system": codes.CS_MEASURE, "concept": concepts}],
    )


# --------------------------------------------------------------------------- SearchParameters


def search_parameter(name: str, code: str, base: str, expression: str, description: str) -> Json:
    out = _common(
        "SearchParameter",
        name,
        f"{codes.CANONICAL}/SearchParameter/{name}",
        _pascal(name),
        "",
        description,
    )
    del out["title"]
    out.update({"code": code, "base": [base], "type": "token", "expression": expression})
    out["xpathUsage"] = "normal"
    return out


# --------------------------------------------------------------------------- Questionnaire


def odi_questionnaire() -> Json:
    out = _common(
        "Questionnaire",
        "odi",
        codes.QUESTIONNAIRE_ODI,
        "OswestryDisabilityIndex",
        "Oswestry Disability Index (ODI v2.1a), codes and section titles",
        "The ODI's ten sections with coded answer levels 0-5 (ordinalValue). The statement "
        "texts are copyrighted and not included: a site with a licence displays them from a "
        "local file. The server computes the score (LOINC 97909-6) when a response is stored.",
    )
    out["subjectType"] = ["Patient"]
    out["copyright"] = codes.ODI_COPYRIGHT
    out["code"] = [codes.ODI_PANEL]
    items: list[Json] = []
    for section, title in codes.ODI_SECTIONS.items():
        options = []
        for level in codes.ODI_LEVELS:
            coding = codes.coding(
                codes.CS_ODI,
                codes.odi_answer_code(section, level),
                codes.odi_answer_display(section, level),
            )
            coding = {
                "extension": [{"url": codes.EXT_ORDINAL_VALUE, "valueDecimal": level}],
                **coding,
            }
            options.append({"valueCoding": coding})
        items.append(
            {
                "linkId": section,
                "code": [codes.coding(codes.CS_ODI, section, title)],
                "text": title,
                "type": "choice",
                "required": False,
                "repeats": False,
                "answerOption": options,
            }
        )
    items.append(
        {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/questionnaire-unit",
                    "valueCoding": codes.coding(codes.UCUM, codes.ODI_UNIT),
                }
            ],
            "linkId": "odi-score",
            "code": [codes.ODI_SCORE],
            "text": "ODI score (%)",
            "type": "decimal",
            "required": False,
            "readOnly": True,
        }
    )
    out["item"] = items
    return out


# --------------------------------------------------------------------------- StructureDefinitions


def _path(element_id: str) -> str:
    return ".".join(part.split(":")[0] for part in element_id.split("."))


def el(element_id: str, **props: Any) -> Json:
    """One differential element; ``path`` follows from the id (slice names removed)."""
    return {"id": element_id, "path": _path(element_id), **props}


def ref(*targets: str) -> list[Json]:
    return [{"code": "Reference", "targetProfile": [CORE + t for t in targets]}]


def pattern_concept(coding: Json) -> Json:
    return {
        "patternCodeableConcept": {"coding": [{"system": coding["system"], "code": coding["code"]}]}
    }


def required(value_set: str, description: str) -> Json:
    return {"binding": {"strength": "required", "description": description, "valueSet": value_set}}


def invariant(key: str, human: str, expression: str, source: str) -> Json:
    return {
        "key": key,
        "severity": "error",
        "human": human,
        "expression": expression,
        "source": codes.structure_definition(source),
    }


def extension_slice(rtype: str, name: str, url: str, minimum: int, short: str) -> list[Json]:
    return [
        el(
            f"{rtype}.extension",
            slicing={"discriminator": [{"type": "value", "path": "url"}], "rules": "open"},
        ),
        el(
            f"{rtype}.extension:{name}",
            sliceName=name,
            short=short,
            min=minimum,
            max="1",
            type=[{"code": "Extension", "profile": [url]}],
        ),
    ]


def _category(kind: str) -> list[Json]:
    """category 1..* with a slice: at least one is observation-category ``kind``."""
    display = {"survey": "Survey", "imaging": "Imaging"}[kind]
    return [
        el(
            "Observation.category",
            min=1,
            slicing={"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "open"},
        ),
        el(
            f"Observation.category:{kind}",
            sliceName=kind,
            short=f"{display} (observation-category)",
            min=1,
            max="1",
            **pattern_concept(codes.coding(codes.OBSERVATION_CATEGORY, kind)),
        ),
    ]


def _quantity_value(
    unit: str, key: str, human: str, expression: str, source: str, minimum: int
) -> Json:
    return el(
        "Observation.value[x]",
        min=minimum,
        type=[{"code": "Quantity"}],
        patternQuantity={"system": codes.UCUM, "code": unit},
        constraint=[invariant(key, human, expression, source)],
    )


def _outcome_common(visit: int) -> list[Json]:
    """subject, encounter (the visit; ``visit`` is its min) and effective[x]."""
    return [
        el("Observation.subject", min=1, type=ref("Patient")),
        el(
            "Observation.encounter",
            min=visit,
            type=ref("Encounter"),
            short="The study visit (timepoint)",
        ),
        el("Observation.effective[x]", min=visit, type=[{"code": "dateTime"}]),
    ]


def _with_study_extension(rtype: str) -> list[Json]:
    return extension_slice(rtype, "researchStudy", codes.EXT_RESEARCH_STUDY, 0, "The study")


def _structure(
    name: str,
    base: str,
    title: str,
    description: str,
    differential: list[Json],
    root: Json | None = None,
) -> Json:
    out = _common(
        "StructureDefinition",
        name,
        codes.structure_definition(name),
        _pascal(name),
        title,
        description,
    )
    out["fhirVersion"] = FHIR_VERSION
    out["kind"] = "complex-type" if base == "Extension" else "resource"
    out["abstract"] = False
    out["type"] = base
    out["baseDefinition"] = CORE + base
    out["derivation"] = "constraint"
    root_element = el(base, short=title, definition=description, **(root or {}))
    diff = _merge_duplicates([root_element, *differential])
    out["snapshot"] = {"element": snapshot(base, diff)}
    out["differential"] = {"element": diff}
    return out


def _merge_duplicates(elements: list[Json]) -> list[Json]:
    """One differential element per id (constraints of repeated ids are concatenated)."""
    out: dict[str, Json] = {}
    for element in elements:
        current = out.get(element["id"])
        if current is None:
            out[element["id"]] = copy.deepcopy(element)
            continue
        for key, value in element.items():
            if key == "constraint":
                current["constraint"] = current.get("constraint", []) + value
            else:
                current[key] = value
    return list(out.values())


def _observation(
    name: str,
    title: str,
    description: str,
    code: list[Json],
    value: Json,
    category: str,
    extra: list[Json],
    root_constraints: tuple[Json, ...] = (),
    visit: int = 1,
) -> Json:
    return _structure(
        name,
        "Observation",
        title,
        description,
        [
            *_with_study_extension("Observation"),
            *_category(category),
            *code,
            *_outcome_common(visit),
            value,
            *extra,
        ],
        root={"constraint": list(root_constraints)} if root_constraints else None,
    )


def _radiographic_extra() -> list[Json]:
    return [
        el(
            "Observation.bodySite",
            min=1,
            short="The vertebra (T1-L5)",
            **required(codes.value_set("vertebra"), "The measured vertebra."),
        ),
        el("Observation.focus", min=1, type=ref("Condition"), short="The fracture Condition"),
    ]


def structure_definitions() -> list[Json]:
    tp_codes = " | ".join(f"'{c}'" for c in codes.TIMEPOINTS)
    vs_vertebra = codes.value_set("vertebra")
    angle = codes.MEASURES["kyphosis-angle"]
    out = [
        _structure(
            "kyphofhir-patient",
            "Patient",
            "Study patient",
            "A patient of the study: identified (e.g. study-subject identifier) with a "
            "recorded administrative gender.",
            [
                el("Patient.identifier", min=1),
                el("Patient.gender", min=1),
            ],
        ),
        _structure(
            "myeloma-condition",
            "Condition",
            "Multiple myeloma",
            "The patient's multiple myeloma (SNOMED CT 109989006); ICD-10 C90.0 may be "
            "added as a further coding.",
            [
                el("Condition.code", min=1, **pattern_concept(codes.MYELOMA)),
                el("Condition.subject", type=ref("Patient")),
            ],
        ),
        _structure(
            "vertebral-fracture-condition",
            "Condition",
            "Pathological vertebral fracture",
            "One osteolytic (pathological) fracture of one vertebra, due to the patient's "
            "multiple myeloma (condition-dueTo).",
            [
                *extension_slice(
                    "Condition", "dueTo", codes.EXT_DUE_TO, 1, "The myeloma causing the fracture"
                ),
                el("Condition.extension:dueTo.value[x]", type=ref("Condition")),
                el("Condition.code", min=1, **pattern_concept(codes.PATHOLOGICAL_FRACTURE)),
                el(
                    "Condition.bodySite",
                    min=1,
                    max="1",
                    short="The fractured vertebra (T1-L5)",
                    **required(vs_vertebra, "The fractured vertebra."),
                ),
                el("Condition.subject", type=ref("Patient")),
            ],
        ),
        _structure(
            "kyphoplasty-procedure",
            "Procedure",
            "Balloon kyphoplasty",
            "A balloon kyphoplasty; its date is the index date of the BKP arm's timepoint "
            "windows. CPT or OPS codes may be added as further codings.",
            [
                *_with_study_extension("Procedure"),
                el(
                    "Procedure.code",
                    min=1,
                    **pattern_concept(codes.coding(codes.CS_TREATMENT, "bkp")),
                ),
                el("Procedure.subject", type=ref("Patient")),
                el("Procedure.performed[x]", min=1, type=[{"code": "dateTime"}]),
                el(
                    "Procedure.bodySite",
                    min=1,
                    short="The treated vertebrae (T1-L5)",
                    **required(vs_vertebra, "A treated vertebra."),
                ),
                el(
                    "Procedure.reasonReference", min=1, type=ref("Condition"), short="The fractures"
                ),
            ],
        ),
        _structure(
            "study-visit-encounter",
            "Encounter",
            "Study visit",
            "One visit of the protocol; Encounter.type carries exactly one timepoint code. "
            "Every outcome Observation of the visit points at it (Observation.encounter).",
            [
                *_with_study_extension("Encounter"),
                el("Encounter.type", min=1),
                el("Encounter.subject", min=1, type=ref("Patient")),
            ],
            root={
                "constraint": [
                    invariant(
                        "visit-1",
                        "Exactly one type coding from the kyphofhir timepoint code system, "
                        "with one of its codes.",
                        f"type.coding.where(system = '{codes.CS_TIMEPOINT}').count() = 1 and "
                        f"type.coding.where(system = '{codes.CS_TIMEPOINT}')"
                        f".all(code in ({tp_codes}))",
                        "study-visit-encounter",
                    )
                ]
            },
        ),
        _observation(
            "vas-observation",
            "VAS pain score",
            "Pain on a 100 mm visual analogue scale (LOINC 38214-3), 0-100 mm.",
            [el("Observation.code", **pattern_concept(codes.VAS))],
            _quantity_value(
                codes.VAS_UNIT,
                "vas-1",
                "VAS is 0-100 mm.",
                "value.exists() and value >= 0 and value <= 100",
                "vas-observation",
                1,
            ),
            "survey",
            [],
        ),
        _observation(
            "odi-observation",
            "Oswestry Disability Index score",
            "The ODI total in % (LOINC 97909-6): sum / (5 x sections answered) x 100, "
            "computed by the server from the QuestionnaireResponse it is derived from, or "
            "imported as a total. Without a score (too many sections missing) there is no "
            "value but a dataAbsentReason. Encounter and effective time are those of the "
            "response when it has them, so they are optional here.",
            [el("Observation.code", **pattern_concept(codes.ODI_SCORE))],
            _quantity_value(
                codes.ODI_UNIT,
                "odi-1",
                "The ODI score is 0-100 %.",
                "value.exists() and value >= 0 and value <= 100",
                "odi-observation",
                0,
            ),
            "survey",
            [
                el("Observation.derivedFrom", type=ref("QuestionnaireResponse")),
                el(
                    "Observation.component",
                    slicing={
                        "discriminator": [{"type": "pattern", "path": "code"}],
                        "rules": "open",
                    },
                ),
                *_component_slice("rawSum", "odi-raw-sum", "odi-3", 50),
                *_component_slice("answered", "odi-answered", "odi-4", 10),
            ],
            (
                invariant(
                    "odi-2",
                    "A value or a dataAbsentReason, not both.",
                    "value.exists() xor dataAbsentReason.exists()",
                    "odi-observation",
                ),
            ),
            visit=0,  # a score derived from a response has the response's, if any
        ),
        _observation(
            "vertebral-height-observation",
            "Vertebral body height",
            "Anterior, middle or posterior height of one vertebral body in mm, on a lateral "
            "radiograph (the code says which); DICOM 121207 Height may be added.",
            [
                el(
                    "Observation.code",
                    **required(
                        codes.value_set("vertebral-height-measure"), "Which height was measured."
                    ),
                )
            ],
            _quantity_value(
                "mm",
                "vbh-1",
                "A height is positive.",
                "value.exists() and value > 0",
                "vertebral-height-observation",
                1,
            ),
            "imaging",
            _radiographic_extra(),
        ),
        _observation(
            "kyphosis-angle-observation",
            "Segmental kyphosis angle",
            f"{angle.definition} Recorded in degrees; SNOMED CT 285285000 Cobb angle may be "
            "added as a further coding.",
            [el("Observation.code", **pattern_concept(codes.coding(codes.CS_MEASURE, angle.code)))],
            _quantity_value(
                "deg",
                "ka-1",
                "The angle is between -90 and 90 degrees.",
                "value.exists() and value > -90 and value < 90",
                "kyphosis-angle-observation",
                1,
            ),
            "imaging",
            _radiographic_extra(),
        ),
        _structure(
            "study",
            "ResearchStudy",
            "Kyphoplasty study",
            "The study with its two arms, bkp (experimental) and conservative.",
            [
                el("ResearchStudy.condition", min=1),
                el("ResearchStudy.arm", min=2),
            ],
            root={
                "constraint": [
                    invariant(
                        "study-1",
                        "Exactly one arm named bkp and one named conservative.",
                        " and ".join(f"arm.where(name = '{a}').count() = 1" for a in codes.ARMS),
                        "study",
                    )
                ]
            },
        ),
        _structure(
            "study-subject",
            "ResearchSubject",
            "Study subject",
            "A patient's enrolment in the study, in the bkp or the conservative arm.",
            [
                el(
                    "ResearchSubject.extension",
                    slicing={"discriminator": [{"type": "value", "path": "url"}], "rules": "open"},
                ),
                el(
                    "ResearchSubject.extension:indexDate",
                    sliceName="indexDate",
                    short="The index date of the timepoint windows",
                    min=0,
                    max="1",
                    type=[{"code": "Extension", "profile": [codes.EXT_INDEX_DATE]}],
                ),
                el("ResearchSubject.individual", type=ref("Patient")),
                el(
                    "ResearchSubject.assignedArm",
                    min=1,
                    **required(codes.value_set("arm"), "The arm (bkp or conservative)."),
                ),
            ],
        ),
        _structure(
            "index-date",
            "Extension",
            "Index date",
            "The date the subject's timepoint windows count from: the kyphoplasty in the BKP "
            "arm, the diagnosis of the fracture or the enrolment in the conservative arm.",
            [
                el("Extension.extension", max="0"),
                el("Extension.url", fixedUri=codes.EXT_INDEX_DATE),
                el("Extension.value[x]", min=1, type=[{"code": "date"}, {"code": "dateTime"}]),
            ],
        ),
    ]
    index_date = out[-1]
    index_date["context"] = [{"type": "element", "expression": "ResearchSubject"}]
    return out


def _component_slice(name: str, code: str, key: str, maximum: int) -> list[Json]:
    m = codes.MEASURES[code]
    prefix = f"Observation.component:{name}"
    return [
        el(prefix, sliceName=name, min=0, max="1", short=m.display),
        el(f"{prefix}.code", **pattern_concept(codes.coding(codes.CS_MEASURE, code))),
        el(
            f"{prefix}.value[x]",
            min=1,
            type=[{"code": "Quantity"}],
            patternQuantity={"system": codes.UCUM, "code": m.unit},
            constraint=[
                invariant(
                    key,
                    f"{m.display} is 0-{maximum}.",
                    f"value.exists() and value >= 0 and value <= {maximum}",
                    "odi-observation",
                )
            ],
        ),
    ]


# --------------------------------------------------------------------------- snapshots


def _base() -> dict[str, Any]:
    types: dict[str, Any] = json.loads(BASE_ELEMENTS.read_text(encoding="utf-8"))["types"]
    return types


def snapshot(base_type: str, differential: list[Json]) -> list[Json]:
    """The base type's snapshot with ``differential`` merged in.

    An element of the differential whose id is in the base replaces the base's
    properties (constraints are added to the base's); a slice (``X.extension:name``,
    ``X.component:name``) is inserted after its sliced element and earlier slices, with
    the children of the sliced element (for extensions: of ``Extension``) under its id.
    """
    base = _base()
    elements = copy.deepcopy(base[base_type]["element"])
    extension_children = base["Extension"]["element"][1:]
    for diff in differential:
        index = {e["id"]: i for i, e in enumerate(elements)}
        if diff["id"] not in index:
            _insert_slice(elements, diff, extension_children)
            index = {e["id"]: i for i, e in enumerate(elements)}
        target = elements[index[diff["id"]]]
        _merge(target, diff)
    return elements


def _merge(target: Json, diff: Json) -> None:
    for key, value in diff.items():
        if key in ("id", "path"):
            continue
        if key == "constraint":
            target["constraint"] = target.get("constraint", []) + copy.deepcopy(value)
        else:
            target[key] = copy.deepcopy(value)
        if key.startswith(("fixed", "pattern")):
            # a base element carries no fixed/pattern; drop one of another type
            for other in [k for k in target if k.startswith(("fixed", "pattern")) and k != key]:
                del target[other]


def _insert_slice(elements: list[Json], diff: Json, extension_children: list[Json]) -> None:
    element_id = diff["id"]
    head, _, last = element_id.rpartition(".")
    if ":" not in last:
        raise ValueError(f"differential element {element_id} is not in the base snapshot")
    sliced_id = f"{head}.{last.split(':')[0]}"
    position = max(
        i
        for i, e in enumerate(elements)
        if e["id"] == sliced_id or e["id"].startswith((sliced_id + ".", sliced_id + ":"))
    )
    sliced = next(e for e in elements if e["id"] == sliced_id)
    slice_element = copy.deepcopy(sliced)
    slice_element.pop("slicing", None)
    slice_element["id"] = element_id
    slice_element["sliceName"] = last.split(":")[1]
    if last.startswith(("extension:", "modifierExtension:")):
        children = []
        for child in extension_children:
            rel = child["id"].split(".", 1)[1]
            copied = copy.deepcopy(child)
            copied["id"] = f"{element_id}.{rel}"
            copied["path"] = f"{sliced['path']}.{rel}"
            children.append(copied)
        url = diff["type"][0]["profile"][0]
        for child in children:
            if child["id"].endswith(".url"):
                child["fixedUri"] = url
    else:
        children = []
        for child in elements:
            if child["id"].startswith(sliced_id + ".") and ":" not in child["id"][len(sliced_id) :]:
                copied = copy.deepcopy(child)
                copied["id"] = element_id + child["id"][len(sliced_id) :]
                children.append(copied)
    elements[position + 1 : position + 1] = [slice_element, *children]


# --------------------------------------------------------------------------- all of it


def search_parameters() -> list[Json]:
    return [
        search_parameter(
            "researchsubject-arm",
            "arm",
            "ResearchSubject",
            "ResearchSubject.assignedArm",
            "The arm a subject is assigned to (bkp, conservative); R4 has no search "
            "parameter on ResearchSubject.assignedArm.",
        ),
        search_parameter(
            "observation-body-site",
            "body-site",
            "Observation",
            "Observation.bodySite",
            "The body site of an Observation (e.g. the vertebra a height was measured on); "
            "R4 has no search parameter on Observation.bodySite.",
        ),
    ]


def artefacts() -> dict[str, Json]:
    """File name → resource, for every artefact in ``profiles/``."""
    resources = [
        measure_cs(),
        odi_cs(),
        timepoint_cs(),
        treatment_cs(),
        arm_cs(),
        vertebra_vs(),
        whole_system_vs("timepoint", "Study timepoints"),
        whole_system_vs("treatment", "Study treatments"),
        whole_system_vs("arm", "Study arms"),
        measure_vs("vertebral-height-measure", "Vertebral body heights", codes.HEIGHT_MEASURES),
        measure_vs(
            "radiographic-measure",
            "Radiographic measures",
            (*codes.HEIGHT_MEASURES, "kyphosis-angle"),
        ),
        *search_parameters(),
        odi_questionnaire(),
        *structure_definitions(),
    ]
    return {f"{r['resourceType']}-{r['id']}.json": r for r in resources}


def render(resource: Json) -> str:
    return json.dumps(resource, indent=2, ensure_ascii=False) + "\n"


def stale(folder: Path = PROFILES) -> list[str]:
    """Files of ``folder`` that differ from (or are missing for, or are not) generated."""
    wanted = {name: render(r) for name, r in artefacts().items()}
    present = {p.name for p in folder.glob("*.json")}
    out = sorted(n for n in present - set(wanted))
    for name, text in wanted.items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            out.append(name)
    return sorted(out)


def main(argv: list[str]) -> int:
    if "--check" in argv:
        bad = stale()
        for name in bad:
            print(f"stale: profiles/{name}")
        return 1 if bad else 0
    wanted = artefacts()
    for path in PROFILES.glob("*.json"):
        if path.name not in wanted:
            path.unlink()
    for name, resource in wanted.items():
        (PROFILES / name).write_text(render(resource), encoding="utf-8")
    print(f"wrote {len(wanted)} files to {PROFILES}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
