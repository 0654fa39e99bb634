"""The oracle generator renders the true synthetic scene: the upper bound that proves everything downstream."""

from __future__ import annotations

from worldstereo.errors import ConfigurationError
from worldstereo.pipeline.backends import GeneratedVideo, GenerationRequest, Resources, VideoGenerator
from worldstereo.synthetic import make_scene


class OracleGenerator(VideoGenerator):
    """Exact frames and depth of a synthetic scene along the requested cameras."""

    name = "oracle"
    resources = Resources(cpus=1.0, memory_gb=2.0)

    def generate(self, request: GenerationRequest) -> GeneratedVideo:
        spec = request.scene_spec
        if not spec:
            raise ConfigurationError(
                "the oracle generator renders synthetic scenes only: this input's camera JSON has no "
                "'scene' entry (use --generator warp or worldstereo for real images)"
            )
        scene = make_scene(spec.get("kind"), seed=spec.get("seed", 0))  # validates the spec: a permanent error
        views = scene.render(request.cameras)
        return GeneratedVideo(frames=views.rgb.float(), depth=views.depth.float())
