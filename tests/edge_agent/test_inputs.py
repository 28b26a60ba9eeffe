"""Start inputs read from discrete inputs of a real pymodbus server on localhost."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import pytest

from contract.codes import GateState
from edge_agent.cab.inputs import InputError, Inputs, ModbusInputs, run_inputs
from edge_agent.config import InputsSection
from server.threaded import free_port
from tests.conftest import wait_until


@dataclass
class IoModule:
    """A simulated PLC input card: `lines` are what its discrete inputs read."""

    target: str
    lines: list[bool] = field(default_factory=lambda: [False] * 16)


@pytest.fixture
def io_module() -> Iterator[IoModule]:
    pytest.importorskip("pymodbus")
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice
    from pymodbus.simulator.simutils import SimUtils

    port = free_port()
    module = IoModule(f"127.0.0.1:{port}")

    async def action(fc, start, address, count, registers, values):  # noqa: ANN001, ANN202
        if fc == 2:  # read discrete inputs: present the card's current line levels
            registers[0:1] = SimUtils.bitsToRegisters(list(module.lines))
        return None

    def bits() -> list:
        return [SimData(0, count=16, values=False, datatype=DataType.BITS)]

    def regs() -> list:
        return [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]

    device = SimDevice(id=1, simdata=(bits(), bits(), regs(), regs()), action=action)
    loop = asyncio.new_event_loop()
    holder: list = []

    async def main() -> None:
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        holder.append(server)
        await server.serve_forever()

    thread = threading.Thread(
        target=lambda: loop.run_until_complete(main()), name="io-module", daemon=True
    )
    thread.start()

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    wait_until(listening, timeout_s=15, what="the modbus test server")
    yield module
    asyncio.run_coroutine_threadsafe(holder[0].shutdown(), loop).result(timeout=5)
    thread.join(timeout=5)


def test_rising_edge_is_one_start_request_and_engine_level_follows(io_module: IoModule) -> None:
    section = InputsSection(
        source="modbus", target=io_module.target, start_input=0, engine_input=1, poll_s=0.02
    )
    reader = ModbusInputs(section)
    inputs = Inputs()
    stop = threading.Event()
    worker = threading.Thread(
        target=run_inputs, args=(section, stop, reader, inputs), name="inputs-poll"
    )
    io_module.lines[0] = True  # key already turned when the agent starts: not a request
    worker.start()
    try:
        time.sleep(0.3)
        assert not inputs.start_requested.is_set()
        io_module.lines[0] = False
        time.sleep(0.2)
        io_module.lines[0] = True
        wait_until(inputs.start_requested.is_set, timeout_s=10, what="a start request")
        io_module.lines[1] = True
        wait_until(lambda: inputs.engine_running, timeout_s=10, what="engine running")
        io_module.lines[1] = False
        wait_until(lambda: not inputs.engine_running, timeout_s=10, what="engine stopped")
    finally:
        stop.set()
        worker.join()
        reader.close()


def test_unreachable_inputs_raise_input_error() -> None:
    section = InputsSection(source="modbus", target=f"127.0.0.1:{free_port()}")
    reader = ModbusInputs(section, timeout_s=0.5)
    with pytest.raises(InputError, match="cannot connect"):
        reader.read()


def test_agent_starts_on_ignition_input(
    io_module: IoModule, make_gate, frames, tmp_path: Path
) -> None:
    from edge_agent.cab.agent import Agent

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(frames["astro"] * 3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    parts = make_gate(
        inputs={"source": "modbus", "target": io_module.target, "poll_s": 0.05},
        camera={"fps": 10.0, "lost_after_s": 5.0},
    )
    agent = Agent(parts.config, parts, uplink=None)
    agent.start()
    try:
        wait_until(lambda: agent.capture.captured > 0, timeout_s=60, what="a captured frame")
        time.sleep(0.3)
        io_module.lines[0] = True  # ignition key turned
        wait_until(
            lambda: agent.gate.status.last_decision is not None, timeout_s=60, what="a decision"
        )
        assert agent.gate.status.last_decision.reason.value == "AUTHORIZED"
        io_module.lines[1] = True  # engine runs
        wait_until(
            lambda: agent.gate.status.state == GateState.RUNNING, timeout_s=60, what="running"
        )
        io_module.lines[1] = False
        wait_until(lambda: agent.gate.status.state == GateState.LOCKED, timeout_s=60, what="locked")
    finally:
        agent.stop()
