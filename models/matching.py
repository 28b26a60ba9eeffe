"""How a probe is matched against an operator's templates: the one code the gate and the
evaluations share (frame fusion, template fusion, score normalisation).

- frame fusion: the probe of an attempt is the renormalised mean of its frames' unit
  embeddings;
- template fusion: an operator's score is the best cosine similarity over his templates;
- score normalisation (optional, `ScoreNorm`): adaptive symmetric normalisation (AS-norm).
  Each template-probe cosine s becomes

      0.5 * ((s - m_p) / d_p + (s - m_t) / d_t)

  where m_p, d_p are the mean and standard deviation of the probe's `top` highest cosines
  against a cohort, and m_t, d_t the same for the template. The cohort is the other
  operators enrolled at the site plus a distractor set of one face per person that is not
  enrolled (shipped with the pack). A face that resembles many people (a "hub": glasses,
  a low or grey photo, a common pose) gets a high m, so its raw cosines count for less;
  a distinctive face gets a low m, so its genuine cosines count for more. The operator's
  score is then the best normalised score over his templates.

  Without the distractors the cohort holds only enrolled operators: an enrolled impostor is
  then pulled down by his own templates, but a stranger is not, and the false-match rate for
  strangers rises several-fold at the same threshold (bench/attempts.py measures both). So
  a `ScoreNorm` always carries a distractor cohort.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from contract.codes import ScoreKind
from models.errors import ModelError
from models.gallery import Gallery, Match, SearchResult
from models.manifest import Calibration

FloatMatrix = npt.NDArray[np.float32]
DEFAULT_TOP = 20
"""Cohort cosines averaged per face (AS-norm's adaptive top-k)."""
MIN_DISTRACTORS = 50
"""Fewest distractor faces a cohort may hold (its statistics are unstable below that)."""
DEFAULT_MIN_MARGIN = 0.05
"""The 1:N rule's default margin of the best operator over the second (gate.min_margin)."""
STD_FLOOR = 1e-3
"""Lower bound on a cohort standard deviation (numerical safety only)."""


def fuse_embeddings(embeddings: Sequence[npt.NDArray[np.floating]]) -> npt.NDArray[np.float32]:
    """Mean of L2-normalised embeddings, renormalised (multi-frame fusion)."""
    if not embeddings:
        raise ValueError("no embeddings to fuse")
    mean = np.mean(np.stack(embeddings), axis=0)
    return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-12), np.float32)


def template_scores(
    templates: npt.NDArray[np.floating], probes: npt.NDArray[np.floating]
) -> npt.NDArray[np.float64]:
    """Each probe's (row's) best similarity over an operator's templates (rows)."""
    if len(templates) == 0:
        raise ValueError("no templates to match against")
    raw = np.atleast_2d(np.asarray(probes, np.float64)) @ np.asarray(templates, np.float64).T
    return np.asarray(raw.max(axis=1), np.float64)


def template_score(templates: npt.NDArray[np.floating], probe: npt.NDArray[np.floating]) -> float:
    """An operator's score: the best similarity of the probe over his templates (rows)."""
    return float(template_scores(templates, probe)[0])


class Identification(StrEnum):
    """What a 1:N search without a claim gives, under the gate's rule."""

    EMPTY = "empty"
    """The gallery holds no templates."""
    BELOW_THRESHOLD = "below_threshold"
    AMBIGUOUS = "ambiguous"
    """The best operator clears the threshold, but the second is within the margin."""
    IDENTIFIED = "identified"


def identification(result: SearchResult, threshold: float, min_margin: float) -> Identification:
    """The gate's 1:N rule: the best operator must clear the threshold and lead the second
    operator by at least `min_margin`."""
    best = result.best
    if best is None:
        return Identification.EMPTY
    if best.score < threshold:
        return Identification.BELOW_THRESHOLD
    if min(2.0, max(0.0, result.margin)) < min_margin:
        return Identification.AMBIGUOUS
    return Identification.IDENTIFIED


