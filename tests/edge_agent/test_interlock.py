"""Interlock drivers against real protocol stacks on loopback, and the watchdog."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.cab.interlock import Heartbeat, SimulatedInterlock, build_interlock, run_watchdog
from edge_agent.config import InterlockSection
from server.threaded import free_port
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def modbus_server() -> Iterator[str]:
    """A real pymodbus TCP server on localhost with 17 coils (block starts at 1: pymodbus offsets protocol addresses by one); yields host:port."""
    pytest.importorskip("pymodbus")
    from pymodbus.datastore import (
        ModbusDeviceContext,
        ModbusSequentialDataBlock,
        ModbusServerContext,
    )
    from pymodbus.server import ModbusTcpServer

    port = free_port()
    context = ModbusServerContext(
        devices=ModbusDeviceContext(co=ModbusSequentialDataBlock(1, [False] * 17)), single=True
    )
    loop = asyncio.new_event_loop()
    holder: list[ModbusTcpServer] = []

    async def main() -> None:
        server = ModbusTcpServer(context, address=("127.0.0.1", port))
        holder.append(server)
        await server.serve_forever()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main())

    thread = threading.Thread(target=serve, name="modbus-test-server", daemon=True)
    thread.start()

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(listening, timeout_s=15, what="the modbus test server")
    yield f"127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(holder[0].shutdown(), loop).result(timeout=5)
    thread.join(timeout=5)


def _coils(target: str, count: int = 2) -> list[bool]:
    from pymodbus.client import ModbusTcpClient

    host, port = target.split(":")
    client = ModbusTcpClient(host, port=int(port))
    assert client.connect()
    try:
        result = client.read_coils(0, count=count, device_id=1)
        assert not result.isError()
        return list(result.bits[:count])
    finally:
        client.close()


def test_modbus_coil_really_toggles(modbus_server: str, tmp_path: Path) -> None:
    section = InterlockSection(
        driver="modbus", target=modbus_server, enable_address=0, alarm_address=1
    )
    interlock = build_interlock(section, tmp_path)
    try:
        assert _coils(modbus_server) == [False, False]
        interlock.set_outputs(enable=True, alarm=False)
        assert _coils(modbus_server) == [True, False]
        interlock.set_outputs(enable=False, alarm=True)
        assert _coils(modbus_server) == [False, True]
    finally:
        interlock.close()


def test_modbus_unreachable_is_an_interlock_error(tmp_path: Path) -> None:
    from edge_agent.cab.interlock import InterlockError

    section = InterlockSection(driver="modbus", target=f"127.0.0.1:{free_port()}")
    interlock = build_interlock(section, tmp_path, timeout_s=0.5)
    with pytest.raises(InterlockError, match="cannot connect"):
        interlock.set_outputs(enable=True, alarm=False)


def test_can_frame_arrives_on_virtual_bus(tmp_path: Path) -> None:
    can = pytest.importorskip("can")
    channel = f"jifang-test-{os.getpid()}"
    section = InterlockSection(driver="can", can_interface="virtual", target=channel, can_id=0x18F)
    listener = can.Bus(interface="virtual", channel=channel)
    interlock = build_interlock(section, tmp_path)
    try:
        interlock.set_outputs(enable=True, alarm=False)
        message = listener.recv(timeout=5.0)
        assert message is not None
        assert message.arbitration_id == 0x18F
        assert bytes(message.data) == b"\x01\x00"
        interlock.set_outputs(enable=False, alarm=True)
        message = listener.recv(timeout=5.0)
        assert message is not None and bytes(message.data) == b"\x00\x01"
    finally:
        interlock.close()
        listener.shutdown()


def test_watchdog_drops_enable_when_heartbeat_stops(tmp_path: Path) -> None:
    section = InterlockSection(watchdog_s=0.3, heartbeat_s=0.1)
    interlock = SimulatedInterlock(tmp_path / "io.json")
    interlock.set_outputs(enable=True, alarm=False)
    life = Heartbeat(tmp_path / "heartbeat")
    life.beat()
    stop = threading.Event()
    worker = threading.Thread(
        target=run_watchdog, args=(section, life, interlock, stop), name="watchdog"
    )
    worker.start()
    try:
        # While beating, the watchdog leaves the output alone.
        for _ in range(5):
            life.beat()
            time.sleep(0.05)
        assert interlock.read()["enable"] is True
        wait_until(lambda: interlock.read()["enable"] is False, timeout_s=15, what="enable off")
        assert interlock.read()["alarm"] is True
    finally:
        stop.set()
        worker.join()


AGENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from edge_agent.cab.agent import start_watchdog
    from edge_agent.config import parse_config
    from edge_agent.cab.interlock import Heartbeat, build_interlock

    target, store = sys.argv[1], Path(sys.argv[2])
    config = parse_config({
        "device": {"id": "FL-1", "kind": "forklift", "site_id": "s"},
        "server": {"url": "http://127.0.0.1:9", "device_key": "k"},
        "camera": {"source": 0},
        "interlock": {"driver": "modbus", "target": target, "watchdog_s": 0.5, "heartbeat_s": 0.1},
        "store": {"dir": str(store)},
    })
    life = Heartbeat(store / "heartbeat")
    life.beat()
    watchdog = start_watchdog(config, life.path)
    (store / "watchdog.pid").write_text(str(watchdog.pid))
    build_interlock(config.interlock, store).set_outputs(enable=True, alarm=False)
    while True:
        life.beat()
        time.sleep(0.1)
    """
)


def test_watchdog_drops_output_when_agent_is_killed(modbus_server: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT_SCRIPT, modbus_server, str(tmp_path)], env=env, cwd=REPO
    )
    try:
        wait_until(
            lambda: _coils(modbus_server)[0] is True, timeout_s=60, what="the agent to enable"
        )
        time.sleep(1.0)  # several watchdog periods: a live agent keeps its output
        assert _coils(modbus_server)[0] is True
        watchdog_pid = int((tmp_path / "watchdog.pid").read_text())
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait()
        wait_until(
            lambda: _coils(modbus_server) == [False, True],
            timeout_s=20,
            what="enable off and alarm on",
        )

        def watchdog_gone() -> bool:
            try:
                os.kill(watchdog_pid, 0)
            except ProcessLookupError:
                return True
            # A zombie (exited, not yet reaped by init) counts as gone.
            stat = Path(f"/proc/{watchdog_pid}/stat")
            return not stat.exists() or stat.read_text().split()[2] == "Z"

        wait_until(watchdog_gone, timeout_s=20, what="the watchdog to exit after the agent died")
    finally:
        if agent.poll() is None:
            agent.kill()
