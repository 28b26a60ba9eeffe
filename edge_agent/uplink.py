"""The uplink: the one class that speaks docs/protocol.md to the central server.

Both agents use it: events, evidence and heartbeats from either; gallery and config for the
cab; the station's `StationUplink` adds the station-registry request.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode, urlsplit

import httpx
from pydantic import ValidationError

from contract.auth import HEADER_DEVICE, HEADER_SIGNATURE, HEADER_TIMESTAMP, request_mac
from contract.messages import (
    EventBatch,
    EventBatchAck,
    GalleryUpdateRequired,
    Heartbeat,
    SignedEnvelope,
)

logger = logging.getLogger(__name__)


class UplinkError(Exception):
    """The server could not be reached or answered something unusable."""


class Uplink:
    """HMAC-signed device requests (docs/protocol.md, 'Device requests')."""

    def __init__(
        self,
        base_url: str,
        device_id: str,
        device_key: bytes,
        timeout_s: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.device_id = device_id
        self._key = device_key
        self._prefix = urlsplit(base_url).path.rstrip("/")
        self._client = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport)
        self.last_server_time: datetime | None = None

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def _send(
        self, method: str, path: str, body: bytes = b"", content_type: str | None = None
    ) -> httpx.Response:
        timestamp = str(int(time.time()))
        signed_path = self._prefix + path
        headers = {
            HEADER_DEVICE: self.device_id,
            HEADER_TIMESTAMP: timestamp,
            HEADER_SIGNATURE: request_mac(self._key, method, signed_path, timestamp, body),
        }
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = self._client.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as err:
            raise UplinkError(f"{method} {path}: {err}") from err
        date_header = response.headers.get("date")
        if date_header:
            try:
                parsed = parsedate_to_datetime(date_header)
                # HTTP dates are always GMT; "-0000"/"GMT" parse as naive.
                self.last_server_time = (
                    parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
                )
            except (TypeError, ValueError):
                logger.debug("server Date header unreadable: %r", date_header)
        return response

    @staticmethod
    def _fail(response: httpx.Response, what: str) -> UplinkError:
        return UplinkError(f"{what}: HTTP {response.status_code} {response.text[:200]}")

    def post_events(self, batch: EventBatch) -> EventBatchAck:
        """Deliver a batch; the answer lists accepted and duplicate ids."""
        response = self._send(
            "POST", "/api/v1/events", batch.model_dump_json().encode(), "application/json"
        )
        if response.status_code not in (200, 201):
            raise self._fail(response, "events")
        try:
            return EventBatchAck.model_validate_json(response.content)
        except ValidationError as err:
            raise UplinkError(f"events: answer is not an EventBatchAck ({err})") from err

    def put_evidence(self, sha256: str, data: bytes, media_type: str) -> None:
        """Upload an evidence image by its hash (201 created, 200 already stored)."""
        response = self._send("PUT", f"/api/v1/evidence/{sha256}", data, media_type)
        if response.status_code not in (200, 201):
            raise self._fail(response, f"evidence {sha256}")

    def get_gallery(self, since: int, contract_id: str) -> SignedEnvelope | GalleryUpdateRequired:
        """The signed snapshot (since=0) or delta, or the server's contract refusal."""
        query = urlencode({"since": since, "contract": contract_id})
        response = self._send("GET", f"/api/v1/devices/{self.device_id}/gallery?{query}")
        try:
            if response.status_code == 409:
                return GalleryUpdateRequired.model_validate_json(response.content)
            if response.status_code != 200:
                raise self._fail(response, "gallery")
            return SignedEnvelope.model_validate_json(response.content)
        except ValidationError as err:
            raise UplinkError(f"gallery: unexpected answer ({err})") from err

    def get_config(self) -> SignedEnvelope:
        """The signed DeviceConfig."""
        response = self._send("GET", f"/api/v1/devices/{self.device_id}/config")
        if response.status_code != 200:
            raise self._fail(response, "config")
        try:
            return SignedEnvelope.model_validate_json(response.content)
        except ValidationError as err:
            raise UplinkError(f"config: unexpected answer ({err})") from err

    def heartbeat(self, beat: Heartbeat) -> None:
        """Tell the server the device is alive."""
        response = self._send(
            "POST",
            f"/api/v1/devices/{self.device_id}/heartbeat",
            beat.model_dump_json().encode(),
            "application/json",
        )
        if response.status_code not in (200, 204):
            raise self._fail(response, "heartbeat")
