"""Depth read from the sidecar file beside the image: synthetic and RGB-D inputs."""

from __future__ import annotations

from worldstereo.errors import InvalidInputError
from worldstereo.inputs import SceneInput
from worldstereo.pipeline.backends import DepthEstimate, DepthEstimator, Resources


class SidecarDepth(DepthEstimator):
    """Returns the validated sidecar depth and camera of the input."""

    name = "sidecar"
    resources = Resources(cpus=0.5, memory_gb=0.5)

    def estimate(self, scene: SceneInput) -> DepthEstimate:
        if scene.depth is None:
            raise InvalidInputError(
                "depth backend 'sidecar' needs a depth file beside the image (NAME.depth.npy); "
                "add one, or set WORLDSTEREO_DEPTH_BACKEND=auto (the default) with a depth model's weights "
                "(WORLDSTEREO_MODELS__DEPTH_PRO, __DEPTH_ANYTHING_METRIC or __MOGE)"
            )
        return DepthEstimate(depth=scene.depth, camera=scene.camera,
                             info={"backend": self.name, "intrinsics": "camera-file" if scene.camera else "default-fov"})
