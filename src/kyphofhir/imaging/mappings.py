"""The DICOM mapping tables in ``mappings/`` (``body-part.json``, ``sr-measures.json``).

Read and checked when loaded (a broken file is a ValueError naming the problem, at start-up
rather than at the first SR). Labels are compared after :func:`normalise`, so the files
can list them as people write them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from kyphofhir.study import codes

BODY_PART_FILE = "body-part.json"
SR_MEASURES_FILE = "sr-measures.json"

_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normalise(label: str) -> str:
    """Lower case, every run of non-alphanumerics one space (``Post-op`` = ``post op``)."""
    return _NON_ALNUM.sub(" ", label.lower()).strip()


def _compact(term: str) -> str:
    return _NON_ALNUM.sub("", term.lower())


def default_mappings_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "mappings"


# --- body part ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BodyParts:
    """BodyPartExamined defined terms → SNOMED CT (PS3.16 Annex L)."""

    system: str
    terms: dict[str, tuple[str, str]]  # compacted term → (code, display)

    def coding(self, term: str | None) -> dict[str, Any] | None:
        """The ``series.bodySite`` Coding; an unknown term keeps its text as display."""
        if not term or not term.strip():
            return None
        found = self.terms.get(_compact(term))
        if found is None:
            return {"display": term.strip()}
        return codes.coding(self.system, found[0], found[1])


def parse_body_parts(doc: Any, source: str = BODY_PART_FILE) -> BodyParts:
    if not isinstance(doc, dict) or not isinstance(doc.get("terms"), dict):
        raise ValueError(f"{source}: an object with 'terms' is required")
    system = doc.get("system", codes.SNOMED)
    terms: dict[str, tuple[str, str]] = {}
    for term, spec in doc["terms"].items():
        if not isinstance(spec, dict) or not str(spec.get("code", "")).isdigit():
            raise ValueError(f"{source}: terms.{term}: a numeric SNOMED 'code' is required")
        terms[_compact(term)] = (str(spec["code"]), str(spec.get("display") or term))
    return BodyParts(str(system), terms)


# --- SR measures ---------------------------------------------------------------------------

CodeKey = tuple[str, str]  # (normalised scheme designator, code value)


def code_key(scheme: str | None, code: str | None) -> CodeKey:
    scheme = (scheme or "").strip().upper()
    return ("SCT" if scheme in ("SRT", "SNM3") else scheme, (code or "").strip())


def _code_keys(raw: Any, where: str) -> frozenset[CodeKey]:
    if not isinstance(raw, list):
        raise ValueError(f"{where}: a list of 'SCHEME|code' strings is required")
    out = set()
    for item in raw:
        scheme, sep, code = str(item).partition("|")
        if not sep or not scheme or not code:
            raise ValueError(f"{where}: {item!r} is not 'SCHEME|code'")
        out.add(code_key(scheme, code))
    return frozenset(out)


def _labels(raw: Any, where: str) -> frozenset[str]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
        raise ValueError(f"{where}: a list of non-empty strings is required")
    return frozenset(normalise(x) for x in raw)


@dataclass(frozen=True)
class Vocabulary:
    """Codes and labels that name one thing (a modifier, a timepoint)."""

    name: str
    codes: frozenset[CodeKey]
    labels: frozenset[str]


@dataclass(frozen=True)
class MeasureRule:
    measure: str
    modifier: str | None
    concepts: frozenset[CodeKey]
    labels: frozenset[str]


@dataclass(frozen=True)
class SrMeasures:
    modifiers: tuple[Vocabulary, ...]
    rules: tuple[MeasureRule, ...]
    units: dict[str, dict[str, float]]  # measure unit → {SR unit: factor to it}
    timepoints: tuple[Vocabulary, ...]

    def modifier_of_code(self, key: CodeKey) -> str | None:
        return next((m.name for m in self.modifiers if key in m.codes), None)

    def split_modifier(self, meaning: str) -> tuple[str | None, str]:
        """(modifier named by words of ``meaning``, the rest of the normalised meaning)."""
        words = normalise(meaning).split()
        for vocab in self.modifiers:
            for label in sorted(vocab.labels, key=len, reverse=True):
                parts = label.split()
                for i in range(len(words) - len(parts) + 1):
                    if words[i : i + len(parts)] == parts:
                        rest = words[:i] + words[i + len(parts) :]
                        return vocab.name, " ".join(rest)
        return None, " ".join(words)

    def timepoint(self, keys: list[CodeKey], texts: list[str]) -> str | None:
        """The protocol timepoint named by TID 1502 codes or texts; texts win over codes
        (a 'Posttreatment' type is shared by three timepoints, its text is not)."""
        for text in texts:
            label = normalise(text)
            for vocab in self.timepoints:
                if label == vocab.name or label in vocab.labels:
                    return vocab.name
        for key in keys:
            for vocab in self.timepoints:
                if key in vocab.codes:
                    return vocab.name
        return None


def parse_sr_measures(doc: Any, source: str = SR_MEASURES_FILE) -> SrMeasures:
    if not isinstance(doc, dict):
        raise ValueError(f"{source}: a JSON object is required")
    raw_mods = doc.get("modifiers")
    if not isinstance(raw_mods, dict):
        raise ValueError(f"{source}: 'modifiers' must be an object")
    modifiers = tuple(
        Vocabulary(
            name,
            _code_keys(spec.get("codes", []), f"{source}: modifiers.{name}.codes"),
            _labels(spec.get("labels", []), f"{source}: modifiers.{name}.labels"),
        )
        for name, spec in raw_mods.items()
    )
    units_raw = doc.get("units")
    if not isinstance(units_raw, dict):
        raise ValueError(f"{source}: 'units' must be an object")
    units: dict[str, dict[str, float]] = {}
    for target, factors in units_raw.items():
        if not isinstance(factors, dict) or not all(
            isinstance(v, int | float) and v > 0 for v in factors.values()
        ):
            raise ValueError(f"{source}: units.{target}: positive factors required")
        units[target] = {str(k): float(v) for k, v in factors.items()}
    rules = []
    for i, spec in enumerate(doc.get("measures") or []):
        where = f"{source}: measures[{i}]"
        measure = spec.get("measure") if isinstance(spec, dict) else None
        if measure not in codes.MEASURES:
            raise ValueError(f"{where}: unknown measure {measure!r}")
        if codes.MEASURES[measure].unit not in units:
            raise ValueError(f"{where}: no 'units' entry for {codes.MEASURES[measure].unit!r}")
        modifier = spec.get("modifier")
        if modifier is not None and modifier not in raw_mods:
            raise ValueError(f"{where}: unknown modifier {modifier!r}")
        rules.append(
            MeasureRule(
                measure,
                modifier,
                _code_keys(spec.get("concepts", []), f"{where}.concepts"),
                _labels(spec.get("labels", []), f"{where}.labels"),
            )
        )
    if not rules:
        raise ValueError(f"{source}: 'measures' must list at least one rule")
    raw_tps = doc.get("timepoints") or {}
    if not isinstance(raw_tps, dict) or not set(raw_tps) <= set(codes.TIMEPOINTS):
        raise ValueError(f"{source}: timepoints must be among {list(codes.TIMEPOINTS)}")
    timepoints = tuple(
        Vocabulary(
            name,
            _code_keys(spec.get("codes", []), f"{source}: timepoints.{name}.codes"),
            _labels(spec.get("labels", []), f"{source}: timepoints.{name}.labels"),
        )
        for name, spec in raw_tps.items()
    )
    return SrMeasures(modifiers, tuple(rules), units, timepoints)


@dataclass(frozen=True)
class DicomMappings:
    body_parts: BodyParts
    sr_measures: SrMeasures


def _read(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


@lru_cache(maxsize=8)
def load(mappings_dir: Path | None = None) -> DicomMappings:
    """Both tables from ``mappings_dir`` (the repository's ``mappings/`` by default)."""
    folder = mappings_dir or default_mappings_dir()
    return DicomMappings(
        parse_body_parts(_read(folder / BODY_PART_FILE), str(folder / BODY_PART_FILE)),
        parse_sr_measures(_read(folder / SR_MEASURES_FILE), str(folder / SR_MEASURES_FILE)),
    )
