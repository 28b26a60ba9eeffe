"""A pymodbus TCP server in front of the simulated scales (the real scales' register map)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_agent.station.sim.station import SimScaleBank

logger = logging.getLogger(__name__)

READ_HOLDING = 3
WRITE_COIL = 5
WRITE_COILS = 15


@dataclass(frozen=True)
class CoilWrite:
    """A fill-enable write the server received."""

    unit_id: int
    scale_id: str
    value: bool


class SimModbusScaleServer:
    """Serves mass (u32 grams at 0-1), valve (2) and the fill-enable coil (0) per unit id."""

    def __init__(
        self, bank: SimScaleBank, units: dict[int, str], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._bank = bank
        self._units = units
        self._host = host
        self._port = port
        self.writes: list[CoilWrite] = []
        self._loop = asyncio.new_event_loop()
        self._server: ModbusTcpServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-modbus-scales", daemon=True)

    def _device(self, unit_id: int) -> SimDevice:
        scale_id = self._units[unit_id]

        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            current_registers: list[int],
            set_values: Sequence[int] | Sequence[bool] | None,
        ) -> None:
            if function_code == READ_HOLDING:
                grams, valve = self._bank.grams(scale_id)
                current_registers[0] = (grams >> 16) & 0xFFFF
                current_registers[1] = grams & 0xFFFF
                current_registers[2] = int(valve)
            elif (
                function_code in (WRITE_COIL, WRITE_COILS)
                and set_values is not None
                and address == 0
            ):
                value = bool(set_values[0])
                self.writes.append(CoilWrite(unit_id, scale_id, value))
                self._bank.set_fill_enable(scale_id, value)

        blocks = (
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=False, datatype=DataType.BITS)],
            [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
        )
        return SimDevice(id=unit_id, simdata=blocks, action=action)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = ModbusTcpServer(
                [self._device(u) for u in self._units], address=(self._host, self._port)
            )
            await self._server.serve_forever(background=True)
            self._ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._server.serving

        self._loop.run_until_complete(serve())

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None or self._server.transport is None:
            raise RuntimeError("server not started")
        listener = self._server.transport  # an asyncio.Server once listening
        return int(listener.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    def start(self, timeout_s: float = 5.0) -> SimModbusScaleServer:
        """Start serving in a thread."""
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("modbus simulator did not start")
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(5)
        self._thread.join(5)
