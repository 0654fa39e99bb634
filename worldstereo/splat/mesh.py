"""A mesh of the scene: TSDF fusion (open3d) of the splats' rendered depth and colour, decimated."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import open3d as o3d
from torch import Tensor

from worldstereo.geometry.camera import Camera

MIN_ALPHA = 0.5  # pixels the splats cover less than this are not fused


def tsdf_mesh(renders: list[tuple[Tensor, Tensor, Tensor]], cameras: list[Camera], low: Tensor, high: Tensor,
              voxels: int, max_triangles: int) -> o3d.geometry.TriangleMesh:
    """Fuse (rgb, depth, alpha) renders at single ``cameras`` into a TSDF cube of ``voxels`` cells per side over
    the box ``low..high`` (its longest side)."""
    length = float((high - low).max()) * 1.02
    voxel = length / voxels
    volume = o3d.pipelines.integration.UniformTSDFVolume(
        length=length, resolution=voxels, sdf_trunc=4 * voxel,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8,
        origin=(low.double().cpu().numpy() - 0.01 * length).reshape(3, 1))
    for (rgb, depth, alpha), camera in zip(renders, cameras):
        depth = depth.where(alpha > MIN_ALPHA, 0.0).cpu().numpy().astype(np.float32)
        color = (rgb.cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        image = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(color)), o3d.geometry.Image(np.ascontiguousarray(depth)),
            depth_scale=1.0, depth_trunc=float(depth.max()) + 1.0, convert_rgb_to_intensity=False)
        K = camera.K[0].double().cpu().numpy()
        intrinsic = o3d.camera.PinholeCameraIntrinsic(camera.width, camera.height, K[0, 0], K[1, 1], K[0, 2] - 0.5,
                                                      K[1, 2] - 0.5)
        volume.integrate(image, intrinsic, camera.w2c[0].double().cpu().numpy())
    mesh = volume.extract_triangle_mesh()
    if len(mesh.triangles) > max_triangles:
        mesh = mesh.simplify_quadric_decimation(max_triangles)
    return mesh.remove_unreferenced_vertices()


EMPTY_PLY = (b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty double x\nproperty double y\n"
             b"property double z\nelement face 0\nproperty list uchar uint vertex_indices\nend_header\n")


def mesh_ply(mesh: o3d.geometry.TriangleMesh) -> bytes:
    """Binary PLY bytes of a triangle mesh (vertex colours kept); a mesh the splats gave no surface for (nothing
    they cover at half opacity or more) is an empty PLY, which open3d refuses to write."""
    if len(mesh.vertices) == 0:
        return EMPTY_PLY
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mesh.ply"
        o3d.io.write_triangle_mesh(str(path), mesh, write_ascii=False, compressed=False)
        return path.read_bytes()
