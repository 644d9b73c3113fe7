"""Study table import (services, HTTP ``$import``, CLI) on SQLite and PostgreSQL.

Bad rows are reported with line and column and the good ones kept; re-importing the same
file writes nothing; a corrected file writes new versions of exactly what changed.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask

from kyphofhir.cli import main
from kyphofhir.services.context import Services
from kyphofhir.services.study_import import ImportReport, import_table
from kyphofhir.study import builders, codes

STUDY = "import-test"
COLUMNS = [c["name"] for c in json.loads(Path("mappings/study-table.json").read_text())["columns"]]
TP = codes.CS_TIMEPOINT


def subject(sid: str, arm: str = "bkp", **kw: Any) -> dict[str, Any]:
    return {
        "record": "subject",
        "subject_id": sid,
        "arm": arm,
        "sex": "female",
        "birth_date": "1945-02-03",
        "enrolled": "2008-01-02",
        "index_date": "2008-01-10",
        "myeloma_diagnosed": "2007-05-01",
        **kw,
    }


def visit(sid: str, timepoint: str, when: str, **kw: Any) -> dict[str, Any]:
    return {"record": "visit", "subject_id": sid, "timepoint": timepoint, "date": when, **kw}


def vertebra(sid: str, level: str, **kw: Any) -> dict[str, Any]:
    return {"record": "vertebra", "subject_id": sid, "level": level, **kw}


ITEMS = {f"odi_{n}": v for n, v in enumerate([3, 2, 4, 3, 2, 3, 2, None, 3, 2], start=1)}


def good_rows() -> list[dict[str, Any]]:
    return [
        subject("S1"),
        vertebra("S1", "T12", treated=True, cpt="22513"),
        vertebra("S1", "L1", treated=True),
        visit("S1", "baseline", "2008-01-09", vas=80, **ITEMS),
        vertebra(
            "S1",
            "T12",
            treated=True,
            timepoint="baseline",
            date="2008-01-09",
            vbh_anterior=14.5,
            vbh_middle=15,
            vbh_posterior=24.8,
            kyphosis_angle=14.2,
        ),
        visit("S1", "", "2008-07-08", vas=3.1, vas_unit="cm", odi=22),  # day 180: month-6
        vertebra("S1", "T12", date="2008-07-08", vbh_anterior=19.1, kyphosis_angle=9.5),
        subject("C1", arm="conservative", sex="male", index_date="2008-01-02"),
        vertebra("C1", "L2", treated=False),
        visit("C1", "month-3", "2008-04-01", vas=55, odi=40),
    ]


def to_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("true" if v is True else "false" if v is False else v) for k, v in row.items()}
        )
    return out.getvalue().encode()


def to_ndjson(rows: list[dict[str, Any]]) -> bytes:
    return "".join(
        json.dumps({k: v for k, v in r.items() if v not in ("", None)}) + "\n" for r in rows
    ).encode()


def run(app: Flask, data: bytes, fmt: str = "csv", **kw: Any) -> ImportReport:
    return import_table(app.extensions["kyphofhir"], io.BytesIO(data), fmt, study=STUDY, **kw)


def read(app: Flask, rtype: str, key: str) -> dict[str, Any]:
    svc: Services = app.extensions["kyphofhir"]
    rid = key if rtype == "ResearchStudy" else builders.resource_id(rtype, key)
    stored = svc.run(False, lambda uow: uow.get(rtype, rid))
    assert stored is not None, f"{rtype} {key} missing"
    return stored.json()


def history_size(app: Flask) -> int:
    client = app.test_client()
    return int(client.get("/fhir/_history?_summary=count").get_json()["total"])


def by_line(report: ImportReport) -> dict[int, tuple[str, ...]]:
    out = {}
    for issue in report.issues:
        if issue.severity == "error":
            out[int(issue.expression[0].split()[1])] = issue.expression[1:]
    return out


# --------------------------------------------------------------------------- service level


def test_good_table_builds_the_study_resources(app: Flask) -> None:
    report = run(app, to_csv(good_rows()))
    assert report.issues == [] and report.ok, report.issues
    assert (report.rows_read, report.rows_imported) == (10, 10)
    assert report.created["Patient"] == 2 and report.created["ResearchSubject"] == 2
    assert report.created["Condition"] == 2 + 3  # two myelomas, three fractures
    assert report.created["Procedure"] == 2
    assert report.created["Encounter"] == 3
    assert report.created["QuestionnaireResponse"] == 1
    s = STUDY
    assert read(app, "ResearchStudy", s)["arm"][0]["name"] == "bkp"  # id is the study id
    vas6 = read(app, "Observation", builders.observation_key(s, "S1", "month-6", "vas"))
    assert vas6["valueQuantity"]["value"] == 31  # 3.1 cm
    enc = read(app, "Encounter", builders.visit_key(s, "S1", "month-6"))
    assert enc["type"][0]["coding"][0]["code"] == "month-6"  # assigned from the date
    proc = read(app, "Procedure", builders.procedure_key(s, "S1", "T12"))
    assert {"system": codes.CPT, "code": "22513"} in proc["code"]["coding"]
    assert proc["performedDateTime"] == "2008-01-10"
    # the server scored the ODI items (9 answered, 24 points -> 53.3 %)
    qr_id = builders.resource_id(
        "QuestionnaireResponse", builders.observation_key(s, "S1", "baseline", "odi")
    )
    odi = app.extensions["kyphofhir"].run(False, lambda uow: uow.get("Observation", f"odi-{qr_id}"))
    assert odi is not None
    assert odi.json()["valueQuantity"]["value"] == pytest.approx(24 / 45 * 100)


def test_bad_rows_are_reported_with_line_and_column_and_good_rows_kept(app: Flask) -> None:
    rows = [
        subject("S1"),  # line 2
        vertebra("S1", "T13", treated=True),  # 3: unknown level
        visit("S1", "baseline", "2008-01-09", vas=140),  # 4: VAS out of range
        visit("S1", "month-3", "1930-04-01", vas=20),  # 5: before birth
        visit("S9", "baseline", "2008-01-09", vas=20),  # 6: subject not enrolled
        visit("S1", "month-3", "2008-13-01", vas=20),  # 7: bad date
        visit("S1", "month-12", "2008-04-01", vas=20),  # 8: unknown timepoint
        visit("S1", "", "2008-03-01", vas=20),  # 9: day 51, in no window
        visit("S1", "post-intervention", "2008-01-12", vas=30),  # 10: good
        visit("S1", "post-intervention", "2008-01-13", vas=31),  # 11: duplicate visit
        subject("S2", birth_date="2009-01-01"),  # 12: enrolled before birth
        vertebra("S1", "L3", treated=True, vbh_anterior=0, date="2008-01-09"),  # 13: height 0
        subject("C1", arm="conservative"),  # 14: good
        vertebra("C1", "L1", treated=True),  # 15: treated in the conservative arm
        visit("S1", "month-3", "2008-04-10", odi_1=6),  # 16: ODI item out of range
        visit("C1", "month-6", "2008-07-08", odi=33, **ITEMS),  # 17: total != items
    ]
    report = run(app, to_csv(rows))
    assert by_line(report) == {
        3: ("level",),
        4: ("vas",),
        5: ("date",),
        6: ("subject_id",),
        7: ("date",),
        8: ("timepoint",),
        9: ("date",),
        11: ("timepoint",),
        12: ("enrolled",),
        13: ("vbh_anterior",),
        15: ("treated",),
        16: ("odi_1",),
        17: ("odi",),
    }
    assert (report.rows_read, report.rows_imported, report.rows_failed) == (16, 3, 13)
    assert not report.ok
    texts = {int(i.expression[0].split()[1]): i.diagnostics for i in report.issues}
    assert texts[3].startswith("line 3: level: unknown value 'T13'")
    assert "140" in texts[4] and "0..100 mm" in texts[4]
    assert "S9" in texts[6] and "not enrolled" in texts[6]
    outcome = report.outcome()
    assert outcome["issue"][0]["severity"] == "information"
    assert outcome["issue"][1]["expression"] == ["line 3", "level"]
    # the good rows are in
    read(app, "Patient", builders.subject_key(STUDY, "S1"))
    read(app, "Observation", builders.observation_key(STUDY, "S1", "post-intervention", "vas"))


def test_reimport_changes_nothing_and_corrected_file_makes_new_versions(app: Flask) -> None:
    rows = good_rows()
    first = run(app, to_csv(rows))
    versions = history_size(app)
    again = run(app, to_csv(rows))
    assert sum(again.created.values()) == sum(again.updated.values()) == 0
    assert sum(again.unchanged.values()) == sum(first.created.values())
    assert history_size(app) == versions, "re-import must not write versions"

    rows[3] = {**rows[3], "vas": 75, "odi_2": 5}  # the baseline visit corrected
    rows[4] = {**rows[4], "kyphosis_angle": 13.0}
    fixed = run(app, to_csv(rows))
    assert fixed.ok
    assert dict(fixed.updated) == {"Observation": 2, "QuestionnaireResponse": 1}
    assert sum(fixed.created.values()) == 0
    vas = read(app, "Observation", builders.observation_key(STUDY, "S1", "baseline", "vas"))
    assert (vas["valueQuantity"]["value"], vas["meta"]["versionId"]) == (75, "2")
    unchanged = read(app, "Observation", builders.observation_key(STUDY, "S1", "month-6", "vas"))
    assert unchanged["meta"]["versionId"] == "1"
    # the server re-scored the corrected ODI answers: + QR, its Observation, VAS, angle
    assert history_size(app) == versions + 4


def test_ndjson_gives_the_same_resources_as_csv(app: Flask) -> None:
    rows = good_rows()
    run(app, to_csv(rows))
    report = run(app, to_ndjson(rows), "ndjson")
    assert report.ok, report.issues
    assert sum(report.created.values()) == sum(report.updated.values()) == 0


def test_ndjson_bad_lines_keep_their_numbers(app: Flask) -> None:
    data = (
        to_ndjson(good_rows()[:2])
        + b"\n{not json\n"
        + b'["a"]\n'
        + to_ndjson([visit("S1", "baseline", "2008-01-09", vas="high", extra=1)])
    )
    report = run(app, data, "ndjson")
    # line 3 is blank (skipped), 4 is not JSON, 5 not an object, 6 has an unknown key
    assert set(by_line(report)) == {4, 5, 6}
    assert report.rows_imported == 2


def test_later_file_can_refer_to_subjects_of_an_earlier_import(app: Flask) -> None:
    run(app, to_csv(good_rows()[:1]))
    report = run(app, to_csv([visit("S1", "", "2008-04-10", vas=12)]))  # day 91: month-3
    assert report.ok, report.issues
    enc = read(app, "Encounter", builders.visit_key(STUDY, "S1", "month-3"))
    assert enc["type"][0]["coding"][0]["code"] == "month-3"


def test_given_timepoint_outside_its_window_is_a_warning(app: Flask) -> None:
    report = run(app, to_csv([subject("S1"), visit("S1", "month-6", "2008-03-01", vas=5)]))
    assert report.ok
    (issue,) = report.issues
    assert issue.severity == "warning" and issue.expression == ("line 3", "date")


def test_a_write_the_server_rejects_loses_only_its_row(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch is redone row by row: the rows around the rejected one are kept."""
    original = builders.vas_observation

    def broken(*args: Any, **kw: Any) -> dict[str, Any]:
        obs = original(*args, **kw)
        if kw["value_mm"] == 13:
            obs["valueQuantity"]["code"] = "cm"  # breaks the vas-observation profile
        return obs

    monkeypatch.setattr(builders, "vas_observation", broken)
    rows = [
        subject("S1"),
        visit("S1", "baseline", "2008-01-09", vas=12),
        visit("S1", "post-intervention", "2008-01-12", vas=13),
        visit("S1", "month-3", "2008-04-10", vas=14),
    ]
    report = run(app, to_csv(rows))
    assert set(by_line(report)) == {4}
    assert report.rows_imported == 3
    assert "vas-observation" in report.issues[0].diagnostics  # the profile's reason
    read(app, "Observation", builders.observation_key(STUDY, "S1", "month-3", "vas"))
    svc = app.extensions["kyphofhir"]
    enc_id = builders.resource_id("Encounter", builders.visit_key(STUDY, "S1", "post-intervention"))
    assert svc.run(False, lambda uow: uow.get("Encounter", enc_id)) is None  # rolled back


