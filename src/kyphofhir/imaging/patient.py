"""The DICOM patient module → the Patient identifier to match, and a new Patient. Pure.

Matching policy (``docs/dicom.md``): the Patient ID (0010,0020) is looked up as
``Patient.identifier`` under a system chosen from the issuer:

1. IssuerOfPatientIDQualifiersSequence > UniversalEntityID of type ISO, URI or UUID gives
   the system itself (``urn:oid:<oid>``, the URI, ``urn:uuid:<uuid>``);
2. else IssuerOfPatientID (0010,0021) listed in the configured issuer table
   (``dicom_issuer_systems``) gives that system;
3. else the configured default system (``dicom_patient_id_system``); an unlisted issuer is
   then kept as ``identifier.assigner.display`` of a Patient created from DICOM.

A Patient created from DICOM carries the ``needs-reconciliation`` tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

from kyphofhir.imaging import values
from kyphofhir.study import codes

JsonObject = dict[str, Any]

GENDERS = {"M": "male", "F": "female", "O": "other"}


@dataclass(frozen=True)
class PatientKey:
    """What a DICOM instance says about its patient's identity."""

    system: str
    value: str
    issuer: str | None  # an issuer name that did not select the system

    @property
    def criteria(self) -> str:
        return f"identifier={self.system}|{self.value}"

    def identifier(self) -> JsonObject:
        out: JsonObject = {"system": self.system, "value": self.value}
        if self.issuer:
            out["assigner"] = {"display": self.issuer}
        return out


def parse_issuer_systems(setting: str) -> dict[str, str]:
    """``ISSUER=system,ISSUER2=system2`` (the ``dicom_issuer_systems`` setting)."""
    out: dict[str, str] = {}
    for part in setting.split(","):
        if not part.strip():
            continue
        issuer, sep, system = part.partition("=")
        if not sep or not issuer.strip() or not system.strip():
            raise ValueError(f"dicom_issuer_systems: {part.strip()!r} is not ISSUER=system")
        out[issuer.strip()] = system.strip()
    return out


def patient_key(
    ds: Dataset, *, default_system: str, issuer_systems: Mapping[str, str]
) -> PatientKey | None:
    """The identifier to look the patient up by; None when the Patient ID is empty."""
    value = values.text(ds, "PatientID")
    if not value:
        return None
    qualifiers = ds.get("IssuerOfPatientIDQualifiersSequence")
    if qualifiers:
        item = qualifiers[0]
        universal = values.text(item, "UniversalEntityID")
        kind = (values.text(item, "UniversalEntityIDType") or "").upper()
        if universal and kind == "ISO" and values.is_uid(universal):
            return PatientKey(f"urn:oid:{universal}", value, None)
        if universal and kind in ("URI", "URL") and ":" in universal:
            return PatientKey(universal, value, None)
        if universal and kind == "UUID":
            return PatientKey(f"urn:uuid:{universal.lower()}", value, None)
    issuer = values.text(ds, "IssuerOfPatientID")
    if issuer and issuer in issuer_systems:
        return PatientKey(issuer_systems[issuer], value, None)
    return PatientKey(default_system, value, issuer)


def new_patient(ds: Dataset, key: PatientKey | None) -> JsonObject:
    """A Patient from the patient module, tagged ``needs-reconciliation``."""
    out: JsonObject = {
        "resourceType": "Patient",
        "meta": {"tag": [dict(codes.TAG_NEEDS_RECONCILIATION)]},
    }
    if key is not None:
        out["identifier"] = [key.identifier()]
    name = values.person_name(ds.get("PatientName"))
    if name:
        out["name"] = [name]
    sex = (values.text(ds, "PatientSex") or "").upper()
    out["gender"] = GENDERS.get(sex, "unknown")
    born = values.fhir_date(values.text(ds, "PatientBirthDate"))
    if born:
        out["birthDate"] = born
    return out


def is_tagged(resource: JsonObject, tag: JsonObject) -> bool:
    return any(
        t.get("system") == tag["system"] and t.get("code") == tag["code"]
        for t in (resource.get("meta") or {}).get("tag") or []
    )
