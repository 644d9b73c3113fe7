"""WADO-RS under /dicomweb: retrieval byte-equal to the stored files, metadata, Accept,
errors; over real HTTP and the Flask test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import email.parser
import email.policy
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from pydicom import Dataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from imaging_samples import Height, PatientInfo, dx_image, measurement_sr, send
from kyphofhir.services import imaging
from kyphofhir.services.context import Services

MULTIPART = 'multipart/related; type="application/dicom"'


@pytest.fixture
def stored(app: Flask) -> dict[str, Any]:
    """A study of two DX series (one instance in implicit VR) and an SR, in the store."""
    svc: Services = app.extensions["kyphofhir"]
    uid = str(generate_uid())
    series = [str(generate_uid()), str(generate_uid())]
    who = PatientInfo(patient_id="WADO-1")
    first = dx_image(who, uid, series_uid=series[0], instance_number=1)
    second = dx_image(who, uid, series_uid=series[0], instance_number=2)
    second.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    third = dx_image(who, uid, series_uid=series[1], series_number=2)
    report = measurement_sr([first], heights=[Height("T12", "anterior", 19.0)])
    send(svc, first, second, third, report)
    files = imaging.study_files(svc, uid)
    return {
        "uid": uid,
        "series": series,
        "first": first,
        "files": {p.read_bytes() for p in files},
        "by_sop": {p.name.removesuffix(".dcm"): p.read_bytes() for p in files},
    }


def root(api: Any) -> str:
    return str(api.base).removesuffix("/fhir") + "/dicomweb"


def parts(reply: Any) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response."""
    content_type = reply.headers["Content-Type"]
    assert content_type.startswith(MULTIPART), content_type
    boundary = re.search(r"boundary=([^;]+)", content_type)
    assert boundary is not None
    raw = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + reply.content
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.is_multipart()
    out = []
    for part in message.iter_parts():
        body = part.get_payload(decode=True)
        assert isinstance(body, bytes)
        assert int(part["Content-Length"]) == len(body)
        out.append((str(part["Content-Type"]), body))
    return out


def test_study_series_and_instance_are_the_stored_bytes(api: Any, stored: dict[str, Any]) -> None:
    base = f"{root(api)}/studies/{stored['uid']}"
    whole = api.get(base)
    assert whole.status_code == 200
    got = parts(whole)
    assert len(got) == 4
    assert {body for _, body in got} == stored["files"]  # byte for byte as received
    assert all(ct.startswith("application/dicom") for ct, _ in got)
    implicit = r'transfer-syntax="?1\.2\.840\.10008\.1\.2"?$'
    assert sum(bool(re.search(implicit, ct)) for ct, _ in got) == 1  # as it was sent

    series = api.get(f"{base}/series/{stored['series'][0]}", headers={"Accept": MULTIPART})
    assert len(parts(series)) == 2

    sop = str(stored["first"].SOPInstanceUID)
    one = api.get(f"{base}/series/{stored['series'][0]}/instances/{sop}")
    ((_, body),) = parts(one)
    assert body == stored["by_sop"][sop]


ACCEPT_CASES = [
    (MULTIPART, "study", 200),
    (MULTIPART + "; transfer-syntax=*", "study", 200),
    ("multipart/related; type=application/dicom; q=0.5, image/jpeg", "study", 200),
    ("*/*", "study", 200),
    (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
        "study",
        406,
    ),
    (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
        "instance",
        200,
    ),
    ('multipart/related; type="application/octet-stream"', "study", 406),
    ("image/jpeg", "study", 406),
    ("application/dicom+json", "study", 406),
    ("application/dicom", "study", 406),
    ("application/dicom", "instance", 200),
]


ERROR_CASES = [
    ("/studies/1.2.3.4.5.6.7", 404),
    ("/studies/{uid}/series/1.2.3.4", 404),
    ("/studies/{uid}/series/{series}/instances/1.2.3", 404),
    ("/studies/1.2.3.4.5.6.7/metadata", 404),
    ("/studies/not-a-uid", 400),
    ("/studies/{uid}/series/1..2", 400),
    ("/studies/" + "1." * 40 + "1", 400),
    ("/studies/{uid}/series/{series}/instances/x/metadata", 400),
]


def test_accept_negotiation_and_errors(http: Any, stored: dict[str, Any]) -> None:
    sop = str(stored["first"].SOPInstanceUID)
    for accept, level, status in ACCEPT_CASES:
        url = f"{root(http)}/studies/{stored['uid']}"
        if level == "instance":
            url += f"/series/{stored['series'][0]}/instances/{sop}"
        reply = http.get(url, headers={"Accept": accept})
        assert reply.status_code == status, (accept, level, reply.content[:300])
        if status == 406:
            assert reply.json()["issue"][0]["code"] == "not-supported"
        elif accept == "application/dicom":
            assert reply.headers["Content-Type"] == "application/dicom"
            assert reply.content == stored["by_sop"][sop]
    for path, status in ERROR_CASES:
        url = root(http) + path.format(uid=stored["uid"], series=stored["series"][0])
        reply = http.get(url)
        assert reply.status_code == status, path
        body = reply.json()
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"] == ("not-found" if status == 404 else "invalid")


def test_metadata_endpoint_and_store_layout(http: Any, app: Flask, stored: dict[str, Any]) -> None:
    base = f"{root(http)}/studies/{stored['uid']}"
    reply = http.get(f"{base}/metadata", headers={"Accept": "application/dicom+json"})
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "application/dicom+json"
    models = reply.json()
    assert len(models) == 4
    for model in models:
        assert model["0020000D"] == {"vr": "UI", "Value": [stored["uid"]]}
        assert "7FE00010" not in model  # no pixel data
    sops = {Dataset.from_json(m).SOPInstanceUID for m in models}
    assert sops == set(stored["by_sop"])
    sr_model = next(m for m in models if m["00080060"]["Value"] == ["SR"])
    assert sr_model["0040A730"]["vr"] == "SQ"  # the content tree is metadata, kept

    sop = str(stored["first"].SOPInstanceUID)
    one = http.get(f"{base}/series/{stored['series'][0]}/instances/{sop}/metadata").json()
    assert len(one) == 1 and one[0]["00080018"]["Value"] == [sop]
    series = http.get(f"{base}/series/{stored['series'][1]}/metadata").json()
    assert len(series) == 1
    xml = http.get(f"{base}/metadata", headers={"Accept": "application/dicom+xml"})
    assert xml.status_code == 406
    (study,) = [
        e["resource"]
        for e in http.get(f"/ImagingStudy?identifier=urn:dicom:uid|urn:oid:{stored['uid']}").json()[
            "entry"
        ]
    ]
    endpoint = http.get(f"/{study['endpoint'][0]['reference']}").json()
    assert endpoint["address"].endswith("/dicomweb")
    # what the ImagingStudy lists is what WADO-RS serves
    listed = {i["uid"] for s in study["series"] for i in s["instance"]}
    assert listed == set(stored["by_sop"])

    svc: Services = app.extensions["kyphofhir"]
    path = imaging.instance_file(svc, stored["uid"], stored["series"][0], sop)
    assert isinstance(path, Path) and path.read_bytes() == stored["by_sop"][sop]
