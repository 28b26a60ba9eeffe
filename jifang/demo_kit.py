"""The demo world: faces, pack, server, registry, operators and cab config; tests/e2e use it.

What `jifang demo` (jifang/demo.py) builds, in parts: the open default pack with the
placeholder calibration; the server on loopback with an admin; an enterprise, a site, a
forklift and a filling-station device; operators imported the way the certification office
exports them, their photos being images that installed packages ship; the forklift agent's
config; and reading back what the server stored.
"""

from __future__ import annotations

import csv
import io
import logging
import secrets
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.citizen_id import make_gb11643

if TYPE_CHECKING:
    import numpy as np
    from fastapi import FastAPI

    from edge_agent.cab.agent import GateParts
    from models.engine import FaceEngine
    from server.settings import ServerSettings

logger = logging.getLogger(__name__)

DEMO_CALIBRATION = "demo"
# The cab's time zone: certificate validity and the demo's overnight step follow its calendar.
DEMO_TIMEZONE = "Asia/Shanghai"
FPS = 15.0
PASSWORD_BYTES = 12
ENTERPRISE, SITE = "ent-demo", "site-demo"
FORKLIFT, STATION_DEVICE = "FL-DEMO-01", "ST-DEMO-01"
ID_REGION, ID_BIRTH = "370102", "19850612"
"""Jinan prefix and a birth date for the demo operators' made-up ID numbers."""


# --- faces that installed packages ship ----------------------------------------------------


def shipped_faces() -> dict[str, np.ndarray]:
    """BGR photos: scikit-image's astronaut and cameraman, matplotlib's Grace Hopper."""
    import cv2
    import numpy as np
    import skimage.data
    from matplotlib import cbook

    path = Path(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    hopper = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if hopper is None:
        raise FileNotFoundError(f"{path}: matplotlib's sample photo is not readable")
    return {
        "astronaut": np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1]),
        "cameraman": cv2.cvtColor(skimage.data.camera(), cv2.COLOR_GRAY2BGR),
        "hopper": np.asarray(hopper, np.uint8),
    }


def cab_scene(engine: FaceEngine, photo: np.ndarray, face_share: float = 0.3) -> np.ndarray:
    """A 640x480 cab-camera frame of the person: face about `face_share` of the frame height."""
    import cv2
    import numpy as np

    faces = engine.detect(photo)
    if not faces:
        raise ValueError("no face in the demo photo")
    x0, y0, x1, y1 = max(
        (f.detection.box for f in faces), key=lambda b: (b[2] - b[0]) * (b[3] - b[1])
    )
    side = (y1 - y0) / face_share
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = photo.shape[:2]
    pad = int(side)
    padded = cv2.copyMakeBorder(photo, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    top, left = int(cy - side / 2) + pad, int(cx - side / 2) + pad
    crop = padded[top : top + int(side), left : left + int(side)]
    square = cv2.resize(crop, (480, 480), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.copyMakeBorder(square, 0, 0, 80, 80, cv2.BORDER_REPLICATE))


def photo_jpeg(photo: np.ndarray) -> bytes:
    """A certificate photo file."""
    import cv2

    ok, data = cv2.imencode(".jpg", photo)
    if not ok:
        raise ValueError("photo could not be encoded")
    return bytes(data.tobytes())


# --- the pack ------------------------------------------------------------------------------


def demo_pack(default_pack: Path, root: Path, contract_id: str) -> Path:
    """The default pack linked into `root`, plus the placeholder calibration."""
    from models.placeholder import placeholder_pack

    return placeholder_pack(default_pack, root, contract_id, DEMO_CALIBRATION)


# --- the server ----------------------------------------------------------------------------


@dataclass
class RunningServer:
    """The server app served by uvicorn in a thread on loopback."""

    app: FastAPI
    url: str
    admin_password: str


@contextmanager
def serve(
    settings: ServerSettings, face_engine: FaceEngine | None = None, port: int | None = None
) -> Iterator[RunningServer]:
    """Create the app, an admin account, and serve it until the block ends."""
    from server.app import create_app
    from server.domain import Role
    from server.security import create_user
    from server.threaded import serve_in_thread

    application = create_app(settings, face_engine=face_engine)
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    with application.state.sessions() as session:
        create_user(session, "admin", password, Role.ADMIN)
        session.commit()
    with serve_in_thread(application, port=port) as url:
        try:
            yield RunningServer(application, url, password)
        finally:
            application.state.engine.dispose()


class Admin:
    """An admin's HTTP session on the server's API."""

    def __init__(self, url: str, password: str, username: str = "admin") -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=120)
        login = self.http.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        self._check(login, 200)
        self.http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

    @staticmethod
    def _check(response: Any, status: int) -> Any:
        if response.status_code != status:
            raise RuntimeError(
                f"{response.request.method} {response.request.url.path}: "
                f"{response.status_code} {response.text[:500]}"
            )
        return response.json() if response.content else None

    def post(self, path: str, body: dict[str, Any], status: int = 201) -> Any:
        """POST JSON; anything but `status` is an error naming the call."""
        return self._check(self.http.post(path, json=body), status)

    def get(self, path: str, **params: Any) -> Any:
        """GET JSON."""
        return self._check(self.http.get(path, params=params), 200)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


