"""Model packs: manifest validation, checksums, explicit wrappers, export and import."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from jifang.cli import app
from models.errors import ModelError
from models.manifest import (
    Calibration,
    CalibrationBlock,
    load_manifest,
    verify_pack,
    write_calibration,
)
from models.store import export_pack, import_pack, list_packs


@pytest.fixture
def pack_copy(default_pack: Path, tmp_path: Path) -> Path:
    target = tmp_path / "models" / "jifang-open"
    shutil.copytree(default_pack, target)
    return target


def _edit_manifest(pack: Path, edit) -> None:
    path = pack / "manifest.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_default_pack_verifies_and_is_commercially_usable(default_pack: Path) -> None:
    manifest = verify_pack(default_pack)
    assert manifest.name == "jifang-open"
    assert manifest.commercial_use
    assert {f.task.value for f in manifest.files} >= {"detector", "landmarks", "recognizer"}
    assert all(f.license in ("CC0-1.0", "Apache-2.0") for f in manifest.files)
    assert manifest.embedding.dim == 128


def test_tampered_file_fails_its_checksum(pack_copy: Path) -> None:
    with (pack_copy / "recognizer.onnx").open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelError, match=r"recognizer\.onnx fails its checksum"):
        verify_pack(pack_copy)


def test_missing_file_is_named(pack_copy: Path) -> None:
    (pack_copy / "landmarks5.npz").unlink()
    with pytest.raises(ModelError, match=r"landmarks5\.npz is missing"):
        verify_pack(pack_copy)


def test_unknown_task_is_an_error(pack_copy: Path) -> None:
    _edit_manifest(pack_copy, lambda d: d["files"][0].update(task="telepathy"))
    with pytest.raises(ModelError, match=r"files\.0\.task"):
        load_manifest(pack_copy)


def test_unknown_wrapper_is_an_error_not_a_guess(pack_copy: Path) -> None:
    from models.engine import FaceEngine

    _edit_manifest(pack_copy, lambda d: d["files"][0].update(wrapper="mystery_net"))
    with pytest.raises(ModelError, match="unknown wrapper 'mystery_net'"):
        FaceEngine(pack_copy)


def test_wrapper_for_another_task_is_an_error(pack_copy: Path) -> None:
    from models.engine import FaceEngine

    _edit_manifest(pack_copy, lambda d: d["files"][0].update(wrapper="dlib_resnet"))
    with pytest.raises(ModelError, match="runs recognizer models, the manifest says detector"):
        FaceEngine(pack_copy)


def test_contract_id_must_match_recognizer(pack_copy: Path) -> None:
    _edit_manifest(pack_copy, lambda d: d.update(contract_id="0" * 32))
    with pytest.raises(ModelError, match="contract_id .* does not match"):
        load_manifest(pack_copy)


def test_calibration_of_another_contract_is_refused(pack_copy: Path) -> None:
    cal = Calibration(
        threshold=0.9, target_fmr=1e-3, genuine_pairs=10, impostor_pairs=5000, contract_id="f" * 32
    )
    write_calibration(pack_copy, CalibrationBlock(calibrations={"site": cal}))
    with pytest.raises(ModelError, match="calibration 'site' was made for contract"):
        verify_pack(pack_copy)


def test_export_import_round_trip(pack_copy: Path, tmp_path: Path) -> None:
    archive = export_pack(pack_copy, tmp_path / "out" / "jifang-open.tar.gz")
    site = tmp_path / "site-models"
    imported = import_pack(archive, site)
    assert verify_pack(imported).contract_id == verify_pack(pack_copy).contract_id
    with pytest.raises(ModelError, match="already exists"):
        import_pack(archive, site)
    assert import_pack(archive, site, force=True) == imported


def test_import_of_tampered_archive_leaves_nothing(pack_copy: Path, tmp_path: Path) -> None:
    (pack_copy / "detector.onnx").write_bytes(b"not the converted detector")
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        tar.add(pack_copy, arcname="jifang-open")
    site = tmp_path / "site"
    with pytest.raises(ModelError, match="detector.onnx fails its checksum"):
        import_pack(bad, site)
    assert [p.name for p in site.iterdir()] == []


def test_cli_list_verify_info(pack_copy: Path) -> None:
    runner = CliRunner()
    model_dir = str(pack_copy.parent)
    listed = runner.invoke(app, ["models", "list", "--model-dir", model_dir])
    assert listed.exit_code == 0, listed.output
    assert "jifang-open" in listed.output and "commercial use OK" in listed.output
    verified = runner.invoke(app, ["models", "verify", "jifang-open", "--model-dir", model_dir])
    assert verified.exit_code == 0 and "OK" in verified.output
    info = runner.invoke(app, ["models", "info", "jifang-open", "--model-dir", model_dir])
    assert "CC0-1.0" in info.output and "Apache-2.0" in info.output
    (pack_copy / "detector.onnx").write_bytes(b"x")
    failed = runner.invoke(app, ["models", "verify", "jifang-open", "--model-dir", model_dir])
    assert failed.exit_code == 1 and "fails its checksum" in failed.output
    assert "INVALID" not in listed.output
    assert list_packs(pack_copy.parent)[0].manifest is not None
