"""Start-enable and alarm outputs behind one interface, and the watchdog that drops enable.

Drivers: simulated (a state file, so a separate watchdog process can drop it), Linux GPIO
(gpiod character device), a Modbus TCP coil (pymodbus) and a CAN frame (python-can).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from edge_agent.config import InterlockSection

logger = logging.getLogger(__name__)


class InterlockError(Exception):
    """An output could not be driven."""


class Interlock(Protocol):
    """The cab's outputs: start-enable (closed = may start) and the local alarm."""

    def set_outputs(self, enable: bool, alarm: bool) -> None:
        """Drive both outputs."""
        ...

    def close(self) -> None:
        """Release the hardware (outputs are not changed)."""
        ...


class SimulatedInterlock:
    """Outputs kept in a JSON state file (atomically replaced) and in `history`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.history: list[tuple[bool, bool]] = []

    def set_outputs(self, enable: bool, alarm: bool) -> None:
        """Write the new state."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"enable": enable, "alarm": alarm, "t": time.time()}))
        tmp.replace(self.path)
        self.history.append((enable, alarm))

    def read(self) -> dict[str, Any]:
        """The current state file."""
        data: dict[str, Any] = json.loads(self.path.read_text())
        return data

    def close(self) -> None:
        """Nothing to release."""


class GpiodInterlock:
    """Two output lines on a GPIO character device (libgpiod v2 Python bindings)."""

    def __init__(self, chip: str, enable_line: int, alarm_line: int) -> None:
        try:
            import gpiod
            from gpiod.line import Direction, Value
        except ImportError as err:
            raise InterlockError("gpiod driver needs the 'gpiod' package (libgpiod v2)") from err
        self._value = Value
        self._lines = (enable_line, alarm_line)
        try:
            self._request = gpiod.request_lines(
                chip,
                consumer="jifang-cab",
                config={
                    self._lines: gpiod.LineSettings(
                        direction=Direction.OUTPUT, output_value=Value.INACTIVE
                    )
                },
            )
        except OSError as err:
            raise InterlockError(f"gpiod {chip} lines {self._lines}: {err}") from err

    def set_outputs(self, enable: bool, alarm: bool) -> None:
        """Set both lines."""
        value = self._value
        try:
            self._request.set_values(
                {
                    self._lines[0]: value.ACTIVE if enable else value.INACTIVE,
                    self._lines[1]: value.ACTIVE if alarm else value.INACTIVE,
                }
            )
        except OSError as err:
            raise InterlockError(f"gpiod set: {err}") from err

    def close(self) -> None:
        """Release the line request."""
        self._request.release()


def host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise InterlockError(f"interlock.target {target!r} is not host:port")
    return host, int(port)


class ModbusCoilInterlock:
    """Two coils on a Modbus TCP device (a PLC or a relay module)."""

    def __init__(
        self, target: str, enable_coil: int, alarm_coil: int, unit: int, timeout_s: float
    ) -> None:
        from pymodbus.client import ModbusTcpClient

        host, port = host_port(target)
        self._coils = (enable_coil, alarm_coil)
        self._unit = unit
        self._client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=1)
        self._target = target

    def set_outputs(self, enable: bool, alarm: bool) -> None:
        """Write both coils; any failure is an InterlockError."""
        from pymodbus.exceptions import ModbusException

        try:
            if not self._client.connected and not self._client.connect():
                raise InterlockError(f"modbus {self._target}: cannot connect")
            for coil, value in zip(self._coils, (enable, alarm), strict=True):
                result = self._client.write_coil(coil, value, device_id=self._unit)
                if result.isError():
                    raise InterlockError(f"modbus {self._target} coil {coil}: {result}")
        except ModbusException as err:
            raise InterlockError(f"modbus {self._target}: {err}") from err

    def close(self) -> None:
        """Close the TCP connection."""
        self._client.close()


class CanInterlock:
    """One CAN frame carrying the output state: byte 0 = enable, byte 1 = alarm."""

    def __init__(self, interface: str, channel: str, can_id: int) -> None:
        import can

        try:
            self._bus = can.Bus(interface=interface, channel=channel)
        except (can.CanError, OSError, ValueError) as err:
            raise InterlockError(f"can {interface}/{channel}: {err}") from err
        self._can_id = can_id

    def set_outputs(self, enable: bool, alarm: bool) -> None:
        """Send the state frame."""
        import can

        message = can.Message(
            arbitration_id=self._can_id,
            data=[int(enable), int(alarm)],
            is_extended_id=self._can_id > 0x7FF,
        )
        try:
            self._bus.send(message)
        except can.CanError as err:
            raise InterlockError(f"can send: {err}") from err

    def close(self) -> None:
        """Shut the bus down."""
        self._bus.shutdown()


def build_interlock(
    section: InterlockSection, store_dir: Path, timeout_s: float = 2.0
) -> Interlock:
    """The configured driver."""
    if section.driver == "simulated":
        return SimulatedInterlock(
            Path(section.target) if section.target else store_dir / "interlock.json"
        )
    if section.driver == "gpiod":
        return GpiodInterlock(section.target, section.enable_address, section.alarm_address)
    if section.driver == "modbus":
        return ModbusCoilInterlock(
            section.target,
            section.enable_address,
            section.alarm_address,
            section.modbus_unit,
            timeout_s,
        )
    return CanInterlock(section.can_interface, section.target, section.can_id)


class Heartbeat:
    """The agent's proof of life: a file whose content is the last beat (wall time)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def beat(self) -> None:
        """Record a beat."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{time.time():.3f}")
        tmp.replace(self.path)

    def age_s(self) -> float:
        """Seconds since the last beat (infinite when there never was one)."""
        try:
            return time.time() - float(self.path.read_text())
        except (OSError, ValueError):
            return float("inf")


def run_watchdog(
    section: InterlockSection,
    heartbeat: Heartbeat,
    interlock: Interlock,
    stop_event: threading.Event,
    parent_pid: int | None = None,
) -> None:
    """Named worker (own process in production): drop enable while the heartbeat is stale.

    It only ever opens the output; closing it is the gate's decision alone. When the agent
    process itself is gone (`parent_pid` no longer our parent) it drops enable and exits.
    """
    dropped = False
    while not stop_event.is_set():
        orphaned = parent_pid is not None and os.getppid() != parent_pid
        if orphaned or heartbeat.age_s() > section.watchdog_s:
            try:
                # Alarm on too: the cab must show that the agent is gone.
                interlock.set_outputs(enable=False, alarm=True)
                if not dropped:
                    logger.error("agent heartbeat stale or agent gone: start-enable dropped")
                dropped = True
            except InterlockError as err:
                logger.error("watchdog could not drop enable: %s", err)
            if orphaned and dropped:
                return
        else:
            dropped = False
        stop_event.wait(section.watchdog_s / 4)
