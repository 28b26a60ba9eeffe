"""Registry: stations, scales, cylinders with the type table, ID numbers, ops endpoints."""

from __future__ import annotations

import pytest

from server.domain import id_number_problem, mask_id_number
from tests.server.conftest import World
from tests.server.helpers import id_number


def test_gb11643_check_digit() -> None:
    assert id_number_problem("11010519491231002X") is None  # the standard's own example
    assert "check digit" in (id_number_problem("110105194912310021") or "")
    assert "birth date" in (id_number_problem("110105194913310025") or "")
    assert "17 digits" in (id_number_problem("1101051949123100") or "")
    assert all(id_number_problem(id_number(i)) is None for i in range(50))


def test_masking_keeps_only_region_and_tail() -> None:
    assert mask_id_number("11010519491231002X") == "1101**********002X"


def test_cylinders_take_rated_fill_from_the_type_table(world: World) -> None:
    assert (
        world.call(
            "admin",
            "POST",
            "/api/v1/stations",
            json={"id": "st-1", "site_id": "site-1", "name": "液化气充装站"},
        ).status_code
        == 201
    )
    assert (
        world.call(
            "admin",
            "POST",
            "/api/v1/scales",
            json={"id": "scale-1", "station_id": "st-1", "device_id": "forklift-01"},
        ).status_code
        == 201
    )
    made = world.call(
        "admin",
        "POST",
        "/api/v1/cylinder-types",
        json={"code": "YSP-15", "rated_fill_kg": 14.5, "design_life_years": 8},
    )
    assert made.status_code == 201
    cylinder = {
        "code": "37010000123",
        "station_id": "st-1",
        "type_code": "YSP-15",
        "manufactured_on": "2020-05-01",
        "last_inspection": "2024-05-01",
        "next_inspection": "2028-05-01",
    }
    created = world.call("admin", "POST", "/api/v1/cylinders", json=cylinder)
    assert created.status_code == 201, created.text
    got = world.call("supervisor", "GET", "/api/v1/cylinders/37010000123").json()
    assert (got["rated_fill_kg"], got["design_life_years"], got["status"]) == (
        14.5,
        8,
        "in_service",
    )
    duplicate = world.call("admin", "POST", "/api/v1/cylinders", json=cylinder)
    assert duplicate.status_code == 409 and duplicate.json()["detail"] == "cylinder exists"
    unknown = world.call(
        "admin", "POST", "/api/v1/cylinders", json={**cylinder, "code": "x", "type_code": "YSP-99"}
    )
    assert unknown.status_code == 404 and unknown.json()["detail"] == "cylinder type not found"


def test_device_registration_checks(world: World) -> None:
    body = {"device_id": "crane-01", "kind": "crane", "site_id": "site-1"}
    assert (
        world.call("admin", "POST", "/api/v1/devices", json=body).json()["detail"]
        == "device exists"
    )
    missing = world.call(
        "admin", "POST", "/api/v1/devices", json={**body, "device_id": "c2", "site_id": "nope"}
    )
    assert missing.status_code == 404 and missing.json()["detail"] == "site not found"
    legacy = world.call(
        "admin",
        "POST",
        "/api/v1/devices",
        json={
            **body,
            "device_id": "c3",
            "accepted_categories": [{"category": "Q2", "code_system": "legacy"}],
        },
    )
    assert legacy.status_code == 201
    assert len(bytes.fromhex(legacy.json()["device_key"])) == 32


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health(world: World, path: str) -> None:
    response = world.http.get(path)
    assert response.status_code == 200 and response.json()["status"] in ("ok", "ready")


def test_metrics_report_sync_lag(world: World) -> None:
    text = world.call("admin", "GET", "/metrics").text
    assert 'jifang_device_gallery_lag_versions{device="crane-01"}' in text
    assert "jifang_events_ingested" in text
