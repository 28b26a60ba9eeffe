"""Scanner and line-protocol scale boundaries against real sockets on loopback."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

import pytest

from edge_agent.station.config import LineScaleDriver, ScannerConfig
from edge_agent.station.scale import LineScale, ScaleError
from edge_agent.station.scanner import ScannerError, TcpScanner, WedgeScanner, clean_code


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def _serve_once(listener: socket.socket, handler) -> threading.Thread:
    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            handler(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_tcp_scanner_reads_lines_and_refuses_garbage(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    _serve_once(
        listener,
        lambda c: c.sendall(
            b"SD-LPG-000101\r\n\x02SD-LPG-000102\x03\r\n" + b"X" * 200 + b"\nSD-LPG-0001"
        ),
    )
    scanner = TcpScanner(ScannerConfig(scale_id="S1", kind="tcp", address=f"127.0.0.1:{port}"))
    assert scanner.read(2.0) == "SD-LPG-000101"
    assert scanner.read(2.0) == "SD-LPG-000102"
    # The over-long line is dropped; the half line without its terminator is not a code.
    with pytest.raises(ScannerError, match="S1"):
        scanner.read(2.0)
    scanner.close()


def test_tcp_scanner_bad_address_and_unreachable() -> None:
    with pytest.raises(ScannerError, match="not host:port"):
        TcpScanner(ScannerConfig(scale_id="S1", address="nohost"))
    scanner = TcpScanner(ScannerConfig(scale_id="S1", address="127.0.0.1:1"))
    with pytest.raises(ScannerError, match="127.0.0.1:1"):
        scanner.read(0.5)


def test_wedge_scanner_reads_typed_lines() -> None:
    scanner = WedgeScanner(
        ScannerConfig(scale_id="S1", kind="wedge"), io.StringIO("SD-LPG-000101\n\nSD-LPG-000102\n")
    )
    assert scanner.read(1.0) == "SD-LPG-000101"
    assert scanner.read(1.0) is None  # the empty line
    assert scanner.read(1.0) == "SD-LPG-000102"
    with pytest.raises(ScannerError, match="input closed"):
        scanner.read(1.0)


def test_clean_code() -> None:
    assert clean_code(b"  ABC-1 \r", 16) == "ABC-1"
    assert clean_code("瓶码", 16) is None
    assert clean_code("A" * 17, 16) is None


def test_line_scale_reads_and_commands(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    commands: list[str] = []

    def handler(conn: socket.socket) -> None:
        f = conn.makefile("rwb")
        for raw in f:
            line = raw.decode().strip()
            commands.append(line)
            if line == "R":
                f.write(b"29000 1\n")
            elif line.startswith("EN"):
                f.write(b"OK\n")
            else:
                f.write(b"garbage\n")
            f.flush()

    _serve_once(listener, handler)
    scale = LineScale("S1", LineScaleDriver(port=port))
    reading = scale.read(5.0)
    assert (reading.gross_kg, reading.valve_open, reading.at) == (29.0, True, 5.0)
    scale.set_fill_enable(True)
    scale.set_fill_enable(False)
    assert commands == ["R", "EN 1", "EN 0"]
    scale.close()


def test_line_scale_malformed_and_unreachable(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    _serve_once(listener, lambda c: c.sendall(b"twenty kilos\n"))
    scale = LineScale("S7", LineScaleDriver(port=port))
    with pytest.raises(ScaleError, match="S7: malformed reading"):
        scale.read(0.0)
    scale.close()
    with pytest.raises(ScaleError, match="S7"):
        LineScale("S7", LineScaleDriver(port=1)).set_fill_enable(True)
