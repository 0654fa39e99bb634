"""How relevant the retrieved references are (paper Table 7): FoV-overlap score and reference sources.

Pure functions over a target x memory score matrix (e.g. ``frustum_overlap_scores``) and the
source label of each memory frame (``"input"``, ``"panorama"`` or the trajectory that generated it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from worldstereo.errors import InvalidInputError

INITIAL_SOURCES = frozenset({"input", "panorama"})


@dataclass(frozen=True)
class TrajectoryRetrieval:
    """Retrieval for one trajectory against the memory bank as it was when that trajectory ran.

    ``scores`` is ``[T, M]``, ``sources`` names the ``M`` memory frames, ``chosen`` ``[T]`` is the
    memory frame used per target (``None``: the best-scoring one).
    """

    name: str
    scores: Tensor
    sources: tuple[str, ...]
    chosen: Tensor | None = None

    def __post_init__(self) -> None:
        if self.scores.ndim != 2 or self.scores.shape[1] != len(self.sources):
            raise InvalidInputError(
                f"{self.name}: scores must be [T, {len(self.sources)}] for {len(self.sources)} sources, "
                f"got {tuple(self.scores.shape)}"
            )
        if self.chosen is not None and self.chosen.shape != self.scores.shape[:1]:
            raise InvalidInputError(
                f"{self.name}: chosen must be [{self.scores.shape[0]}], got {tuple(self.chosen.shape)}"
            )

    def references(self) -> Tensor:
        """Memory index per target ``[T]`` (empty when the memory is)."""
        if self.scores.shape[1] == 0:
            return torch.empty(0, dtype=torch.long, device=self.scores.device)
        return self.scores.argmax(dim=1) if self.chosen is None else self.chosen.long()

    def reference_scores(self) -> Tensor:
        """Score of the reference used by each target ``[T]``; 0 for an empty memory."""
        if self.scores.shape[1] == 0:
            return self.scores.new_zeros(self.scores.shape[0])
        return self.scores.gather(1, self.references()[:, None])[:, 0]


@dataclass(frozen=True)
class RetrievalSummary:
    """Table 7 row: score x 100 per trajectory, their sum, and where the references came from.

    Shares count one reference per target (repeats included) and are fractions in [0, 1]; both are 0
    when nothing was retrieved.
    """

    per_trajectory: dict[str, float]
    total: float
    initial_share: float
    generated_share: float


def fov_overlap_score(record: TrajectoryRetrieval) -> float:
    """Mean over targets of the used reference's overlap score, x 100."""
    scores = record.reference_scores()
    return 100.0 * float(scores.double().mean()) if scores.numel() else 0.0


def source_shares(sources: Sequence[str], *, initial_sources: frozenset[str] = INITIAL_SOURCES) -> tuple[float, float]:
    """Fractions of references from the initial memory (input image, panorama views) and from generated frames."""
    if not sources:
        return 0.0, 0.0
    initial = sum(source in initial_sources for source in sources) / len(sources)
    return initial, 1.0 - initial


def summarize_retrieval(
    records: Sequence[TrajectoryRetrieval], *, initial_sources: frozenset[str] = INITIAL_SOURCES
) -> RetrievalSummary:
    """Scores per trajectory (in order), their sum (Table 7 "all") and the pooled reference shares."""
    per_trajectory = {record.name: fov_overlap_score(record) for record in records}
    if len(per_trajectory) != len(records):
        raise InvalidInputError("trajectory names must be unique")
    used = [record.sources[i] for record in records for i in record.references().tolist()]
    initial, generated = source_shares(used, initial_sources=initial_sources)
    return RetrievalSummary(per_trajectory, sum(per_trajectory.values()), initial, generated)


__all__ = [
    "INITIAL_SOURCES",
    "RetrievalSummary",
    "TrajectoryRetrieval",
    "fov_overlap_score",
    "source_shares",
    "summarize_retrieval",
]
