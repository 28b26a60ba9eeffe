"""Exact 1:N search over face templates in numpy, ranked per operator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.types import FloatArray


@dataclass(frozen=True)
class Match:
    """One operator's best similarity to the probe."""

    label: str
    score: float
    template_index: int


@dataclass(frozen=True)
class SearchResult:
    """Top-k operators for one probe, best first, with the margin between first and second."""

    matches: tuple[Match, ...]

    @property
    def best(self) -> Match | None:
        """The best-scoring operator, if any."""
        return self.matches[0] if self.matches else None

    @property
    def margin(self) -> float:
        """Best score minus second-best operator's score (2.0 when there is no second)."""
        if len(self.matches) < 2:
            return 2.0
        return self.matches[0].score - self.matches[1].score


class Gallery:
    """Templates of many operators; several templates may share one label."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._vectors = np.zeros((0, dim), np.float32)
        self._labels: list[str] = []

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labels(self) -> frozenset[str]:
        """Distinct operator labels."""
        return frozenset(self._labels)

    def add(self, label: str, embeddings: FloatArray) -> None:
        """Add one or more L2-normalised templates for `label`."""
        block = np.atleast_2d(np.asarray(embeddings, np.float32))
        if block.shape[1] != self.dim:
            raise ValueError(f"template has {block.shape[1]} values, the gallery holds {self.dim}")
        self._vectors = np.vstack([self._vectors, block])
        self._labels.extend([label] * len(block))

    def remove(self, label: str) -> int:
        """Drop every template of `label`; return how many were removed."""
        keep = [i for i, lab in enumerate(self._labels) if lab != label]
        removed = len(self._labels) - len(keep)
        self._vectors = self._vectors[keep]
        self._labels = [self._labels[i] for i in keep]
        return removed

    def export(self) -> tuple[list[str], FloatArray]:
        """Labels and the template matrix, in insertion order."""
        return list(self._labels), self._vectors.copy()

    def search(self, probe: FloatArray, k: int = 5) -> SearchResult:
        """Best template per operator, top-k operators by cosine similarity."""
        if not self._labels:
            return SearchResult(())
        scores = self._vectors @ np.asarray(probe, np.float32)
        best: dict[str, tuple[float, int]] = {}
        for index in np.argsort(-scores):
            label = self._labels[index]
            if label not in best:
                best[label] = (float(scores[index]), int(index))
                if len(best) == k:
                    break
        return SearchResult(tuple(Match(lab, s, i) for lab, (s, i) in best.items()))
