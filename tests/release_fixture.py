"""Tiny random WorldStereo 2.0 weights in the real directory layouts: a Wan2.1-I2V diffusers folder (transformer,
vae, UMT5 text encoder, tokenizer, CLIP vision encoder + processor, UniPC scheduler) and the release folder with
``worldstereo-{camera,memory,memory-dmd}/{config.json, model.safetensors}``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

from worldstereo.models.paper.config import tiny_config
from worldstereo.models.release.config import (
    VARIANTS,
    DMDSchedule,
    ReleaseConfig,
    tiny_controlnet,
    variant_folder,
)
from worldstereo.models.release.transformer import ReleaseTransformer
from worldstereo.models.wan import wan_i2v_tiny

TEXT_DIM, IMAGE_DIM, CLIP_SIZE = 32, 16, 32
WORDS = ["a", "photo", "of", "the", "room", "garden", "street", "red", "blue", "car", "tree", "house", "view"]


def write_tokenizer(directory: Path) -> None:
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{word: i + 3 for i, word in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(directory))


def write_wan(root: Path, seed: int = 0) -> Path:
    """The Wan2.1-I2V diffusers layout with tiny random components."""
    torch.manual_seed(seed)
    WanTransformer3DModel(**wan_i2v_tiny(TEXT_DIM, IMAGE_DIM)).save_pretrained(str(root / "transformer"))
    AutoencoderKLWan(**dict(tiny_config().vae)).save_pretrained(str(root / "vae"))
    umt5 = UMT5Config(vocab_size=len(WORDS) + 3, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    UMT5EncoderModel(umt5).save_pretrained(str(root / "text_encoder"))
    write_tokenizer(root / "tokenizer")
    clip = CLIPVisionConfig(hidden_size=IMAGE_DIM, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                            image_size=CLIP_SIZE, patch_size=8, projection_dim=IMAGE_DIM)
    CLIPVisionModel(clip).save_pretrained(str(root / "image_encoder"))
    CLIPImageProcessorPil(size={"shortest_edge": CLIP_SIZE}, crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE}
                          ).save_pretrained(str(root / "image_processor"))
    UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                            num_train_timesteps=1000).save_pretrained(str(root / "scheduler"))
    return root


def release_config(variant: str) -> ReleaseConfig:
    memory = variant != "camera"
    return ReleaseConfig(
        variant=variant,  # type: ignore[arg-type]
        base_model="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        controlnet=tiny_controlnet(memory),
        negative_prompt="blurry, static",
        dmd=DMDSchedule(250.0, 1000.0, 5.0, 2) if variant == "memory-dmd" else None,
    )


def write_release(root: Path, wan: Path, seed: int = 1) -> Path:
    """The three variant folders; each ``model.safetensors`` holds the control weights and one backbone block
    (a partial fine-tune, as released)."""
    wan_config = json.loads((wan / "transformer" / "config.json").read_text())
    for variant in VARIANTS:
        torch.manual_seed(seed)
        config = release_config(variant)
        model = ReleaseTransformer(wan_config, config.controlnet, memory=config.memory)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "proj_out" in name or "mask_zero_proj" in name or name.startswith("camera_embedding.4"):
                    parameter.normal_(std=0.02)  # trained read-outs are no longer zero
        overlay = {
            key: value.contiguous() for key, value in model.state_dict().items()
            if key.startswith(("controlnet.", "camera_embedding.", "ref_index_embedding.", "blocks.0."))
        }
        folder = root / variant_folder(variant)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
        save_file(overlay, str(folder / "model.safetensors"))
    return root


def write_tiny_release(root: Path) -> tuple[Path, Path]:
    """``(wan_dir, release_dir)`` under ``root``."""
    wan = write_wan(root / "Wan2.1-I2V-14B-480P-Diffusers")
    return wan, write_release(root / "WorldStereo", wan)


# A stand-in for the HunyuanWorld-Mirror checkout (not available here): a tiny random conv net predicting
# depth and confidence, back-projected through the camera priors it is given, in the checkout's layout and
# call convention, so an image-only generator's scene runs to its end.
WORLDMIRROR_MODULE = '''
import json
from pathlib import Path

import torch
from safetensors.torch import load_file


class WorldMirror(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Conv2d(3, 2, 3, padding=1)

    @classmethod
    def from_pretrained(cls, directory):
        model = cls()
        json.loads((Path(directory) / "config.json").read_text())
        model.load_state_dict(load_file(str(Path(directory) / "model.safetensors")))
        return model

    def forward(self, views, cond_flags):
        images, c2w, K = views["img"][0], views["camera_poses"][0], views["camera_intrs"][0]
        out = self.net(images * 2 - 1)
        depth = 1.0 + torch.nn.functional.softplus(out[:, 0])
        n, h, w = depth.shape
        y, x = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        pixels = torch.stack([x, y, torch.ones_like(x)], -1).reshape(-1, 3)
        rays = pixels @ torch.linalg.inv(K).transpose(1, 2)
        local = rays * depth.reshape(n, -1, 1)
        points = local @ c2w[:, :3, :3].transpose(1, 2) + c2w[:, None, :3, 3]
        return {"pts3d": points.reshape(1, n, h, w, 3), "pts3d_conf": torch.sigmoid(out[:, 1])[None],
                "depth": depth[None, ..., None], "camera_poses": c2w[None], "camera_intrs": K[None]}
'''


def write_worldmirror_checkout(root: Path) -> Path:
    module = root / "src" / "models" / "models" / "worldmirror.py"
    module.parent.mkdir(parents=True, exist_ok=True)
    module.write_text(WORLDMIRROR_MODULE)
    (root / "ckpts").mkdir(exist_ok=True)
    (root / "ckpts" / "config.json").write_text("{}")
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 2, 3, padding=1)
    save_file({f"net.{k}": v for k, v in net.state_dict().items()}, str(root / "ckpts" / "model.safetensors"))
    return root
