"""Cameras, trajectories, 3D cache rendering, alignment and panoramas: pure tensor maths."""

from worldstereo.geometry.align import Sim3, icp_refine, robust_umeyama, rotation_angle_deg, umeyama
from worldstereo.geometry.buckets import BUCKETS_480P, fit_to_bucket, nearest_bucket
from worldstereo.geometry.camera import Camera, look_at, rigid_inverse
from worldstereo.geometry.plucker import normalize_cameras, plucker_rays
from worldstereo.geometry.far_depth import compress_far_depth
from worldstereo.geometry.render import (
    CacheRender,
    depth_edge_mask,
    render_points,
    render_points_naive,
)
from worldstereo.geometry.voxel import merge_clouds, voxel_downsample

__all__ = [
    "BUCKETS_480P",
    "CacheRender",
    "Camera",
    "Sim3",
    "compress_far_depth",
    "depth_edge_mask",
    "fit_to_bucket",
    "icp_refine",
    "look_at",
    "merge_clouds",
    "nearest_bucket",
    "normalize_cameras",
    "plucker_rays",
    "render_points",
    "render_points_naive",
    "rigid_inverse",
    "robust_umeyama",
    "rotation_angle_deg",
    "umeyama",
    "voxel_downsample",
]
