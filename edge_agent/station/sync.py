"""The station's cylinder registry taken from the server: signed, verified, cached, swapped whole.

The server signs a `StationRegistry` slice (docs/protocol.md, 'Station registry'); the agent
keeps the signed envelope on disk and verifies it again when it loads it, so a cache edited on
the device is refused. Until a verified registry is installed every scan is refused (fail closed);
`StationRules` also refuses scans once the installed data is older than `registry_max_age_h`.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from contract.auth import SignatureError, verify_envelope
from contract.codes import CertificateStatus, CylinderStatus
from contract.messages import SignedEnvelope, StationFiller, StationRegistry
from edge_agent.station.domain import (
    CylinderRecord,
    CylinderType,
    FillerCertificate,
)
from edge_agent.station.registry import LocalRegistry
from edge_agent.uplink import Uplink, UplinkError

logger = logging.getLogger(__name__)

_UNKNOWN_INSPECTION = date.min
"""A cylinder without a next-inspection date is treated as overdue (fail closed)."""

_STATUS = {
    "in_service": CylinderStatus.IN_SERVICE,
    # The due date itself decides INSPECTION_OVERDUE; the label adds nothing.
    "inspection_due": CylinderStatus.IN_SERVICE,
    "suspended": CylinderStatus.SUSPENDED,
    "scrapped": CylinderStatus.SCRAPPED,
}


class RegistrySyncError(Exception):
    """A registry from the server (or the cache) could not be used."""


class StationUplink(Uplink):
    """The shared uplink plus the station's registry request."""

    def get_station_registry(self) -> SignedEnvelope:
        """The signed registry slice of this device's station."""
        response = self._send("GET", f"/api/v1/devices/{self.device_id}/station-registry")
        if response.status_code != 200:
            raise self._fail(response, "station registry")
        try:
            return SignedEnvelope.model_validate_json(response.content)
        except ValidationError as err:
            raise UplinkError(f"station registry: unexpected answer ({err})") from err


def _filler(rows: list[StationFiller], required: str) -> FillerCertificate:
    """One certificate per operator: a valid one of the required category if there is one."""

    def rank(row: StationFiller) -> tuple[bool, bool, date]:
        return (row.category == required, row.status == CertificateStatus.VALID, row.valid_until)

    best = max(rows, key=rank)
    return FillerCertificate(
        operator_id=best.operator_id,
        category=best.category,
        valid_until=best.valid_until,
        # Suspended counts as revoked: the filler may not fill until reinstated.
        revoked=best.status in (CertificateStatus.REVOKED, CertificateStatus.SUSPENDED),
    )


def to_local(message: StationRegistry, required_category: str) -> LocalRegistry:
    """The rules' view of a verified registry slice; synced_at is the server's generation time."""
    cylinders = [
        CylinderRecord(
            code=c.code,
            type_code=c.type_code,
            owner_station_id=c.owner_station_id,
            status=_STATUS[c.status],
            manufactured_on=c.manufactured_on,
            design_life_years=c.design_life_years,
            next_inspection_due=c.next_inspection_due or _UNKNOWN_INSPECTION,
            entrusted_station_ids=c.entrusted_station_ids,
        )
        for c in message.cylinders
    ]
    types = [CylinderType(t.code, t.rated_fill_kg) for t in message.cylinder_types]
    by_operator: dict[str, list[StationFiller]] = defaultdict(list)
    for row in message.fillers:
        by_operator[row.operator_id].append(row)
    fillers = [_filler(rows, required_category) for rows in by_operator.values()]
    return LocalRegistry(cylinders, types, fillers, message.generated_at)


