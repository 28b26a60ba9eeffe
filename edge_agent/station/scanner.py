"""Code-scanner boundaries: TCP socket, serial line, keyboard-wedge text, and a queue twin."""

from __future__ import annotations

import logging
import queue
import socket
import threading
from typing import IO, Any, Protocol

from edge_agent.station.config import ScannerConfig

logger = logging.getLogger(__name__)


class ScannerError(Exception):
    """The scanner could not be read."""


class Scanner(Protocol):
    """One code scanner; `read` returns one code, or None when nothing came within the timeout."""

    scale_id: str

    def read(self, timeout_s: float) -> str | None:
        """Next code, or None; raises ScannerError when the device is gone."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


def clean_code(raw: bytes | str, max_len: int) -> str | None:
    """A scanned line as a code: stripped printable ASCII within `max_len`; None if unusable."""
    text = raw.decode("ascii", errors="replace") if isinstance(raw, bytes) else raw
    text = text.strip().strip("\x02\x03")  # some scanners frame codes with STX/ETX
    if not text or len(text) > max_len or not text.isprintable() or not text.isascii():
        if text:
            logger.warning("scanner line refused: %r", text[:40])
        return None
    return text


class _Lines:
    """Splits a byte stream into lines (CR, LF or CRLF)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        self._buffer += data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def pop(self) -> bytes | None:
        if b"\n" not in self._buffer:
            return None
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


class TcpScanner:
    """An Ethernet scanner that serves its reads as lines on a TCP port."""

    def __init__(self, config: ScannerConfig) -> None:
        host, _, port = config.address.rpartition(":")
        if not host or not port.isdigit():
            raise ScannerError(
                f"scanner of {config.scale_id}: address {config.address!r} is not host:port"
            )
        self.scale_id = config.scale_id
        self._addr = (host, int(port))
        self._max = config.max_code_len
        self._sock: socket.socket | None = None
        self._lines = _Lines()

    def read(self, timeout_s: float) -> str | None:
        """Next code within `timeout_s`."""
        while True:
            line = self._lines.pop()
            if line is not None:
                code = clean_code(line, self._max)
                if code is not None:
                    return code
                continue
            try:
                if self._sock is None:
                    self._sock = socket.create_connection(self._addr, timeout=timeout_s)
                self._sock.settimeout(timeout_s)
                data = self._sock.recv(1024)
            except TimeoutError:
                return None
            except OSError as err:
                self.close()
                raise ScannerError(
                    f"scanner of {self.scale_id} at {self._addr[0]}:{self._addr[1]}: {err}"
                ) from err
            if not data:
                self.close()
                raise ScannerError(f"scanner of {self.scale_id}: connection closed")
            self._lines.feed(data)

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
        self._sock = None


class SerialScanner:
    """A scanner on a serial line (pyserial)."""

    def __init__(self, config: ScannerConfig) -> None:
        try:
            import serial
        except ImportError as err:
            raise ScannerError("serial scanners need pyserial installed") from err
        self.scale_id = config.scale_id
        self._max = config.max_code_len
        try:
            self._port: Any = serial.Serial(config.address, config.baudrate, timeout=0.5)
        except (OSError, ValueError) as err:
            raise ScannerError(
                f"scanner of {config.scale_id}: cannot open {config.address}: {err}"
            ) from err

    def read(self, timeout_s: float) -> str | None:
        """Next code within about `timeout_s`."""
        self._port.timeout = timeout_s
        try:
            line = self._port.readline()
        except OSError as err:
            raise ScannerError(f"scanner of {self.scale_id}: {err}") from err
        if not line or not line.endswith((b"\n", b"\r")):
            return None
        return clean_code(line, self._max)

    def close(self) -> None:
        """Close the port."""
        self._port.close()


class WedgeScanner:
    """A keyboard-wedge scanner: it types the code and Enter into a text stream (a tty or stdin)."""

    def __init__(self, config: ScannerConfig, stream: IO[str]) -> None:
        self.scale_id = config.scale_id
        self._max = config.max_code_len
        self._lines: queue.Queue[str | None] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(
            target=self._pump, args=(stream,), name=f"wedge-{config.scale_id}", daemon=True
        )
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)  # end of input

    def read(self, timeout_s: float) -> str | None:
        """Next code within `timeout_s`."""
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if line is None:
            raise ScannerError(f"scanner of {self.scale_id}: input closed")
        return clean_code(line, self._max)

    def close(self) -> None:
        """Nothing to release; the stream belongs to the caller."""


class QueueScanner:
    """The simulator's scanner: codes are put in by the scenario."""

    def __init__(self, scale_id: str) -> None:
        self.scale_id = scale_id
        self._codes: queue.Queue[str] = queue.Queue(maxsize=64)

    def put(self, code: str) -> None:
        """The filler scans `code`."""
        self._codes.put(code)

    def read(self, timeout_s: float) -> str | None:
        """Next code within `timeout_s`."""
        try:
            return self._codes.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Nothing to release."""
