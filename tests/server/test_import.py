"""Certificate-office import: office CSV/XLSX with Chinese headers and photos, JSON, rejection."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select

from server import gallery
from server.importer import ImportSource, PlanNotApplicable, RowAction, apply_plan, plan_import
from server.tables import AuditEntry, Certificate, Operator, OperatorSite, Template
from tests.models.faces import astronaut
from tests.server.conftest import World
from tests.server.helpers import csv_bytes, id_number, office_rows, xlsx_bytes, zip_bytes


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return buf.tobytes()


def _photos(n: int) -> dict[str, bytes]:
    face = astronaut()
    # A tight, ID-photo-like crop of the astronaut, and the full picture.
    crops = [face[30:240, 120:330], face]
    return {f"p{i}.jpg": _jpeg(crops[i % 2]) for i in range(n)}


def _upload(world: World, name: str, data: bytes, photos: bytes | None = None, **params: object):
    files = {"file": (name, data)}
    if photos is not None:
        files["photos"] = ("photos.zip", photos)
    return world.call("cert_office", "POST", "/api/v1/sync/operators", files=files, params=params)


def _count(world: World, table: type) -> int:
    with world.app.state.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_office_csv_with_photo_zip_imports(world: World) -> None:
    rows = office_rows(4, photo=True)
    response = _upload(world, "导出.csv", csv_bytes(rows), zip_bytes(_photos(4)))
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["applied"] is True
    assert sorted(report["added"]) == [r[2] for r in rows]
    assert report["templates_added"] == 4
    assert _count(world, Template) == 4
    with world.app.state.sessions() as session:
        cert = session.get(Certificate, rows[0][2])
        assert cert is not None
        assert (cert.category, cert.scope, cert.status) == ("Q2", "桥式起重机", "valid")
        template = session.scalars(select(Template)).first()
        assert template is not None
        assert template.contract_id == world.app.state.faces.contract.contract_id
        assert len(template.embedding) == template.dim
        assert 0.0 < template.quality <= 1.0
    operators = world.call("supervisor", "GET", "/api/v1/operators").json()
    assert {o["id_number_masked"] for o in operators} == {
        id_number(i)[:4] + "*" * 10 + id_number(i)[-4:] for i in range(4)
    }
    assert all(id_number(i) not in json.dumps(operators) for i in range(4))


def test_office_xlsx_with_date_cells_imports(world: World) -> None:
    rows = office_rows(2, photo=True)
    response = _upload(world, "导出.xlsx", xlsx_bytes(rows), zip_bytes(_photos(2)))
    assert response.status_code == 200, response.text
    assert len(response.json()["added"]) == 2
    with world.app.state.sessions() as session:
        cert = session.get(Certificate, rows[1][2])
        assert cert is not None and cert.category == "N1"
        assert str(cert.expiry_date) == "2028-02-29"


def test_json_import(world: World) -> None:
    records = [
        {
            "name": "张三",
            "id_number": id_number(7),
            "certificate_no": "J-1",
            "category": "N1",
            "issue_date": "2023-01-01",
            "expiry_date": "2027-01-01",
            "authority": "青岛市市场监督管理局",
            "site_id": "site-1",
        }
    ]
    response = _upload(world, "office.json", json.dumps(records).encode())
    assert response.status_code == 200, response.text
    assert response.json()["added"] == ["J-1"]


def test_one_bad_id_number_rejects_the_whole_file_and_names_the_row(world: World) -> None:
    rows = office_rows(5)
    good = rows[3][1]
    rows[3][1] = good[:-1] + ("0" if good[-1] != "0" else "1")  # wrong check digit
    response = _upload(world, "导出.csv", csv_bytes(rows))
    assert response.status_code == 422
    report = response.json()
    assert report["applied"] is False
    assert [(e["row"], e["field"]) for e in report["errors"]] == [(5, "身份证号")]
    assert "check digit" in report["errors"][0]["message"]
    assert good not in response.text  # even the error message masks the ID number
    assert _count(world, Certificate) == 0
    assert _count(world, Operator) == 0
    audit_before = _count(world, AuditEntry)
    partial = _upload(world, "导出.csv", csv_bytes(rows), partial="true")
    assert partial.status_code == 200
    assert partial.json()["rejected_rows"] == [5]
    assert _count(world, Certificate) == 4
    assert _count(world, AuditEntry) == audit_before + 1


def test_reimporting_the_same_file_changes_nothing(world: World) -> None:
    rows = office_rows(4, photo=True)
    data, photos = csv_bytes(rows), zip_bytes(_photos(4))
    assert _upload(world, "a.csv", data, photos).status_code == 200
    with world.app.state.sessions() as session:
        before = session.execute(select(Certificate.number, Certificate.updated_at)).all()
    version = world.call("admin", "GET", "/metrics").text
    again = _upload(world, "a.csv", data, photos)
    assert again.status_code == 200
    report = again.json()
    assert (report["added"], report["changed"], report["revoked"]) == ([], [], [])
    assert sorted(report["unchanged"]) == sorted(r[2] for r in rows)
    assert report["templates_added"] == 0
    assert _count(world, Template) == 4
    assert _count(world, Operator) == 4
    with world.app.state.sessions() as session:
        assert session.execute(select(Certificate.number, Certificate.updated_at)).all() == before
    assert version  # metrics still answer


def test_dry_run_reports_the_diff_and_changes_nothing(world: World) -> None:
    rows = office_rows(3)
    assert _upload(world, "a.csv", csv_bytes(rows)).status_code == 200
    rows[0][5] = "2029-01-01"  # changed expiry
    header = [*csv_bytes([])[3:].decode().strip().split(","), "证书状态"]
    rows = [[*r, "有效"] for r in rows]
    rows[1][-1] = "撤销"  # revoked by the office
    rows.append([*office_rows(4)[3], "有效"])  # new
    response = _upload(world, "b.csv", csv_bytes(rows, header), dry_run="true")
    report = response.json()
    assert response.status_code == 200
    assert report["dry_run"] is True and report["applied"] is False
    assert report["added"] == [rows[3][2]]
    assert report["changed"] == [rows[0][2]]
    assert report["revoked"] == [rows[1][2]]
    assert report["unchanged"] == [rows[2][2]]
    with world.app.state.sessions() as session:
        assert session.get(Certificate, rows[1][2]).status == "valid"
    assert _count(world, Certificate) == 3


def test_photo_without_a_usable_face_is_reported(world: World) -> None:
    rows = office_rows(2, photo=True)
    blank = cv2.imencode(".png", np.full((240, 180, 3), 128, np.uint8))[1].tobytes()
    photos = {"p0.jpg": _photos(1)["p0.jpg"], "p1.jpg": blank}
    response = _upload(world, "a.csv", csv_bytes(rows), zip_bytes(photos))
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(e["row"], e["field"]) for e in errors] == [(3, "照片")]
    assert "no face" in errors[0]["message"]
    missing = _upload(world, "a.csv", csv_bytes(rows), zip_bytes({"p0.jpg": photos["p0.jpg"]}))
    assert [(e["row"], e["field"]) for e in missing.json()["errors"]] == [(3, "照片")]
    assert "not in the photo ZIP" in missing.json()["errors"][0]["message"]
    assert _count(world, Template) == 0


@pytest.mark.parametrize(
    ("column", "value", "field"),
    [
        (4, "2024-13-01", "发证日期"),
        (5, "2020-01-01", "有效期至"),
        (3, "起重", "作业项目代号"),
        (0, "", "姓名"),
        (8, "nowhere", "工作场所"),
    ],
)
def test_bad_fields_are_named(world: World, column: int, value: str, field: str) -> None:
    rows = office_rows(3)
    rows[1][column] = value
    response = _upload(world, "a.csv", csv_bytes(rows))
    assert response.status_code == 422
    assert [(e["row"], e["field"]) for e in response.json()["errors"]] == [(3, field)]
    assert _count(world, Certificate) == 0


def test_unreadable_file_is_refused(world: World) -> None:
    response = _upload(world, "a.csv", "名字,证件\n张三,1\n".encode())
    assert response.status_code == 422
    assert response.json()["detail"].startswith("import file rejected: a.csv: unknown column(s)")


def test_a_large_file_imports_in_bulk_and_reimports_unchanged(world: World) -> None:
    # Enough rows to take the PostgreSQL COPY path.
    rows = office_rows(300)
    response = _upload(world, "big.csv", csv_bytes(rows))
    assert response.status_code == 200, response.text
    assert len(response.json()["added"]) == 300
    assert _count(world, Operator) == 300
    again = _upload(world, "big.csv", csv_bytes(rows)).json()
    assert len(again["unchanged"]) == 300 and again["added"] == []
    snapshot = world.crane.gallery(0, world.app.state.faces.contract.contract_id)
    assert snapshot.status_code == 200
    assert snapshot.text.count("操作员") == 150


def test_photos_in_a_folder_of_the_zip_are_found(world: World) -> None:
    rows = office_rows(1, photo=True)
    photos = zip_bytes({f"照片/{name}": data for name, data in _photos(1).items()})
    response = _upload(world, "a.csv", csv_bytes(rows), photos)
    assert response.status_code == 200, response.text
    assert response.json()["templates_added"] == 1


def _gallery_version(world: World) -> int:
    with world.app.state.sessions() as session:
        return gallery.current_version(session)


def test_dry_run_counts_equal_what_apply_does(world: World) -> None:
    # A name-only and a site-link-only change were counted by the old diff but not by the old
    # apply; both now come from one plan, and the writes match what it reports.
    rows = office_rows(4)
    assert _upload(world, "a.csv", csv_bytes(rows)).status_code == 200
    with world.app.state.sessions() as session:
        before = dict(session.execute(select(Certificate.number, Certificate.updated_at)).all())
    version = _gallery_version(world)
    rows[0][0] = "改名后"  # name only
    rows[1][8] = "site-2"  # site link only (site-1 stays linked)
    rows[2][5] = "2029-01-01"  # a certificate field
    dry = _upload(world, "b.csv", csv_bytes(rows), dry_run="true").json()
    expected_changed = [rows[0][2], rows[1][2], rows[2][2]]
    assert (dry["added"], dry["changed"], dry["revoked"]) == ([], expected_changed, [])
    assert dry["unchanged"] == [rows[3][2]]
    assert _gallery_version(world) == version
    done = _upload(world, "b.csv", csv_bytes(rows))
    assert done.status_code == 200, done.text
    applied = done.json()
    assert applied["applied"] is True
    for key in ("added", "changed", "revoked", "unchanged", "templates_added", "rows"):
        assert applied[key] == dry[key], key
    # Each changed row's operator got a new gallery version; nothing else did.
    assert _gallery_version(world) == version + 3
    with world.app.state.sessions() as session:
        names = {o.id_number: o.name for o in session.scalars(select(Operator))}
        assert names[id_number(0)] == "改名后"
        op1 = session.scalars(select(Operator).where(Operator.id_number == id_number(1))).one()
        sites = set(
            session.scalars(select(OperatorSite.site_id).where(OperatorSite.operator_id == op1.id))
        )
        assert sites == {"site-1", "site-2"}
        after = dict(session.execute(select(Certificate.number, Certificate.updated_at)).all())
        assert str(session.get(Certificate, rows[2][2]).expiry_date) == "2029-01-01"
    # Name and link changes write the operator and its links, not the certificate row.
    assert [n for n in before if after[n] != before[n]] == [rows[2][2]]
    again = _upload(world, "b.csv", csv_bytes(rows), dry_run="true").json()
    assert (again["changed"], len(again["unchanged"])) == ([], 4)


def test_plan_summary_equals_the_writes_of_apply(world: World) -> None:
    rows = office_rows(3)
    assert _upload(world, "a.csv", csv_bytes(rows)).status_code == 200
    rows[0][0] = "新名字"
    rows[1][8] = "site-2"
    second_cert = [*office_rows(5)[4][:2], "T3799999999", *office_rows(5)[4][3:]]
    rows += [office_rows(5)[4], second_cert]  # one new operator with two certificates
    data = csv_bytes(rows)
    with world.app.state.sessions() as session:
        plan = plan_import(session, "b.csv", data)
        summary = plan.summary()
        assert [r.action for r in plan.rows] == [
            RowAction.UPDATE,
            RowAction.UPDATE,
            RowAction.UNCHANGED,
            RowAction.CREATE,
            RowAction.CREATE,
        ]
        assert [c.field for c in plan.rows[0].changes] == ["name"]
        assert [(c.field, c.old, c.new) for c in plan.rows[1].changes] == [
            ("site_id", None, "site-2")
        ]
        # Serialisable as it is, for a preview page.
        preview = {"summary": dataclasses.asdict(summary), "rows": [r.as_dict() for r in plan.rows]}
        assert json.loads(json.dumps(preview))["summary"]["changed"] == [rows[0][2], rows[1][2]]
        source = ImportSource("b.csv", data)
        result = apply_plan(session, plan, source, actor="test", partial=False)
        session.commit()
    counts = dataclasses.asdict(result)
    counts.pop("gallery_version")
    assert counts == {
        "operators_created": 1,
        "operators_renamed": 1,
        "certificates_created": 2,
        "certificates_updated": 0,
        "links_added": 2,  # site-2 for operator 1; site-1 once for the new operator's two rows
        "templates_added": 0,
    }
    assert counts == {k: getattr(summary, k) for k in counts}
    assert _count(world, Operator) == 4
    assert _count(world, Certificate) == 5


def test_one_photo_on_two_certificates_gives_one_template(world: World) -> None:
    rows = office_rows(1, photo=True)
    rows.append([*rows[0][:2], "T3799999999", *rows[0][3:]])
    data, photos = csv_bytes(rows), zip_bytes(_photos(1))
    dry = _upload(world, "a.csv", data, photos, dry_run="true").json()
    done = _upload(world, "a.csv", data, photos).json()
    assert dry["templates_added"] == done["templates_added"] == 1
    assert _count(world, Template) == 1


def test_a_rejected_plan_is_not_applied(world: World) -> None:
    rows = office_rows(3)
    rows[1][4] = "2024-13-01"
    data = csv_bytes(rows)
    with world.app.state.sessions() as session:
        plan = plan_import(session, "a.csv", data)
        assert plan.rejected_rows == (3,)
        assert [r.row for r in plan.rows] == [2, 4]
        with pytest.raises(PlanNotApplicable):
            apply_plan(session, plan, ImportSource("a.csv", data), actor="test", partial=False)
        session.rollback()
    assert _count(world, Certificate) == 0
