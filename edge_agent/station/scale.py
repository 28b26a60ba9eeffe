"""Scale boundaries: telemetry (mass, valve) and the fill-enable output, one class per protocol."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Protocol

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge_agent.station.config import LineScaleDriver, ModbusScaleDriver, ScaleConfig
from edge_agent.station.domain import ScaleReading
from edge_agent.station.rules import InterlockError

logger = logging.getLogger(__name__)


class ScaleError(InterlockError):
    """A scale could not be read or commanded."""


class Scale(Protocol):
    """One filling scale."""

    scale_id: str

    def read(self, at: float) -> ScaleReading:
        """Current gross mass and valve state; raises ScaleError."""
        ...

    def set_fill_enable(self, enabled: bool) -> None:
        """Write the fill-enable output; raises ScaleError."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class ModbusScale:
    """A scale controller on Modbus TCP: mass in two holding registers, fill-enable on a coil."""

    def __init__(self, scale_id: str, driver: ModbusScaleDriver) -> None:
        self.scale_id = scale_id
        self._d = driver
        self._client = ModbusTcpClient(
            driver.host, port=driver.port, timeout=driver.timeout_s, retries=0
        )
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        if not self._client.connected and not self._client.connect():
            raise ScaleError(
                f"scale {self.scale_id}: cannot connect to {self._d.host}:{self._d.port}"
            )

    def read(self, at: float) -> ScaleReading:
        """Read gross mass (grams, u32 high word first) and the valve register."""
        d = self._d
        with self._lock:
            try:
                self._ensure()
                weight = self._client.read_holding_registers(
                    d.weight_register, count=2, device_id=d.unit_id
                )
                valve = self._client.read_holding_registers(
                    d.valve_register, count=1, device_id=d.unit_id
                )
            except ModbusException as err:
                raise ScaleError(f"scale {self.scale_id}: read failed: {err}") from err
        if weight.isError() or valve.isError():
            raise ScaleError(
                f"scale {self.scale_id}: device {d.unit_id} answered with an exception"
            )
        grams = (weight.registers[0] << 16) | weight.registers[1]
        return ScaleReading(at, self.scale_id, grams / 1000.0, bool(valve.registers[0]))

    def set_fill_enable(self, enabled: bool) -> None:
        """Write the fill-enable coil."""
        d = self._d
        with self._lock:
            try:
                self._ensure()
                response = self._client.write_coil(d.fill_enable_coil, enabled, device_id=d.unit_id)
            except ModbusException as err:
                raise ScaleError(f"scale {self.scale_id}: fill-enable write failed: {err}") from err
        if response.isError():
            raise ScaleError(
                f"scale {self.scale_id}: device {d.unit_id} refused the fill-enable write"
            )

    def close(self) -> None:
        """Close the TCP connection."""
        self._client.close()


class LineScale:
    """A scale speaking a line protocol over TCP: `R` -> `<grams> <valve>`, `EN 0|1` -> `OK`."""

    def __init__(self, scale_id: str, driver: LineScaleDriver) -> None:
        self.scale_id = scale_id
        self._d = driver
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._lock = threading.Lock()

    def _request(self, line: str) -> str:
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.create_connection(
                        (self._d.host, self._d.port), timeout=self._d.timeout_s
                    )
                self._sock.sendall(line.encode("ascii") + b"\n")
                while b"\n" not in self._buffer:
                    chunk = self._sock.recv(256)
                    if not chunk:
                        raise ConnectionError("connection closed by the scale")
                    self._buffer += chunk
            except OSError as err:
                self._drop()
                raise ScaleError(f"scale {self.scale_id}: {line.split()[0]} failed: {err}") from err
            reply, self._buffer = self._buffer.split(b"\n", 1)
            return reply.decode("ascii", errors="replace").strip()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buffer = b""

    def read(self, at: float) -> ScaleReading:
        """Ask for one reading."""
        reply = self._request("R")
        parts = reply.split()
        if len(parts) != 2 or not parts[0].isdigit() or parts[1] not in ("0", "1"):
            raise ScaleError(f"scale {self.scale_id}: malformed reading {reply!r}")
        return ScaleReading(at, self.scale_id, int(parts[0]) / 1000.0, parts[1] == "1")

    def set_fill_enable(self, enabled: bool) -> None:
        """Command the fill-enable."""
        reply = self._request(f"EN {int(enabled)}")
        if reply != "OK":
            raise ScaleError(f"scale {self.scale_id}: fill-enable refused: {reply!r}")

    def close(self) -> None:
        """Close the socket."""
        with self._lock:
            self._drop()


class ScaleSet:
    """All scales of the station; the rules' FillInterlock."""

    def __init__(self, scales: dict[str, Scale]) -> None:
        self._scales = scales

    @classmethod
    def from_config(
        cls, configs: list[ScaleConfig], sim: dict[str, Scale] | None = None
    ) -> ScaleSet:
        """Build drivers from config; `sim` supplies the simulator's scales for kind `sim`."""
        scales: dict[str, Scale] = {}
        for c in configs:
            if isinstance(c.driver, ModbusScaleDriver):
                scales[c.id] = ModbusScale(c.id, c.driver)
            elif isinstance(c.driver, LineScaleDriver):
                scales[c.id] = LineScale(c.id, c.driver)
            elif sim is not None and c.id in sim:
                scales[c.id] = sim[c.id]
            else:
                raise ScaleError(f"scale {c.id}: driver 'sim' needs the simulator")
        return cls(scales)

    def ids(self) -> list[str]:
        """Scale ids."""
        return list(self._scales)

    def read(self, scale_id: str, at: float) -> ScaleReading:
        """One reading of one scale."""
        return self._scales[scale_id].read(at)

    def set_fill_enable(self, scale_id: str, enabled: bool) -> None:
        """FillInterlock: write one scale's fill-enable."""
        self._scales[scale_id].set_fill_enable(enabled)

    def close(self) -> None:
        """Close every connection."""
        for scale in self._scales.values():
            scale.close()
