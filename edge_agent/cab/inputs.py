"""Start inputs: the pending start request, engine state and claim, and their hardware boundary.

With `inputs.source: modbus` a poller reads two discrete inputs (ignition key or seat switch,
engine running); a rising edge of the first is a start request. An unreadable input never
starts anything and leaves the engine state as it was (the gate never cuts a running machine).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from contract.messages import ClaimInfo
from edge_agent.cab.interlock import host_port
from edge_agent.config import InputsSection

logger = logging.getLogger(__name__)


class InputError(Exception):
    """The input device could not be read."""


@dataclass
class Inputs:
    """Start inputs and the pending claim, as set by the boundary (hardware or local API)."""

    start_requested: threading.Event = field(default_factory=threading.Event)
    engine_running: bool = False
    claim: ClaimInfo | None = None
    claim_at: float = 0.0
    override_code: str | None = None

    def present(self, claim: ClaimInfo, now: float | None = None) -> None:
        """Hold a claim for the next start request (monotonic `now`)."""
        self.claim, self.claim_at = claim, time.monotonic() if now is None else now

    def take_claim(self, valid_s: float, now: float | None = None) -> ClaimInfo | None:
        """The pending claim if presented within `valid_s`; it is used once."""
        claim, self.claim = self.claim, None
        now = time.monotonic() if now is None else now
        if claim is not None and now - self.claim_at > valid_s:
            # A stale claim must not let the next person ride on it.
            logger.info("claim %s expired unused", claim.kind.value)
            return None
        return claim


@dataclass(frozen=True)
class InputLevels:
    """One reading of the two input lines."""

    start: bool
    engine: bool


class ModbusInputs:
    """Two discrete inputs on a Modbus TCP device."""

    def __init__(self, section: InputsSection, timeout_s: float = 2.0) -> None:
        from pymodbus.client import ModbusTcpClient

        host, port = host_port(section.target)
        self._section = section
        self._client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=1)

    def _bit(self, address: int) -> bool:
        result = self._client.read_discrete_inputs(
            address, count=1, device_id=self._section.modbus_unit
        )
        if result.isError():
            raise InputError(f"modbus {self._section.target} input {address}: {result}")
        return bool(result.bits[0])

    def read(self) -> InputLevels:
        """Both lines, or InputError."""
        from pymodbus.exceptions import ModbusException

        try:
            if not self._client.connected and not self._client.connect():
                raise InputError(f"modbus {self._section.target}: cannot connect")
            return InputLevels(
                self._bit(self._section.start_input), self._bit(self._section.engine_input)
            )
        except ModbusException as err:
            raise InputError(f"modbus {self._section.target}: {err}") from err

    def close(self) -> None:
        """Close the connection."""
        self._client.close()


def run_inputs(
    section: InputsSection, stop_event: threading.Event, reader: ModbusInputs, inputs: Inputs
) -> None:
    """Named worker 'inputs-poll': rising edge of start -> start request; engine level."""
    last_start: bool | None = None
    failing = False
    while not stop_event.is_set():
        try:
            levels = reader.read()
        except InputError as err:
            if not failing:
                logger.error("start inputs unreadable: %s", err)
            failing = True
            last_start = None  # after an outage, a key already turned is not a new edge
        else:
            if failing:
                logger.info("start inputs readable again")
            failing = False
            if levels.start and last_start is False:
                inputs.start_requested.set()
            last_start = levels.start
            inputs.engine_running = levels.engine
        stop_event.wait(section.poll_s)
