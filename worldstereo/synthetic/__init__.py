"""Procedural ground-truth scenes rendered exactly by ray casting, and sample inputs written from them."""

from worldstereo.synthetic.scenes import SCENE_KINDS, RenderedViews, SceneKind, SyntheticScene, make_scene

__all__ = ["SCENE_KINDS", "RenderedViews", "SceneKind", "SyntheticScene", "make_scene"]
