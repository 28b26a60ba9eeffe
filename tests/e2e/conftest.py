"""End-to-end fixtures: the real server on loopback (SQLite and PostgreSQL) with the demo registry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from jifang.demo_kit import (
    FORKLIFT,
    Admin,
    DeviceKey,
    RunningServer,
    cab_scene,
    demo_pack,
    demo_people,
    import_operators,
    register_demo,
    serve,
    shipped_faces,
)


@dataclass
class CabWorld:
    """A running server with the demo's site, forklift and imported operators."""

    server: RunningServer
    admin: Admin
    forklift: DeviceKey
    pack: Path
    scenes: dict[str, np.ndarray]


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return shipped_faces()


@pytest.fixture(scope="session")
def scenes(engine, photos) -> dict[str, np.ndarray]:  # noqa: ANN001 - FaceEngine
    return {name: cab_scene(engine, photo) for name, photo in photos.items()}


@pytest.fixture
def cab_world(
    tmp_path: Path, db_url: str, default_pack: Path, engine, photos, scenes
) -> Iterator[CabWorld]:  # noqa: ANN001
    """Server on the parametrised database; site, forklift, filling station; operators imported."""
    from server.settings import ServerSettings

    pack = demo_pack(default_pack, tmp_path / "packs", engine.contract_id)
    settings = ServerSettings(
        data_dir=tmp_path / "server", database_url=db_url, model_dir=pack.parent
    )
    with serve(settings, face_engine=engine) as server:
        admin = Admin(server.url, server.admin_password)
        keys = register_demo(admin)
        report = import_operators(admin, demo_people(datetime.now(UTC).date()), photos)
        assert report["applied"] and len(report["added"]) == 2, report
        try:
            yield CabWorld(server, admin, keys[FORKLIFT], pack, scenes)
        finally:
            admin.close()
