"""Backends by name: what ``--depth``, ``--generator`` and ``--reconstructor`` accept."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from worldstereo.errors import ConfigurationError

if TYPE_CHECKING:  # the tables are read by the command line's help: importing them loads no backend code
    from worldstereo.config import Settings
    from worldstereo.pipeline.backends import Backend, DepthEstimator, Reconstructor, VideoGenerator

_DEPTH = {
    "auto": "worldstereo.pipeline.depth.auto:AutoDepth",
    "sidecar": "worldstereo.pipeline.depth.sidecar:SidecarDepth",
    "depth-pro": "worldstereo.pipeline.depth.depth_pro:DepthProDepth",
    "depth-anything-metric": "worldstereo.pipeline.depth.depth_anything_metric:DepthAnythingMetricDepth",
    "moge": "worldstereo.pipeline.depth.moge:MoGeDepth",
}
_GENERATORS = {
    "oracle": "worldstereo.pipeline.generators.oracle:OracleGenerator",
    "warp": "worldstereo.pipeline.generators.warp:WarpGenerator",
    "worldstereo": "worldstereo.pipeline.generators.worldstereo:WorldStereoGenerator",
    "worldstereo-paper": "worldstereo.pipeline.generators.worldstereo_paper:WorldStereoPaperGenerator",
}
_RECONSTRUCTORS = {
    "rendered-depth": "worldstereo.pipeline.reconstructors.rendered_depth:RenderedDepthReconstructor",
    "worldmirror": "worldstereo.pipeline.reconstructors.worldmirror:WorldMirrorReconstructor",
    "worldmirror-2": "worldstereo.pipeline.reconstructors.worldmirror_2:WorldMirror2Reconstructor",
    "depth-anything-3": "worldstereo.pipeline.reconstructors.depth_anything_3:DepthAnything3Reconstructor",
}
KINDS = {"depth": _DEPTH, "generator": _GENERATORS, "reconstructor": _RECONSTRUCTORS}


def names(kind: str) -> list[str]:
    """The registered backend names of ``kind``, sorted."""
    return sorted(KINDS[kind])


def backend_class(kind: str, name: str) -> type[Backend]:
    """The class registered under ``name`` for ``kind`` (depth, generator, reconstructor), or, for a name of the
    form ``package.module:Class``, that class (a backend kept outside this package, e.g. a benchmark's)."""
    table = KINDS[kind]
    if name not in table and ":" not in name:
        raise ConfigurationError(f"unknown {kind} backend {name!r}; choose one of {', '.join(sorted(table))}")
    module, attr = table.get(name, name).split(":")
    return getattr(import_module(module), attr)


def make_backend(kind: str, name: str, settings: Settings) -> Backend:
    """An instance, not yet set up."""
    return backend_class(kind, name)(settings)


def make_backends(settings: Settings) -> tuple[DepthEstimator, VideoGenerator, Reconstructor]:
    """The configured depth estimator, generator and reconstructor, each set up."""
    backends = (
        make_backend("depth", settings.depth_backend, settings),
        make_backend("generator", settings.generator, settings),
        make_backend("reconstructor", settings.reconstructor, settings),
    )
    for backend in backends:
        backend.setup()
    return backends  # type: ignore[return-value]
