"""Evaluation metrics (paper Sec. 4.2-4.3, Table 7): camera control, image fidelity, point clouds, retrieval."""

from worldstereo.evaluation.camera_metrics import (
    CameraMetrics,
    ate,
    camera_metrics,
    relative_to_first,
    rot_err_rad,
    rotation_angles_rad,
    trajectory_alignment,
    trans_err,
)
from worldstereo.evaluation.eval_alignment import (
    anchor_alignment,
    first_camera_alignment,
    first_camera_icp_alignment,
    median_distance_ratio,
)
from worldstereo.evaluation.image_metrics import LPIPS, load_lpips, lpips, psnr, ssim
from worldstereo.evaluation.pointcloud_metrics import (
    PointCloudScores,
    f_score_auc,
    f_score_curve,
    nearest_distances,
    point_cloud_scores,
    tau_from_extent,
)
from worldstereo.evaluation.retrieval_metrics import (
    INITIAL_SOURCES,
    RetrievalSummary,
    TrajectoryRetrieval,
    fov_overlap_score,
    source_shares,
    summarize_retrieval,
)

__all__ = [
    "INITIAL_SOURCES",
    "LPIPS",
    "CameraMetrics",
    "PointCloudScores",
    "RetrievalSummary",
    "TrajectoryRetrieval",
    "anchor_alignment",
    "ate",
    "camera_metrics",
    "f_score_auc",
    "f_score_curve",
    "first_camera_alignment",
    "first_camera_icp_alignment",
    "fov_overlap_score",
    "load_lpips",
    "lpips",
    "median_distance_ratio",
    "nearest_distances",
    "point_cloud_scores",
    "psnr",
    "relative_to_first",
    "rot_err_rad",
    "rotation_angles_rad",
    "source_shares",
    "ssim",
    "summarize_retrieval",
    "tau_from_extent",
    "trajectory_alignment",
    "trans_err",
]
