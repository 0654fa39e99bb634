"""``auto``: the depth sidecar when the input has one, else the first configured depth model."""

from __future__ import annotations

from worldstereo.config import Settings
from worldstereo.errors import InvalidInputError
from worldstereo.inputs import DEPTH_SUFFIX, SceneInput
from worldstereo.pipeline.backends import DepthEstimate, DepthEstimator, Resources
from worldstereo.pipeline.depth.sidecar import SidecarDepth

# Tried in this order; each needs its ``models`` setting.
MODEL_BACKENDS = {"depth-pro": "depth_pro", "depth-anything-metric": "depth_anything_metric", "moge": "moge"}


def model_settings() -> str:
    return ", ".join(f"WORLDSTEREO_MODELS__{field.upper()}" for field in MODEL_BACKENDS.values())


class AutoDepth(DepthEstimator):
    """Sidecar depth when present; otherwise the first model of ``MODEL_BACKENDS`` whose weights are configured,
    loaded on first use (a batch of inputs with sidecars never loads it)."""

    name = "auto"
    resources = Resources(gpus=1.0, cpus=2.0, memory_gb=8.0)

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.sidecar = SidecarDepth(self.settings)
        self.model: DepthEstimator | None = None

    @property
    def model_name(self) -> str | None:
        """The model backend ``auto`` uses for inputs without a sidecar, if any is configured."""
        return next((name for name, field in MODEL_BACKENDS.items()
                     if getattr(self.settings.models, field) is not None), None)

    def estimate(self, scene: SceneInput) -> DepthEstimate:
        if scene.depth is not None:
            return self.sidecar.estimate(scene)
        if self.model is None:
            name = self.model_name
            if name is None:
                raise InvalidInputError(
                    f"no depth for this image: it has no depth sidecar (NAME{DEPTH_SUFFIX}) and no depth model is "
                    f"configured; set one of {model_settings()} to local weights, or add the sidecar"
                )
            from worldstereo.pipeline.registry import make_backend

            self.model = make_backend("depth", name, self.settings)  # type: ignore[assignment]
        return self.model.estimate(scene)
