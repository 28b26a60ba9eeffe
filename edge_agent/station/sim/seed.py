"""Puts the simulator's station, scales, cylinders and fillers on a running server (admin API).

The server is the registry's source of truth; the station agent syncs its slice from there.
The server has no entrustment (代充) records yet, so `sim.registry.ENTRUSTED` is not seeded.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import date

import httpx

from contract.citizen_id import make_gb11643
from edge_agent.station.sim import registry as reg

logger = logging.getLogger(__name__)

FOREIGN_STATION = "ST-QD-007"
SCALES = ("S101", "S102", "S103", "S104")

_FILLERS = (
    # (role in the simulator, name, certificate no, category, expiry)
    (reg.FILLER, "充装工张伟", "TP3700000001", "P", "2028-12-31"),
    (reg.FILLER_EXPIRED, "充装工李娜", "TP3700000002", "P", "2025-12-31"),
    (reg.FILLER_WRONG_CATEGORY, "充装工王强", "TR3700000003", "R1", "2028-12-31"),
)


class SeedError(Exception):
    """The server refused part of the seed; the message names the request."""


@dataclass(frozen=True)
class SeededStation:
    """What the scenarios need to know about the seeded registry."""

    station_id: str
    operator_ids: dict[str, str]
    """Simulator filler role (reg.FILLER, ...) -> the server's operator id."""


def _id_number(serial: int) -> str:
    """A GB 11643-valid ID number (Jinan prefix) for a demo filler."""
    return make_gb11643("370102", f"198806{serial % 28 + 1:02d}", serial)


def _ok(response: httpx.Response, what: str, also: tuple[int, ...] = ()) -> None:
    if response.status_code not in (200, 201, *also):
        raise SeedError(f"{what}: HTTP {response.status_code} {response.text[:300]}")


def seed_station(
    http: httpx.Client,
    admin_headers: dict[str, str],
    site_id: str,
    device_id: str,
    station_id: str = reg.STATION_ID,
) -> SeededStation:
    """Create (or reuse) the station, its scales on `device_id`, the cylinders and the fillers."""
    exists = (409,)
    for sid, name in ((station_id, "济南液化气充装站"), (FOREIGN_STATION, "青岛某充装站")):
        _ok(
            http.post(
                "/api/v1/stations",
                json={"id": sid, "site_id": site_id, "name": name},
                headers=admin_headers,
            ),
            f"station {sid}",
            exists,
        )
    for scale in SCALES:
        _ok(
            http.post(
                "/api/v1/scales",
                json={"id": scale, "station_id": station_id, "device_id": device_id},
                headers=admin_headers,
            ),
            f"scale {scale}",
            exists,
        )
    _ok(
        http.post(
            "/api/v1/cylinder-types",
            json={
                "code": reg.LPG_15KG.code,
                "rated_fill_kg": reg.LPG_15KG.rated_fill_kg,
                "design_life_years": 8,
            },
            headers=admin_headers,
        ),
        "cylinder type",
        exists,
    )
    sim = reg.sim_registry(station_id)
    for code in (*reg.GOOD, reg.FOREIGN, reg.SCRAPPED, reg.OVERDUE, reg.TOO_OLD):
        record = sim.cylinder(code)
        assert record is not None  # every code above is in the simulator's registry
        _ok(
            http.post(
                "/api/v1/cylinders",
                json={
                    "code": code,
                    "station_id": record.owner_station_id,
                    "type_code": record.type_code,
                    "manufactured_on": record.manufactured_on.isoformat(),
                    "design_life_years": record.design_life_years,
                    "next_inspection": record.next_inspection_due.isoformat(),
                    "status": record.status.value,
                },
                headers=admin_headers,
            ),
            f"cylinder {code}",
            exists,
        )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "姓名",
            "身份证号",
            "证书编号",
            "作业项目代号",
            "发证日期",
            "有效期至",
            "发证机关",
            "工作场所",
        ]
    )
    for serial, (_, name, number, category, expiry) in enumerate(_FILLERS, start=1):
        issued = date.fromisoformat(expiry).replace(year=date.fromisoformat(expiry).year - 4)
        writer.writerow(
            [
                name,
                _id_number(serial),
                number,
                category,
                issued.isoformat(),
                expiry,
                "济南市市场监督管理局",
                site_id,
            ]
        )
    _ok(
        http.post(
            "/api/v1/sync/operators",
            files={
                "file": ("fillers.csv", ("\ufeff" + out.getvalue()).encode("utf-8"), "text/csv")
            },
            headers=admin_headers,
        ),
        "filler import",
    )
    ids: dict[str, str] = {}
    for role, name, *_ in _FILLERS:
        found = http.get("/api/v1/operators", params={"name": name}, headers=admin_headers)
        _ok(found, f"operator {name}")
        rows = found.json()
        if len(rows) != 1:
            raise SeedError(f"operator {name}: {len(rows)} matches after import")
        ids[role] = str(rows[0]["id"])
    logger.info("seeded station %s on %s with %d fillers", station_id, device_id, len(ids))
    return SeededStation(station_id, ids)