@dataclass(frozen=True)
class DeviceKey:
    """What registration returns once: the device's key and the server's public key."""

    device_id: str
    key: str
    server_public_key: str


def register_demo(admin: Admin) -> dict[str, DeviceKey]:
    """An enterprise, a site, a forklift (accepts N1) and a filling-station device."""
    admin.post("/api/v1/enterprises", {"id": ENTERPRISE, "name": "济南特种设备示范企业"})
    admin.post("/api/v1/sites", {"id": SITE, "enterprise_id": ENTERPRISE, "name": "历城厂区"})
    keys = {}
    for device_id, kind, rules in (
        (FORKLIFT, "forklift", [{"category": "N1"}]),
        (STATION_DEVICE, "filling_station", []),
    ):
        got = admin.post(
            "/api/v1/devices",
            {"device_id": device_id, "kind": kind, "site_id": SITE, "accepted_categories": rules},
        )
        keys[device_id] = DeviceKey(device_id, got["device_key"], got["server_public_key"])
    return keys


@dataclass(frozen=True)
class Person:
    """Someone in the demo: a photo, and the certificate the office holds (if any)."""

    key: str
    name: str
    photo: str
    certificate_no: str | None = None
    expiry: date | None = None
    serial: int = 0


def demo_people(today: date) -> list[Person]:
    """Who appears: a certified operator, one whose certificate expires today, a stranger."""
    return [
        Person("operator", "张伟", "astronaut", "T370102000001", date(2028, 2, 29), 1),
        # Valid through today: in today's gallery; expired once the cab's date rolls over.
        Person("expired", "王芳", "hopper", "T370102000002", today, 2),
        Person("stranger", "李强 (no certificate)", "cameraman"),
    ]


def import_operators(
    admin: Admin, people: list[Person], photos: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The certification office's export (CSV with Chinese headers + photo ZIP), imported."""
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
            "照片",
            "工作场所",
        ]
    )
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for person in people:
            if person.certificate_no is None or person.expiry is None:
                continue
            name = f"{person.key}.jpg"
            bundle.writestr(name, photo_jpeg(photos[person.photo]))
            writer.writerow(
                [
                    person.name,
                    make_gb11643(ID_REGION, ID_BIRTH, person.serial),
                    person.certificate_no,
                    "N1",
                    (person.expiry - timedelta(days=4 * 365)).isoformat(),
                    person.expiry.isoformat(),
                    "济南市市场监督管理局",
                    name,
                    SITE,
                ]
            )
    response = admin.http.post(
        "/api/v1/sync/operators",
        files={
            "file": ("证书导出.csv", out.getvalue().encode("utf-8-sig")),
            "photos": ("photos.zip", archive.getvalue()),
        },
    )
    return dict(Admin._check(response, 200))


# --- the cab -------------------------------------------------------------------------------


def cab_config(
    server_url: str, device: DeviceKey, pack: Path, store_dir: Path, **sections: dict[str, Any]
) -> dict[str, Any]:
    """The forklift agent's config tree (default liveness policy)."""
    data: dict[str, Any] = {
        "device": {
            "id": device.device_id,
            "kind": "forklift",
            "site_id": SITE,
            "timezone": DEMO_TIMEZONE,
        },
        "server": {
            "url": server_url,
            "device_key": device.key,
            "public_key": device.server_public_key,
        },
        "models": {"dir": str(pack.parent), "pack": pack.name, "calibration": DEMO_CALIBRATION},
        "camera": {"source": str(store_dir / "camera"), "fps": FPS},
        "quality": {"min_face_px": 60, "max_pitch_deg": 40.0},
        # The demo lets one night pass on the cab (CERT_EXPIRED): a gallery synced up to
        # two days ago still counts as fresh here.
        "gate": {"window_s": 3.0, "max_gallery_age_s": 2 * 86_400},
        "store": {"dir": str(store_dir)},
        "status": {"port": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def deliver_all(parts: GateParts, uplink: Any, attempts_max: int = 20) -> int:
    """Deliver the outbox to the server (evidence first); how many events were acknowledged."""
    from edge_agent.delivery import deliver_once

    total = 0
    for _ in range(attempts_max):
        if parts.outbox.depth() == 0:
            break
        total += deliver_once(parts.config, parts.outbox, uplink)
    return total


def server_events(application: FastAPI, device_id: str) -> list[dict[str, Any]]:
    """The events the server stored for a device, oldest first (read from its database)."""
    from sqlalchemy import select

    from server.tables import Event

    with application.state.sessions() as session:
        rows = session.scalars(
            select(Event).where(Event.device_id == device_id).order_by(Event.seq)
        ).all()
        return [
            {
                "event_id": r.event_id,
                "seq": r.seq,
                "kind": r.kind,
                "reason": r.reason,
                "flagged": r.flagged,
                "body": r.body,
            }
            for r in rows
        ]