class SyncedRegistry:
    """`CylinderRegistry` backed by the last verified server registry; empty means refuse all."""

    def __init__(
        self,
        device_id: str,
        station_id: str,
        public_key: Ed25519PublicKey | None,
        cache_path: Path,
        required_category: str,
    ) -> None:
        self._device_id = device_id
        self._station_id = station_id
        self._key = public_key
        self._path = cache_path
        self._required = required_category
        self._current = LocalRegistry()
        self._lock = threading.Lock()

    # --- CylinderRegistry ------------------------------------------------------------------

    def cylinder(self, code: str) -> CylinderRecord | None:
        """The cylinder registered under `code`, or None."""
        return self._current.cylinder(code)

    def cylinder_type(self, type_code: str) -> CylinderType | None:
        """The type table row, or None."""
        return self._current.cylinder_type(type_code)

    def filler(self, operator_id: str) -> FillerCertificate | None:
        """The filler's certificate, or None."""
        return self._current.filler(operator_id)

    def synced_at(self) -> datetime | None:
        """When the server generated the installed data; None if nothing verified yet."""
        return self._current.synced_at()

    # --- installing ------------------------------------------------------------------------

    def verify(self, envelope: SignedEnvelope) -> StationRegistry:
        """Check signature, type and addressee; raise RegistrySyncError naming what failed."""
        if self._key is None:
            raise RegistrySyncError("server.public_key is not set: no registry can be verified")
        if envelope.payload_type != "station.registry":
            raise RegistrySyncError(f"expected station.registry, got {envelope.payload_type}")
        try:
            payload = verify_envelope(self._key, envelope)
            message = StationRegistry.model_validate_json(payload)
        except SignatureError as err:
            raise RegistrySyncError(str(err)) from err
        except ValidationError as err:
            raise RegistrySyncError(f"station registry payload invalid: {err}") from err
        if message.device_id != self._device_id:
            raise RegistrySyncError(
                f"registry is for device {message.device_id}, not {self._device_id}"
            )
        if message.station_id != self._station_id:
            raise RegistrySyncError(
                f"server places this device at station {message.station_id}, "
                f"config says station.station_id {self._station_id}"
            )
        return message

    def install(self, envelope: SignedEnvelope) -> StationRegistry:
        """Verify, write the signed envelope to the cache, then swap the data in."""
        message = self.verify(envelope)
        older = self.synced_at()
        if older is not None and message.generated_at < older:
            raise RegistrySyncError(
                f"registry generated {message.generated_at} is older than the installed {older}"
            )
        tmp = self._path.with_name(self._path.name + ".tmp")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(envelope.model_dump_json(), encoding="utf-8")
        tmp.replace(self._path)
        self._swap(message)
        return message

    def load_cache(self) -> bool:
        """Install the cached envelope if it still verifies; False (logged) when absent or bad."""
        if not self._path.exists():
            logger.warning(
                "no station registry cache at %s: scans refused until a sync", self._path
            )
            return False
        try:
            envelope = SignedEnvelope.model_validate_json(self._path.read_text(encoding="utf-8"))
            message = self.verify(envelope)
        except (OSError, ValidationError, RegistrySyncError) as err:
            logger.error("station registry cache %s refused: %s", self._path, err)
            return False
        self._swap(message)
        return True

    def _swap(self, message: StationRegistry) -> None:
        local = to_local(message, self._required)
        with self._lock:
            self._current = local
        logger.info(
            "station registry %s: %d cylinders, %d types, %d fillers (generated %s)",
            message.station_id,
            len(message.cylinders),
            len(message.cylinder_types),
            len({f.operator_id for f in message.fillers}),
            message.generated_at.isoformat(),
        )


def sync_registry(registry: SyncedRegistry, uplink: StationUplink) -> StationRegistry:
    """Fetch and install once; raises UplinkError or RegistrySyncError."""
    return registry.install(uplink.get_station_registry())


def run_registry_sync(
    interval_s: float,
    stop_event: threading.Event,
    registry: SyncedRegistry,
    uplink: StationUplink,
    on_result: Callable[[str | None], None] | None = None,
) -> None:
    """Named worker: sync now, then every `interval_s`; each failure is reported, never fatal."""
    while not stop_event.is_set():
        problem: str | None = None
        try:
            sync_registry(registry, uplink)
        except (UplinkError, RegistrySyncError) as err:
            problem = str(err)
            logger.error("station registry sync failed: %s", err)
        except Exception as err:  # the worker must survive; the old data ages into refusal
            problem = f"unexpected: {err}"
            logger.exception("station registry sync error")
        if on_result is not None:
            on_result(problem)
        stop_event.wait(interval_s)
