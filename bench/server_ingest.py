"""Event ingestion on PostgreSQL: events/s with batches of 100, and p50/p99 at 500 events/s.

The server runs in its own process (uvicorn, one worker) on a fresh PostgreSQL schema; this
process plays the devices over real HTTP on loopback. Bodies are built and signed before the
clock starts so the figures are the server's, not the client's.

    python bench/server_ingest.py [--seconds 20] [--offered 500]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

from _common import REPO, write_result

BATCH = 100
PG_URL = os.environ.get("JIFANG_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bodies(device_id: str, key: bytes, count: int, start_seq: int) -> list[tuple[bytes, int]]:
    from contract.codes import ReasonCode
    from contract.ids import uuid7
    from contract.messages import CabDecisionEvent, CabDecisionPayload, EventBatch

    now = datetime.now(UTC)
    batches = []
    seq = start_seq
    for _ in range(count):
        events = []
        for i in range(BATCH):
            denied = i % 10 == 0
            events.append(
                CabDecisionEvent(
                    event_id=uuid7(),
                    device_id=device_id,
                    seq=seq,
                    occurred_at=now,
                    reason=ReasonCode.NO_MATCH if denied else ReasonCode.AUTHORIZED,
                    payload=CabDecisionPayload(
                        decision="denied" if denied else "authorized",
                        state_from="verifying",
                        state_to="locked" if denied else "authorized",
                        frames_used=4,
                    ),
                )
            )
            seq += 1
        batch = EventBatch(device_id=device_id, sent_at=now, events=tuple(events))
        batches.append((batch.model_dump_json().encode(), seq))
    return batches


def _post(client, device_id: str, key: bytes, body: bytes) -> float:  # noqa: ANN001
    from contract.auth import HEADER_DEVICE, HEADER_SIGNATURE, HEADER_TIMESTAMP, request_mac

    ts = str(int(time.time()))
    headers = {
        HEADER_DEVICE: device_id,
        HEADER_TIMESTAMP: ts,
        # docs/protocol.md: the HMAC key is the issued key's hex text as ASCII bytes.
        HEADER_SIGNATURE: request_mac(
            key.hex().encode("ascii"), "POST", "/api/v1/events", ts, body
        ),
        "Content-Type": "application/json",
    }
    start = time.perf_counter()
    response = client.post("/api/v1/events", content=body, headers=headers)
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"ingest failed: {response.status_code} {response.text[:300]}")
    return elapsed


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument(
        "--offered", type=float, default=500.0, help="events/s in the latency phase"
    )
    args = parser.parse_args()

    import httpx
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from server.db import prepared_engine
    from server.settings import ServerSettings
    from server.tables import Device, Enterprise, Site

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    data_dir = REPO / ".cache" / "bench_server"
    settings = ServerSettings(data_dir=data_dir, database_url=url)
    engine = prepared_engine(settings)
    key = os.urandom(32)
    with Session(engine) as session:
        session.add(Enterprise(id="e", name="bench", credit_code=""))
        session.add(Site(id="s", enterprise_id="e", name="bench", address=""))
        session.flush()
        session.add(
            Device(
                id="bench-01",
                kind="crane",
                site_id="s",
                serial="",
                key=key,
                accepted_categories=[],
                config_version=1,
                active=True,
                created_at=datetime.now(UTC),
                gallery_version=0,
                pack_contract_id="",
                agent_version="",
                state="",
            )
        )
        session.commit()
    engine.dispose()

    port = _free_port()
    launcher = (
        "import logging, uvicorn\n"
        "from server.app import create_app\n"
        "from server.settings import ServerSettings\n"
        f"app = create_app(ServerSettings(data_dir={str(data_dir)!r}, database_url={url!r}))\n"
        f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning', access_log=False)\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", launcher], env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("bench server did not start") from None
                    time.sleep(0.2)
            warm = _bodies("bench-01", key, 5, 0)
            for body, _ in warm:
                _post(client, "bench-01", key, body)
            seq = warm[-1][1]

            # Phase 1: as fast as one device connection can push batches of 100.
            estimate = int(args.seconds * 40) + 10
            bodies = _bodies("bench-01", key, estimate, seq)
            sent = 0
            start = time.perf_counter()
            for body, next_seq in bodies:
                _post(client, "bench-01", key, body)
                sent += BATCH
                seq = next_seq
                if time.perf_counter() - start > args.seconds:
                    break
            throughput = sent / (time.perf_counter() - start)

            # Phase 2: fixed offered load (open loop: sends follow the schedule, not replies).
            interval = BATCH / args.offered
            count = max(10, int(args.seconds / interval))
            bodies = _bodies("bench-01", key, count, seq)
            latencies: list[float] = []
            t0 = time.perf_counter()
            for index, (body, _) in enumerate(bodies):
                due = t0 + index * interval
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                # Latency counts from the scheduled send time, so queueing behind a slow
                # reply is not hidden (no coordinated omission).
                late = max(0.0, time.perf_counter() - due)
                latencies.append(late + _post(client, "bench-01", key, body))
    finally:
        server.terminate()
        server.wait(timeout=30)
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    write_result(
        "server_ingest",
        {
            "events_per_s": round(throughput, 1),
            "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
            "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
            "offered_per_s": float(args.offered),
            "database": "postgresql",
        },
    )


if __name__ == "__main__":
    main()