def cohort_stats(
    faces: npt.NDArray[np.floating], cohort: npt.NDArray[np.floating], top: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean and standard deviation of each face's (row's) `top` highest cohort cosines."""
    faces = np.atleast_2d(np.asarray(faces, np.float64))
    cohort = np.asarray(cohort, np.float64)
    if cohort.ndim != 2 or len(cohort) < top:
        raise ValueError(f"a cohort of {len(cohort)} faces cannot give the top {top} cosines")
    scores = faces @ cohort.T
    best = -np.partition(-scores, top - 1, axis=1)[:, :top]
    return best.mean(axis=1), np.maximum(best.std(axis=1), STD_FLOOR)


@dataclass(frozen=True)
class ScoreNorm:
    """AS-norm against the site's other operators plus a distractor cohort (see module)."""

    distractors: FloatMatrix
    """Unit embeddings (rows) of faces of people who are not enrolled, one per person."""
    top: int = DEFAULT_TOP

    def __post_init__(self) -> None:
        if self.top < 1:
            raise ValueError(f"top {self.top}: must be at least 1")
        shape = np.shape(self.distractors)
        if len(shape) != 2 or shape[0] < max(MIN_DISTRACTORS, self.top):
            raise ValueError(
                f"distractor cohort of shape {shape}: needs at least "
                f"{max(MIN_DISTRACTORS, self.top)} faces (rows)"
            )

    def cohort(self, others: npt.NDArray[np.floating] | None) -> FloatMatrix:
        """The cohort for one claimed operator: the other operators' templates + distractors."""
        if others is None or len(others) == 0:
            return self.distractors
        return np.concatenate([np.asarray(others, np.float32), self.distractors])

    def template_stats(
        self, templates: npt.NDArray[np.floating], cohort: FloatMatrix
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """The template side of the normalisation (a gallery can keep it per version)."""
        return cohort_stats(templates, cohort, self.top)

    def scores(
        self,
        templates: npt.NDArray[np.floating],
        probes: npt.NDArray[np.floating],
        cohort: FloatMatrix,
        stats: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None,
    ) -> npt.NDArray[np.float64]:
        """The operator's normalised score for each probe (row): the best AS-norm score over
        his templates."""
        if len(templates) == 0:
            raise ValueError("no templates to match against")
        probes = np.atleast_2d(np.asarray(probes, np.float64))
        raw = probes @ np.asarray(templates, np.float64).T  # probes x templates
        probe_mean, probe_std = cohort_stats(probes, cohort, self.top)
        t_mean, t_std = stats if stats is not None else self.template_stats(templates, cohort)
        z = 0.5 * ((raw - probe_mean[:, None]) / probe_std[:, None] + (raw - t_mean) / t_std)
        return np.asarray(z.max(axis=1), np.float64)

    def pair_matrix(self, faces: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """Normalised scores between every two faces (rows), each one template against the
        other as probe, with the distractors alone as cohort: every impostor scored as a
        stranger would be (calibration pairs)."""
        faces = np.asarray(faces, np.float64)
        mean, std = cohort_stats(faces, self.distractors, self.top)
        raw = faces @ faces.T
        z = 0.5 * ((raw - mean[:, None]) / std[:, None] + (raw - mean[None, :]) / std[None, :])
        return np.asarray(z, np.float64)

    def score(
        self,
        templates: npt.NDArray[np.floating],
        probe: npt.NDArray[np.floating],
        cohort: FloatMatrix,
        stats: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None,
    ) -> float:
        """The operator's normalised score for one probe."""
        return float(self.scores(templates, probe, cohort, stats)[0])


def identity_key(label: str) -> str:
    """How a cohort file names the person behind a row: a hash of `<set>/<identity>`, so
    that data of the same person can be kept out of the cohort without storing names."""
    return hashlib.sha256(label.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Cohort:
    """A pack's distractor cohort: one unit embedding per person, with who each row is."""

    embeddings: FloatMatrix
    identities: tuple[str, ...]
    """`identity_key` of each row's person."""
    sha256: str
    """The cohort file's checksum (calibrations normalised against it name it)."""
    top: int = DEFAULT_TOP

    def __post_init__(self) -> None:
        if len(self.identities) != len(self.embeddings):
            raise ValueError(
                f"cohort of {len(self.embeddings)} rows names {len(self.identities)} people"
            )

    def norm(self, exclude: Iterable[str] = ()) -> tuple[ScoreNorm, int]:
        """The normalisation, with the rows of the people labelled `exclude` left out
        (a person must not be his own distractor); also how many rows were left out."""
        keys = {identity_key(label) for label in exclude}
        keep = np.array([key not in keys for key in self.identities], bool)
        dropped = int(len(keep) - keep.sum())
        return ScoreNorm(np.asarray(self.embeddings[keep], np.float32), self.top), dropped


@dataclass(frozen=True)
class Scorer:
    """How the gate scores a probe against a site's gallery, on one calibration's scale:
    the raw cosine, or AS-norm with the other operators' templates and the pack's
    distractors as the cohort of each claimed operator."""

    norm: ScoreNorm | None = None

    @property
    def kind(self) -> ScoreKind:
        """The scale of the scores (and so of the threshold they meet)."""
        return ScoreKind.COSINE if self.norm is None else ScoreKind.AS_NORM

    def claim(self, gallery: Gallery, operator: str, probe: npt.NDArray[np.floating]) -> float:
        """The operator's score for the probe (ValueError when he has no template)."""
        labels, vectors = gallery.export()
        mine = np.array([label == operator for label in labels], bool)
        if not mine.any():
            raise ValueError(f"operator {operator!r} has no template")
        if self.norm is None:
            return template_score(vectors[mine], probe)
        return self.norm.score(vectors[mine], probe, self.norm.cohort(vectors[~mine]))

    def search(self, gallery: Gallery, probe: npt.NDArray[np.floating], k: int) -> SearchResult:
        """The top-k operators by score, best first (every operator normalised against his
        own cohort under AS-norm)."""
        if self.norm is None:
            return gallery.search(np.asarray(probe, np.float32), k)
        labels, vectors = gallery.export()
        owners = np.array(labels)
        scored: list[Match] = []
        for operator in sorted(set(labels)):
            mine = owners == operator
            score = self.norm.score(vectors[mine], probe, self.norm.cohort(vectors[~mine]))
            scored.append(Match(operator, score, int(np.flatnonzero(mine)[0])))
        scored.sort(key=lambda m: -m.score)
        return SearchResult(tuple(scored[:k]))


def calibrated_scorer(calibration: Calibration, cohort: Cohort | None) -> Scorer:
    """The scoring a calibration was made with. A normalised calibration without the very
    cohort it was made against is refused: its threshold means nothing on other scores."""
    if calibration.score == ScoreKind.COSINE:
        return Scorer()
    if cohort is None:
        raise ModelError(
            f"the calibration is on normalised ({calibration.score.value}) scores, but the "
            "pack has no cohort"
        )
    if cohort.sha256 != calibration.cohort_sha256:
        raise ModelError(
            f"the calibration was normalised against cohort "
            f"{(calibration.cohort_sha256 or '')[:12]}…, the pack's is {cohort.sha256[:12]}…; "
            "recalibrate"
        )
    return Scorer(cohort.norm()[0])
