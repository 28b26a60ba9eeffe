"""A gallery kept in one .npz file, for the command line and site tools."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.errors import ModelError
from models.gallery import Gallery


@dataclass
class LocalGallery:
    """Templates with their labels and source names, bound to one embedding contract."""

    path: Path
    contract_id: str
    gallery: Gallery
    sources: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path, contract_id: str, dim: int) -> LocalGallery:
        """Load the file, or start an empty gallery; refuse another contract's templates."""
        gallery = Gallery(dim)
        if not path.is_file():
            return cls(path, contract_id, gallery)
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = str(data["contract_id"])
                labels = [str(v) for v in data["labels"]]
                vectors = data["embeddings"].astype(np.float32)
                sources = [str(v) for v in data["sources"]]
        except (OSError, KeyError, ValueError) as err:
            raise ModelError(f"{path}: not a jifang gallery file ({err})") from err
        if stored != contract_id:
            raise ModelError(
                f"{path}: templates were made with contract {stored}, the pack's is "
                f"{contract_id}; re-enroll with this pack"
            )
        for label, vector in zip(labels, vectors, strict=True):
            gallery.add(label, vector)
        return cls(path, contract_id, gallery, sources)

    def add(self, label: str, embeddings: npt.NDArray[np.float32], source: str) -> None:
        """Add templates of one operator."""
        self.gallery.add(label, embeddings)
        self.sources.extend([source] * len(np.atleast_2d(embeddings)))

    def save(self) -> None:
        """Write atomically: a crash never leaves half a gallery."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        labels, vectors = self.gallery.export()
        np.savez(
            tmp,
            contract_id=np.array(self.contract_id),
            labels=np.array(labels),
            embeddings=vectors,
            sources=np.array(self.sources),
        )
        os.replace(tmp, self.path)
