"""Per-scene text and image conditioning of Wan2.1-I2V (RELEASED_MODEL §7), from the Wan diffusers directory.

Text: UMT5 over 512 tokens (padding, truncation, special tokens), positions past the prompt zeroed. Image: CLIP
vision penultimate hidden states of the start frame, preprocessed as released (``do_rescale=False`` on 0-255
pixels, then CLIP's mean/std).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPVisionModel, UMT5EncoderModel

from worldstereo.models.wan import WAN_TEXT_TOKENS


def clean_prompt(text: str) -> str:
    """Double HTML unescape and whitespace collapse, as the release cleans prompts."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


class TextEncoder:
    """UMT5 encoder + tokenizer from ``wan/text_encoder`` and ``wan/tokenizer`` (float32)."""

    def __init__(self, wan_dir: Path, device: torch.device | str = "cpu") -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(str(wan_dir / "tokenizer"))
        self.model = UMT5EncoderModel.from_pretrained(str(wan_dir / "text_encoder"), dtype=torch.float32)
        self.model.encoder.embed_tokens = self.model.shared  # the input embedding is the shared table
        self.model.eval().requires_grad_(False).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> Tensor:
        """``[B, 512, d_model]`` float32 on the CPU; token positions after each prompt are zero."""
        tokens = self.tokenizer(
            [clean_prompt(p) for p in prompts], padding="max_length", max_length=WAN_TEXT_TOKENS, truncation=True,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )
        mask = tokens.attention_mask.to(self.device)
        hidden = self.model(tokens.input_ids.to(self.device), attention_mask=mask).last_hidden_state
        return (hidden * mask[..., None].to(hidden.dtype)).float().cpu()


class ImageEncoder:
    """CLIP vision model from ``wan/image_encoder`` and its processor from ``wan/image_processor``."""

    def __init__(self, wan_dir: Path, device: torch.device | str = "cpu") -> None:
        self.processor = CLIPImageProcessorPil.from_pretrained(str(wan_dir / "image_processor"), do_rescale=False)
        self.model = CLIPVisionModel.from_pretrained(str(wan_dir / "image_encoder"), dtype=torch.float32)
        self.model.eval().requires_grad_(False).to(device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def encode(self, image: Tensor) -> Tensor:
        """``image [H, W, 3]`` in [0, 1] (the resized start frame) → penultimate hidden states ``[K, hidden]``."""
        pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        inputs = self.processor(images=Image.fromarray(np.ascontiguousarray(pixels)), return_tensors="pt")
        values = inputs.pixel_values.to(self.device, torch.float32)
        hidden = self.model(pixel_values=values, output_hidden_states=True).hidden_states[-2]
        return hidden[0].float().cpu()
