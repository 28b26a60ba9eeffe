"""Shared fixtures: real databases and brokers when reachable, and the PostgreSQL test count.

PostgreSQL-backed tests carry the `pg` marker. At the end of a run the summary says how many
of them passed; with JIFANG_REQUIRE_PG=1 (set by .ci/run) the run fails when PostgreSQL is
reachable but no such test passed, so a silently skipped database suite cannot go green.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

PG_URL = os.environ.get("JIFANG_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MQTT_HOST = os.environ.get("JIFANG_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("JIFANG_TEST_MQTT_PORT", "1883"))
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout_s: float = 30.0,
    what: str = "the condition",
    every_s: float = 0.05,
) -> T:
    """Poll `predicate` until it returns something truthy and return that; fail after timeout_s.

    The timeout only bounds a hung test: no test asserts how fast something happens.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def _reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pg_host_port() -> tuple[str, int]:
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    return url.host or "127.0.0.1", url.port or 5432


PG_REACHABLE = _reachable(*_pg_host_port())
_pg_nodeids: set[str] = set()
_pg_passed: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("pg") is not None:
            _pg_nodeids.add(item.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed and report.nodeid in _pg_nodeids:
        _pg_passed.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    state = "reachable" if PG_REACHABLE else "NOT reachable"
    terminalreporter.write_line(
        f"PostgreSQL-backed tests passed: {len(_pg_passed)} of {len(_pg_nodeids)} collected "
        f"(server {state} at {_pg_host_port()[0]}:{_pg_host_port()[1]})"
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("JIFANG_REQUIRE_PG") == "1" and PG_REACHABLE and not _pg_passed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                "FAILED: PostgreSQL is reachable but no PostgreSQL-backed test passed", red=True
            )


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path points at a fresh schema, dropped afterwards."""
    if not PG_REACHABLE:
        pytest.skip(f"PostgreSQL not reachable for {PG_URL}")
    from sqlalchemy import create_engine, text

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each database-backed test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def mqtt_broker() -> tuple[str, int]:
    """Host and port of a real MQTT broker, or skip."""
    if not _reachable(MQTT_HOST, MQTT_PORT):
        pytest.skip(f"MQTT broker not reachable at {MQTT_HOST}:{MQTT_PORT}")
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def shared_dir() -> Path:
    """The internal shared data folder beside the repository, or skip."""
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not present at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """Where tests keep built packs: $JIFANG_TEST_MODEL_DIR or <repo>/.cache/model_packs."""
    return Path(os.environ.get("JIFANG_TEST_MODEL_DIR", REPO_ROOT / ".cache" / "model_packs"))


@pytest.fixture(scope="session")
def default_pack(model_dir: Path) -> Path:
    """The open default pack, built from installed packages or registry wheels when missing.

    A build failure fails the tests that need the pack (it names the package or file that
    could not be had) rather than skipping them.
    """
    from models.build_default import build_default_pack

    return build_default_pack(model_dir)


@pytest.fixture(scope="session")
def engine(default_pack: Path):  # noqa: ANN201 - FaceEngine, imported lazily
    """A FaceEngine on the default pack (real ONNX sessions)."""
    from models.engine import FaceEngine

    return FaceEngine(default_pack, threads=2)


@pytest.fixture(scope="session")
def astronaut_bgr():  # noqa: ANN201
    """skimage's astronaut photo (a real face that ships with scikit-image), as BGR."""
    skimage_data = pytest.importorskip("skimage.data")
    import numpy as np

    return np.ascontiguousarray(skimage_data.astronaut()[:, :, ::-1])


def cohort_rows_for_tests(n: int, seed: int = 0, dim: int = 128) -> Any:
    """`n` random unit rows as a pack cohort; the last one is the astronaut's (`tiny` set of
    tests.models.faces), as if she had been in the fitting data."""
    import numpy as np

    from models.matching import identity_key
    from training.adapt import CohortRows

    rows = np.random.default_rng(seed).normal(size=(n, dim))
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    names = [f"others/p{i}" for i in range(n - 1)] + ["tiny/astronaut"]
    return CohortRows(rows, tuple(identity_key(name) for name in names))


@pytest.fixture(scope="session")
def cohort_pack(default_pack: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default pack plus a cohort of 60 faces (same embeddings, so the same contract)."""
    from training.adapt import AdapterProvenance, build_adapted_pack

    root = tmp_path_factory.mktemp("packs")
    return build_adapted_pack(
        default_pack,
        None,
        root,
        "normed",
        AdapterProvenance(source="test"),
        cohort=cohort_rows_for_tests(60),
    )


# Browser tests: one Playwright driver per session for every package's page tests (a second
# sync_playwright in the same thread fails), so the fixture lives here, not in a package.
OUTPUT = REPO_ROOT / "test-output"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """The gitignored folder screenshots go to."""
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """Headless Chromium from the Debian package, driven by Playwright (never downloaded)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/sysdeps.sh (installs Debian chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
