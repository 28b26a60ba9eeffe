"""Test helpers: a live server on loopback, signed device clients, office files."""

from __future__ import annotations

import csv
import io
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from contract.auth import HEADER_DEVICE, HEADER_SIGNATURE, HEADER_TIMESTAMP, request_mac
from contract.citizen_id import make_gb11643
from contract.codes import EventKind, ReasonCode, Severity
from contract.ids import uuid7
from contract.messages import (
    CabDecisionEvent,
    CabDecisionPayload,
    EventBatch,
    StationViolationEvent,
    StationViolationPayload,
)
from server.threaded import serve_in_thread

HEADER = [
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


def id_number(serial: int, birth: str = "19850612") -> str:
    """A valid GB 11643 ID number (Jinan prefix) for a serial number."""
    return make_gb11643("370102", birth, serial)


def office_rows(n: int, photo: bool = False, site: str = "site-1") -> list[list[str]]:
    """Rows of an office export: alternating Q2 (桥式起重机) and N1 certificates."""
    rows = []
    for i in range(n):
        category = "Q2(桥式起重机)" if i % 2 == 0 else "N1"
        rows.append(
            [
                f"操作员{i:03d}",
                id_number(i),
                f"T37{i:08d}",
                category,
                "2024-03-01",
                "2028-02-29",
                "济南市市场监督管理局",
                f"p{i}.jpg" if photo else "",
                site,
            ]
        )
    return rows


def csv_bytes(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    """An office CSV (UTF-8 with BOM, as Excel writes it)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8-sig")


def xlsx_bytes(rows: list[list[Any]], header: list[str] = HEADER) -> bytes:
    """An office XLSX with real date cells."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(header)
    for row in rows:
        values: list[Any] = list(row)
        values[4] = date.fromisoformat(row[4])
        values[5] = date.fromisoformat(row[5])
        sheet.append(values)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A ZIP of photos."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on 127.0.0.1; yields the base URL."""
    with serve_in_thread(app) as url:
        yield url


class DeviceClient:
    """Signs requests the way docs/protocol.md says a device does."""

    def __init__(self, http: httpx.Client, device_id: str, key_hex: str) -> None:
        self.http = http
        self.device_id = device_id
        self.key_hex = key_hex
        # docs/protocol.md: the HMAC key is the issued key text as ASCII bytes.
        self.key = key_hex.encode("ascii")

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        timestamp = str(int(time.time()))
        signed = {
            HEADER_DEVICE: self.device_id,
            HEADER_TIMESTAMP: timestamp,
            HEADER_SIGNATURE: request_mac(self.key, method, path, timestamp, body),
            **(headers or {}),
        }
        return self.http.request(method, path, content=body, headers=signed)

    def post_batch(self, batch: EventBatch) -> httpx.Response:
        return self.request(
            "POST",
            "/api/v1/events",
            batch.model_dump_json().encode(),
            {"Content-Type": "application/json"},
        )

    def gallery(self, since: int, contract: str) -> httpx.Response:
        return self.request(
            "GET", f"/api/v1/devices/{self.device_id}/gallery?since={since}&contract={contract}"
        )


def denied_event(
    device_id: str, seq: int, reason: ReasonCode = ReasonCode.NO_MATCH
) -> CabDecisionEvent:
    """A denied start (flagged)."""
    return CabDecisionEvent(
        event_id=uuid7(),
        device_id=device_id,
        seq=seq,
        occurred_at=datetime.now(UTC),
        reason=reason,
        payload=CabDecisionPayload(
            decision="denied", state_from="verifying", state_to="locked", frames_used=5
        ),
    )


def authorized_event(device_id: str, seq: int) -> CabDecisionEvent:
    """An authorized start (informational)."""
    return CabDecisionEvent(
        event_id=uuid7(),
        device_id=device_id,
        seq=seq,
        occurred_at=datetime.now(UTC),
        reason=ReasonCode.AUTHORIZED,
        payload=CabDecisionPayload(
            decision="authorized", state_from="verifying", state_to="authorized", frames_used=3
        ),
    )


def violation_event(device_id: str, seq: int) -> StationViolationEvent:
    """An overfill at a filling station (flagged, critical)."""
    return StationViolationEvent(
        event_id=uuid7(),
        device_id=device_id,
        seq=seq,
        occurred_at=datetime.now(UTC),
        reason=ReasonCode.OVERFILL,
        severity=Severity.LOW,
        kind=EventKind.STATION_VIOLATION,
        payload=StationViolationPayload(scale_id="scale-1", observed=16.2, limit=14.5),
    )


def batch_of(device_id: str, events: list[Any]) -> EventBatch:
    """A batch from one device."""
    return EventBatch(device_id=device_id, sent_at=datetime.now(UTC), events=tuple(events))
