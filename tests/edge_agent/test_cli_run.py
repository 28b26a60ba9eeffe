"""`jifang edge run` as a process: a pack with a calibration, a seeded signed gallery, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import yaml

from edge_agent.cab.cache import GalleryCache
from models.manifest import CalibrationBlock, write_calibration
from models.placeholder import placeholder_calibration, placeholder_pack
from tests.edge_agent.conftest import DEVICE, base_config

REPO = Path(__file__).resolve().parents[2]


def _pack_with_calibration(default_pack: Path, root: Path, contract_id: str) -> Path:
    """The default pack's files linked into a new folder, plus a calibration.yaml."""
    return placeholder_pack(default_pack, root / "packs", contract_id, "site")


def test_edge_run_authorizes_and_stops_on_sigterm(
    default_pack: Path, engine, signer, frames, tmp_path: Path
) -> None:
    pack = _pack_with_calibration(default_pack, tmp_path, engine.contract_id)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(frames["astro"]):
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    data = base_config(
        tmp_path,
        signer.public_b64,
        models={"dir": str(pack.parent), "pack": pack.name, "calibration": "site"},
        camera={"fps": 10.0, "lost_after_s": 5.0},
    )
    store = Path(data["store"]["dir"])
    cache = GalleryCache(store, DEVICE, engine.contract_id, signer.key.public_key())
    cache.install_snapshot(signer.snapshot())
    cache.install_config(signer.config())
    config_path = tmp_path / "cab.yaml"
    config_path.write_text(yaml.safe_dump(data, allow_unicode=True))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from jifang.cli import main; main()",
            "edge",
            "run",
            "--config",
            str(config_path),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = None
        lines = []
        assert agent.stdout is not None
        for line in agent.stdout:
            lines.append(line)
            found = re.search(r"status at (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "".join(lines)
        assert httpx.post(f"{url}/input/start").status_code == 202
        deadline = time.monotonic() + 60
        status = {}
        while time.monotonic() < deadline:
            status = httpx.get(f"{url}/status").json()
            if status["last_decision"]:
                break
            time.sleep(0.2)
        assert status["last_decision"]["reason"] == "AUTHORIZED", status
        assert status["enable"] is True
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    state = yaml.safe_load((store / "interlock.json").read_text())
    assert state["enable"] is False  # outputs opened on the way out


def test_edge_run_refuses_calibration_too_thin_for_target_fmr(
    default_pack: Path, engine, signer, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from jifang.cli import app

    pack = _pack_with_calibration(default_pack, tmp_path, engine.contract_id)
    thin = CalibrationBlock(
        calibrations={"site": placeholder_calibration(engine.contract_id, impostor_pairs=1200)}
    )
    write_calibration(pack, thin)
    data = base_config(
        tmp_path,
        signer.public_b64,
        models={"dir": str(pack.parent), "pack": pack.name, "calibration": "site"},
    )
    path = tmp_path / "cab.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["edge", "run", "--config", str(path)])
    assert result.exit_code == 3
    assert "1200 impostor pairs" in result.output and "supports FMR" in result.output
