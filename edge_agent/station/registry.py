"""Registry lookups the rules need, behind a protocol; a local JSON cache implements it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

from contract.codes import CylinderStatus
from edge_agent.station.domain import (
    CylinderRecord,
    CylinderType,
    FillerCertificate,
)

logger = logging.getLogger(__name__)


class RegistryError(Exception):
    """The local registry cache could not be read."""


class CylinderRegistry(Protocol):
    """Cylinder, type and filler lookups (the server delivers the data)."""

    def cylinder(self, code: str) -> CylinderRecord | None:
        """The cylinder registered under `code`, or None."""
        ...

    def cylinder_type(self, type_code: str) -> CylinderType | None:
        """The type table row, or None."""
        ...

    def filler(self, operator_id: str) -> FillerCertificate | None:
        """The filler's certificate, or None."""
        ...

    def synced_at(self) -> datetime | None:
        """When the data was last taken from the server; None if never."""
        ...


class LocalRegistry:
    """In-memory registry, loadable from and savable to a JSON cache file."""

    def __init__(
        self,
        cylinders: Iterable[CylinderRecord] = (),
        types: Iterable[CylinderType] = (),
        fillers: Iterable[FillerCertificate] = (),
        synced_at: datetime | None = None,
    ) -> None:
        self._synced_at = synced_at
        self._cylinders = {c.code: c for c in cylinders}
        self._types = {t.code: t for t in types}
        self._fillers = {f.operator_id: f for f in fillers}

    def cylinder(self, code: str) -> CylinderRecord | None:
        """The cylinder registered under `code`, or None."""
        return self._cylinders.get(code)

    def cylinder_type(self, type_code: str) -> CylinderType | None:
        """The type table row, or None."""
        return self._types.get(type_code)

    def filler(self, operator_id: str) -> FillerCertificate | None:
        """The filler's certificate, or None."""
        return self._fillers.get(operator_id)

    def synced_at(self) -> datetime | None:
        """When the data was last taken from the server; None if never."""
        return self._synced_at

    def save(self, path: Path) -> None:
        """Write the cache atomically (a half-written cache would fail every scan)."""
        data = {
            "synced_at": self._synced_at.isoformat() if self._synced_at else None,
            "types": [
                {"code": t.code, "rated_fill_kg": t.rated_fill_kg} for t in self._types.values()
            ],
            "fillers": [
                {
                    "operator_id": f.operator_id,
                    "category": f.category,
                    "valid_until": f.valid_until.isoformat(),
                    "revoked": f.revoked,
                }
                for f in self._fillers.values()
            ],
            "cylinders": [
                {
                    "code": c.code,
                    "type_code": c.type_code,
                    "owner_station_id": c.owner_station_id,
                    "status": c.status.value,
                    "manufactured_on": c.manufactured_on.isoformat(),
                    "design_life_years": c.design_life_years,
                    "next_inspection_due": c.next_inspection_due.isoformat(),
                    "entrusted_station_ids": list(c.entrusted_station_ids),
                }
                for c in self._cylinders.values()
            ],
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LocalRegistry:
        """Read a cache file; any bad row names the file, list and index."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise RegistryError(f"{path}: cannot read registry cache: {err}") from err
        if not isinstance(data, dict):
            raise RegistryError(f"{path}: registry cache must be a JSON object")

        def rows(key: str) -> list[dict[str, Any]]:
            value = data.get(key, [])
            if not isinstance(value, list):
                raise RegistryError(f"{path}: {key} must be a list")
            return value

        try:
            types = [CylinderType(str(r["code"]), float(r["rated_fill_kg"])) for r in rows("types")]
        except (KeyError, TypeError, ValueError) as err:
            raise RegistryError(f"{path}: types: bad row: {err!r}") from err
        fillers = []
        for index, r in enumerate(rows("fillers")):
            try:
                fillers.append(
                    FillerCertificate(
                        operator_id=str(r["operator_id"]),
                        category=str(r["category"]),
                        valid_until=date.fromisoformat(r["valid_until"]),
                        revoked=bool(r.get("revoked", False)),
                    )
                )
            except (KeyError, TypeError, ValueError) as err:
                raise RegistryError(f"{path}: fillers.{index}: {err!r}") from err
        cylinders = []
        for index, r in enumerate(rows("cylinders")):
            try:
                cylinders.append(
                    CylinderRecord(
                        code=str(r["code"]),
                        type_code=str(r["type_code"]),
                        owner_station_id=str(r["owner_station_id"]),
                        status=CylinderStatus(r["status"]),
                        manufactured_on=date.fromisoformat(r["manufactured_on"]),
                        design_life_years=int(r["design_life_years"]),
                        next_inspection_due=date.fromisoformat(r["next_inspection_due"]),
                        entrusted_station_ids=tuple(r.get("entrusted_station_ids", ())),
                    )
                )
            except (KeyError, TypeError, ValueError) as err:
                raise RegistryError(f"{path}: cylinders.{index}: {err!r}") from err
        try:
            raw = data.get("synced_at")
            synced_at = datetime.fromisoformat(raw) if raw else None
        except (TypeError, ValueError) as err:
            raise RegistryError(f"{path}: synced_at: {err}") from err
        if synced_at is not None and synced_at.tzinfo is None:
            raise RegistryError(f"{path}: synced_at must carry a timezone")
        logger.info(
            "registry cache %s: %d cylinders, %d types, %d fillers",
            path,
            len(cylinders),
            len(types),
            len(fillers),
        )
        return cls(cylinders, types, fillers, synced_at)
