"""Station packs: the models a filling station runs (today: the cylinder detector).

A station pack is a folder in the model directory with `station.yaml` and the files it lists.
It has no recognizer and no embedding, so it is not a face pack (`manifest.yaml`); the files
use the same entries (`FileEntry`) and the same wrapper table (models.runtime.registry), so a
wrapper is chosen by the manifest, never guessed.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.errors import ModelError
from models.manifest import FileEntry, sha256_file
from models.types import Task

if TYPE_CHECKING:
    from models.runtime.cylinder_detector import CylinderDetector

logger = logging.getLogger(__name__)

STATION_MANIFEST = "station.yaml"


class StationPackManifest(BaseModel):
    """The manifest of one station pack."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    kind: Literal["station"] = "station"
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str = Field(min_length=1, max_length=32)
    description: str = ""
    built: date | None = None
    files: tuple[FileEntry, ...] = Field(min_length=1)
    evaluation: dict[str, Any] = Field(
        default_factory=dict, description="figures measured when the pack was built"
    )

    @model_validator(mode="after")
    def _consistent(self) -> StationPackManifest:
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ValueError("a file is listed twice")
        if sum(1 for f in self.files if f.task == Task.CYLINDER_DETECTOR) > 1:
            raise ValueError("a station pack has at most one cylinder_detector file")
        return self

    def file(self, task: Task) -> FileEntry | None:
        """The file for a task, or None."""
        return next((f for f in self.files if f.task == task), None)


def load_station_manifest(pack_dir: Path) -> StationPackManifest:
    """Read and validate `station.yaml`; ModelError names the file and the field."""
    path = pack_dir / STATION_MANIFEST
    if not path.is_file():
        raise ModelError(f"{pack_dir}: not a station pack (no {STATION_MANIFEST})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ModelError(f"{path}: unreadable ({err})") from err
    try:
        return StationPackManifest.model_validate(raw)
    except ValidationError as err:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()
        )
        raise ModelError(f"{path}: {fields}") from err


def write_station_manifest(pack_dir: Path, manifest: StationPackManifest) -> Path:
    """Write `station.yaml` into a pack folder."""
    path = pack_dir / STATION_MANIFEST
    text = yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


def verify_station_pack(pack_dir: Path) -> StationPackManifest:
    """The manifest, after every listed file's checksum is checked (ModelError names the file)."""
    manifest = load_station_manifest(pack_dir)
    for entry in manifest.files:
        path = pack_dir / entry.path
        if not path.is_file():
            if entry.optional:
                continue
            raise ModelError(f"{pack_dir.name}: {entry.path} is missing")
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise ModelError(
                f"{pack_dir.name}: {entry.path} fails its checksum "
                f"(manifest {entry.sha256[:12]}…, file {actual[:12]}…)"
            )
    return manifest


def load_cylinder_detector(pack_dir: Path, threads: int = 1) -> CylinderDetector | None:
    """The pack's cylinder detector (checksums verified), or None when the pack has none."""
    from models.runtime.cylinder_detector import CylinderDetector
    from models.runtime.registry import build_component

    manifest = verify_station_pack(pack_dir)
    entry = manifest.file(Task.CYLINDER_DETECTOR)
    if entry is None or not (pack_dir / entry.path).is_file():
        logger.info("station pack %s has no cylinder detector", pack_dir)
        return None
    return build_component(pack_dir, entry, threads, CylinderDetector)
