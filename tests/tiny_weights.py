"""Tiny randomly initialised instances of the real model classes, saved in their hub layouts.

Each writer builds the backend's real class from a tiny configuration, fixes the output layer where a
random one would make no geometric sense (DepthPro's field of view and inverse depth, so the focal
length and depth are known), and saves it the way the published checkpoint is laid out.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

DEPTH_PRO_FOV_DEG = 55.0  # what the tiny DepthPro's field-of-view head answers
DEPTH_PRO_INVERSE = 0.5  # its canonical inverse depth: metric depth f / (0.5 W)
DEPTH_PRO_SIZE = 64
DA3_PRESET = "da3-small"


def _dinov2(**update) -> dict:
    return {"model_type": "dinov2", "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 32, **update}


def write_depth_pro(directory: Path, *, random_depth: bool = False) -> Path:
    """``apple/DepthPro-hf`` layout: config.json, model.safetensors, preprocessor_config.json. The depth head gives a
    constant canonical inverse depth, unless ``random_depth`` (then its random output spans DepthPro's whole clamp)."""
    from transformers import DepthProConfig, DepthProForDepthEstimation

    torch.manual_seed(0)
    encoder = _dinov2(patch_size=4, image_size=DEPTH_PRO_SIZE // 2)
    config = DepthProConfig(
        patch_size=DEPTH_PRO_SIZE // 2, fusion_hidden_size=16, intermediate_hook_ids=[1, 0],
        intermediate_feature_dims=[8, 8], scaled_images_ratios=[0.5, 1.0], scaled_images_overlap_ratios=[0.0, 0.5],
        scaled_images_feature_dims=[16, 8], use_fov_model=True, num_fov_head_layers=1,
        image_model_config=encoder, patch_model_config=encoder, fov_model_config=encoder)
    model = DepthProForDepthEstimation(config).eval()
    with torch.no_grad():
        for layer, value in ((model.head.layers[-2], DEPTH_PRO_INVERSE), (model.fov_model.head.layers[-1], DEPTH_PRO_FOV_DEG)):
            if random_depth and layer is model.head.layers[-2]:
                continue
            layer.weight.zero_()
            layer.bias.fill_(value)
    model.save_pretrained(directory)
    processor = {"image_processor_type": "DepthProImageProcessor", "size": {"height": DEPTH_PRO_SIZE, "width": DEPTH_PRO_SIZE},
                 "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    (directory / "preprocessor_config.json").write_text(json.dumps(processor))
    return directory


def write_depth_anything_metric(directory: Path, *, metric: bool = True) -> Path:
    """``depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf`` layout (``metric=False``: a relative checkpoint)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

    torch.manual_seed(0)
    backbone = _dinov2(num_hidden_layers=4, patch_size=14, image_size=28, out_indices=[1, 2, 3, 4],
                       reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, fusion_hidden_size=16, head_hidden_size=8,
                                 neck_hidden_sizes=[8, 8, 16, 16], reassemble_hidden_size=16,
                                 depth_estimation_type="metric" if metric else "relative", max_depth=20)
    DepthAnythingForDepthEstimation(config).eval().save_pretrained(directory)
    processor = {"image_processor_type": "DPTImageProcessor", "size": {"height": 56, "width": 56},
                 "keep_aspect_ratio": True, "ensure_multiple_of": 14,
                 "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    (directory / "preprocessor_config.json").write_text(json.dumps(processor))
    return directory


def write_depth_anything_3(directory: Path) -> Path:
    """``depth-anything/DA3-SMALL`` layout: config.json naming the preset, model.safetensors of the wrapper."""
    from depth_anything_3.cfg import create_object, load_config
    from depth_anything_3.registry import MODEL_REGISTRY
    from safetensors.torch import save_model

    from worldstereo.pipeline.reconstructors.depth_anything_3 import hub_wrapper

    torch.manual_seed(0)
    network = create_object(load_config(MODEL_REGISTRY[DA3_PRESET]))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_name": DA3_PRESET}))
    save_model(hub_wrapper(network), str(directory / "model.safetensors"))  # as the hub mixin saves it
    return directory


def write_moge(directory: Path) -> Path:
    """A MoGe-2 ``model.pt`` (``{'model_config', 'model'}``) of ``moge.model.v2.MoGeModel`` with a ViT-S encoder and
    tiny heads; its mask head says every pixel is a surface."""
    from moge.model.v2 import MoGeModel

    torch.manual_seed(0)

    def stack(dim_in: list, dim_out: list) -> dict:
        return {"dim_in": dim_in, "dim_res_blocks": [32] * 5, "dim_out": dim_out, "resamplers": ["bilinear"] * 4,
                "num_res_blocks": 1}

    config = {
        "encoder": {"backbone": "dinov2_vits14", "intermediate_layers": 4, "dim_out": 32},
        "neck": stack([34, 2, 2, 2, 2], [None] * 5),
        "points_head": stack([32] * 5, [None] * 4 + [3]),
        "mask_head": stack([32] * 5, [None] * 4 + [1]),
        "scale_head": {"dims": [384, 16, 1]},
        "remap_output": "exp",
        "num_tokens_range": [4, 16],
    }
    model = MoGeModel(**config).eval()
    with torch.no_grad():
        model.mask_head.output_blocks[-1].bias.fill_(10.0)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": config, "model": model.state_dict()}, directory / "model.pt")
    return directory
