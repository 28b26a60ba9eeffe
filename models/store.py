"""The model directory: where packs live, and how they move to an offline site."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelError
from models.manifest import MANIFEST_NAME, PackManifest, load_manifest, verify_pack

logger = logging.getLogger(__name__)

DEFAULT_PACK = "jifang-open"


def default_model_dir() -> Path:
    """`$JIFANG_MODEL_DIR`, else ~/.local/share/jifang/models."""
    env = os.environ.get("JIFANG_MODEL_DIR")
    if env:
        return Path(env)
    return Path.home() / ".local" / "share" / "jifang" / "models"


def pack_manifest(pack_dir: Path) -> PackManifest:
    """A pack folder's manifest: its manifest.yaml, else one derived from a vendor's folder.

    insightface's model folders (e.g. buffalo_l) carry no manifest; theirs is built from the
    file names. Anything else without a manifest.yaml is not a pack (ModelError).
    """
    if not (pack_dir / MANIFEST_NAME).is_file():
        from models.insightface_packs import insightface_manifest, looks_like_insightface_pack

        if looks_like_insightface_pack(pack_dir):
            return insightface_manifest(pack_dir)
    return load_manifest(pack_dir)


def verified_manifest(pack_dir: Path) -> PackManifest:
    """`pack_manifest`, after every file's checksum and every calibration's contract is checked."""
    return verify_pack(pack_dir, pack_manifest(pack_dir))


@dataclass(frozen=True)
class PackInfo:
    """A pack found in the model directory (manifest read, checksums not yet verified)."""

    path: Path
    manifest: PackManifest | None
    error: str | None = None


def list_packs(model_dir: Path) -> list[PackInfo]:
    """Every folder of the model directory that is, or tries to be, a pack."""
    if not model_dir.is_dir():
        return []
    found = []
    for child in sorted(
        p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    ):
        try:
            found.append(PackInfo(child, pack_manifest(child)))
        except ModelError as err:
            found.append(PackInfo(child, None, str(err)))
    return found


def resolve_pack(name_or_path: str, model_dir: Path) -> Path:
    """A pack given by folder path, or by name inside the model directory."""
    candidate = Path(name_or_path)
    if candidate.is_dir():
        return candidate
    inside = model_dir / name_or_path
    if inside.is_dir():
        return inside
    known = ", ".join(p.path.name for p in list_packs(model_dir)) or "none"
    raise ModelError(f"no model pack {name_or_path!r} in {model_dir} (packs there: {known})")


def export_pack(pack_dir: Path, archive: Path) -> Path:
    """Verify a pack and write it as one .tar.gz to carry to an offline site."""
    manifest = verified_manifest(pack_dir)
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(pack_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=f"{manifest.name}/{path.relative_to(pack_dir)}")
    tmp.replace(archive)
    return archive


def import_pack(archive: Path, model_dir: Path, force: bool = False) -> Path:
    """Unpack an exported pack, verify every checksum, then move it into place atomically."""
    if not archive.is_file():
        raise ModelError(f"{archive}: no such file")
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".import-") as tmp:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as err:
            raise ModelError(f"{archive}: not a readable pack archive ({err})") from err
        tops = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if len(tops) != 1:
            raise ModelError(f"{archive}: expected one pack folder inside, found {len(tops)}")
        manifest = verified_manifest(tops[0])
        target = model_dir / manifest.name
        if target.exists():
            if not force:
                raise ModelError(f"{target} already exists (use --force to replace it)")
            shutil.rmtree(target)
        tops[0].replace(target)
    logger.info("imported pack %s %s into %s", manifest.name, manifest.version, target)
    return target
