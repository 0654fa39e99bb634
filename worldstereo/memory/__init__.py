"""Geometric memories: the 2D memory bank with frustum retrieval and pointmaps (SSM), the 3D cache (GGM)."""

from worldstereo.memory.bank import MemoryBank, MemoryFrame, released_bank_indices
from worldstereo.memory.cache import Cache3D, UpdateReport, overlap_correspondences
from worldstereo.memory.pointmap import PointmapPair, pointmap_pair, pointmap_pairs
from worldstereo.memory.retrieval import (
    Retrieval,
    frustum_corners,
    frustum_overlap_scores,
    retrieve_references,
    retrieve_released,
)

__all__ = [
    "Cache3D",
    "MemoryBank",
    "MemoryFrame",
    "PointmapPair",
    "Retrieval",
    "UpdateReport",
    "frustum_corners",
    "frustum_overlap_scores",
    "overlap_correspondences",
    "pointmap_pair",
    "pointmap_pairs",
    "released_bank_indices",
    "retrieve_references",
    "retrieve_released",
]
