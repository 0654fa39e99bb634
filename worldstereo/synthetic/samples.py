"""Sample inputs rendered from the synthetic scenes, written in the input layout of ``worldstereo.inputs``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from worldstereo.inputs import panorama_document, perspective_document, sidecar_keys
from worldstereo.synthetic.scenes import SceneKind, make_scene

SAMPLES: tuple[tuple[str, SceneKind], ...] = (("room", "room"), ("object", "object"), ("panorama", "panorama360"))


def _write(out_dir: Path, name: str, rgb: Tensor, depth: Tensor, document: dict) -> Path:
    image_path = out_dir / f"{name}.png"
    depth_key, camera_key = sidecar_keys(image_path.name)
    Image.fromarray((rgb.cpu().numpy() * 255).round().astype(np.uint8)).save(image_path)
    np.save(out_dir / depth_key, depth.cpu().numpy().astype(np.float32))
    (out_dir / camera_key).write_text(json.dumps(document, indent=2))
    return image_path


def write_samples(
    out_dir: Path, seed: int = 0, *, height: int = 240, width: int = 384, panorama_height: int = 256
) -> list[Path]:
    """Write one input per sample scene (image, depth sidecar, camera file); returns the image paths.

    Perspective samples are ``height x width`` renders of the scene's input camera; the panorama is
    ``panorama_height x 2·panorama_height`` from the origin.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, kind in SAMPLES:
        scene = make_scene(kind, seed)
        spec = {"kind": kind, "seed": seed}
        if kind == "panorama360":
            rgb, distance = scene.render_panorama(panorama_height, 2 * panorama_height)
            paths.append(_write(out_dir, name, rgb, distance, panorama_document(*distance.shape, scene=spec)))
        else:
            camera = scene.input_camera(height, width)
            views = scene.render(camera)
            paths.append(_write(out_dir, name, views.rgb[0], views.depth[0], perspective_document(camera, spec)))
    return paths