def test_unknown_csv_column_rejects_the_file(app: Flask) -> None:
    from kyphofhir.errors import Invalid

    with pytest.raises(Invalid):
        run(app, b"record,subject_id,vass\nsubject,S1,3\n")


def test_imported_data_answers_the_researchers_searches(app: Flask) -> None:
    run(app, to_csv(good_rows()))
    client = app.test_client()
    r = client.get(
        "/fhir/Observation",
        query_string={
            "code": f"{codes.LOINC}|38214-3",
            "encounter.type": f"{TP}|month-6",
            "_summary": "count",
        },
    )
    assert r.get_json()["total"] == 1
    r = client.get(
        "/fhir/Condition",
        query_string={"code": f"{codes.SNOMED}|268029009", "body-site": f"{codes.SNOMED}|66794005"},
    )
    assert len(r.get_json()["entry"]) == 1  # the fracture at L1


# --------------------------------------------------------------------------- HTTP $import


def test_http_import_csv_and_ndjson(api: Any) -> None:
    study = builders.research_study(STUDY)
    assert api.put(f"/ResearchStudy/{STUDY}", json=study).status_code == 201
    rows = [*good_rows(), visit("S1", "month-3", "2008-04-10", vas=140)]
    r = api.post(
        f"/ResearchStudy/{STUDY}/$import", data=to_csv(rows), headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["resourceType"] == "Parameters"
    params = {p["name"]: p for p in body["parameter"]}
    assert params["rowsRead"]["valueInteger"] == 11
    assert params["rowsImported"]["valueInteger"] == 10
    assert params["rowsFailed"]["valueInteger"] == 1
    outcome = params["outcome"]["resource"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][1]["expression"] == ["line 12", "vas"]
    r = api.post(
        f"/ResearchStudy/{STUDY}/$import",
        data=to_ndjson(good_rows()),
        headers={"Content-Type": "application/fhir+ndjson"},
    )
    params = {p["name"]: p for p in r.json()["parameter"]}
    assert (params["created"]["valueInteger"], params["updated"]["valueInteger"]) == (0, 0)


def test_http_import_errors(api: Any) -> None:
    r = api.post(
        "/ResearchStudy/nope/$import", data=b"record\n", headers={"Content-Type": "text/csv"}
    )
    assert r.status_code == 404
    api.put(f"/ResearchStudy/{STUDY}", json=builders.research_study(STUDY))
    r = api.post(
        f"/ResearchStudy/{STUDY}/$import", data=b"{}", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 415
    r = api.post(
        f"/ResearchStudy/{STUDY}/$import",
        data=b"record,subject_id,colour\n",
        headers={"Content-Type": "text/csv"},
    )
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["line 1"]


def test_http_import_has_its_own_size_limit(app_config: dict[str, Any]) -> None:
    """Tables are streamed: max_body_bytes (FHIR JSON bodies) does not limit them."""
    from kyphofhir.app import create_app

    app = create_app(test_config={**app_config, "max_body_bytes": 100, "max_import_bytes": 2000})
    try:
        from kyphofhir.services import crud

        svc = app.extensions["kyphofhir"]
        study = builders.research_study(STUDY)  # larger than max_body_bytes
        svc.run(True, lambda uow: crud.update(svc, uow, "ResearchStudy", STUDY, study))
        client = app.test_client()
        small, big = to_csv(good_rows()[:2]), to_csv(good_rows() * 10)
        assert 100 < len(small) < 2000 < len(big)
        url = f"/fhir/ResearchStudy/{STUDY}/$import"
        assert client.post(url, data=small, content_type="text/csv").status_code == 200
        assert client.post(url, data=big, content_type="text/csv").status_code == 413
    finally:
        app.extensions["kyphofhir"].store.dispose()


# --------------------------------------------------------------------------- CLI


def test_cli_import_reports_rows_and_exit_status(db_url: str, tmp_path: Path) -> None:
    good = tmp_path / "table.csv"
    good.write_bytes(to_csv(good_rows()))
    bad = tmp_path / "table.ndjson"
    bad.write_bytes(to_ndjson([*good_rows(), vertebra("S1", "C7")]))
    runner = CliRunner()
    args = ["--db", db_url, "--data-dir", str(tmp_path / "d"), "--study", STUDY]
    first = runner.invoke(main, ["import", str(good), *args])
    assert first.exit_code == 0, first.output
    assert "10 rows read, 10 imported, 0 failed" in first.output
    second = runner.invoke(main, ["import", str(bad), *args])
    assert second.exit_code == 1
    assert "error: line 11: level: unknown value 'C7'" in second.output
    assert "0 created, 0 updated" in second.output
    as_json = runner.invoke(main, ["import", str(good), "--json", *args])
    params = {p["name"]: p for p in json.loads(as_json.stdout)["parameter"]}
    assert params["unchanged"]["valueInteger"] > 0
