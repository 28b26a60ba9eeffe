"""Manifests for insightface model packs that a user places in the model directory.

insightface packs ship without a manifest. jifang recognises their files by name from this
explicit table (never by tensor shapes) and marks them non-commercial: insightface's
pretrained weights are licensed for non-commercial research only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.errors import ModelError
from models.manifest import EmbeddingSpec, FileEntry, PackManifest, compute_contract_id, sha256_file
from models.types import Task

LICENSE = "insightface pretrained models: non-commercial research use only"

# file name -> (task, wrapper, params)
KNOWN_FILES: dict[str, tuple[Task, str, dict[str, Any]]] = {
    "det_10g.onnx": (Task.DETECTOR, "insightface_scrfd", {"input_size": 640}),
    "det_2.5g.onnx": (Task.DETECTOR, "insightface_scrfd", {"input_size": 640}),
    "det_500m.onnx": (Task.DETECTOR, "insightface_scrfd", {"input_size": 640}),
    "scrfd_10g_bnkps.onnx": (Task.DETECTOR, "insightface_scrfd", {"input_size": 640}),
    "scrfd_2.5g_bnkps.onnx": (Task.DETECTOR, "insightface_scrfd", {"input_size": 640}),
    "scrfd_500m_bnkps.onnx": (Task.DETECTOR, "insightface_scrfd", {"input_size": 640}),
    "w600k_r50.onnx": (
        Task.RECOGNIZER,
        "insightface_arcface",
        {"input_mean": 127.5, "input_std": 127.5},
    ),
    "w600k_mbf.onnx": (
        Task.RECOGNIZER,
        "insightface_arcface",
        {"input_mean": 127.5, "input_std": 127.5},
    ),
    "glintr100.onnx": (
        Task.RECOGNIZER,
        "insightface_arcface",
        {"input_mean": 127.5, "input_std": 127.5},
    ),
}
IGNORED_FILES = {"1k3d68.onnx", "2d106det.onnx", "genderage.onnx"}
"""Files insightface packs carry that jifang does not use (3D landmarks, attributes)."""


def looks_like_insightface_pack(pack_dir: Path) -> bool:
    """True when the folder holds at least one file named in KNOWN_FILES."""
    return pack_dir.is_dir() and any((pack_dir / name).is_file() for name in KNOWN_FILES)


def insightface_manifest(pack_dir: Path, embedding_dim: int = 512) -> PackManifest:
    """Build the manifest of an insightface pack folder from its file names."""
    entries: list[FileEntry] = []
    for path in sorted(pack_dir.glob("*.onnx")):
        if path.name in IGNORED_FILES:
            continue
        if path.name not in KNOWN_FILES:
            raise ModelError(
                f"{pack_dir.name}/{path.name}: not a known insightface file "
                f"(known: {', '.join(sorted(KNOWN_FILES))}); write a manifest.yaml for it"
            )
        task, wrapper, params = KNOWN_FILES[path.name]
        entries.append(
            FileEntry(
                path=path.name,
                task=task,
                wrapper=wrapper,
                sha256=sha256_file(path),
                license=LICENSE,
                commercial_use=False,
                source=f"insightface pack '{pack_dir.name}' supplied by the user",
                params=params,
            )
        )
    spec = EmbeddingSpec(
        dim=embedding_dim, alignment="arcface_112", chip_size=112, chip_padding=0.0
    )
    return PackManifest(
        name=pack_dir.name.lower(),
        version="insightface",
        files=tuple(entries),
        embedding=spec,
        description="insightface pack (non-commercial research only)",
        contract_id=compute_contract_id(entries, spec),
    )
