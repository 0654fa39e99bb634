"""The frozen Wan backbone with the camera and SSM branches added after their matching backbone blocks."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import torch
from diffusers import WanTransformer3DModel
from torch import Tensor, nn

from worldstereo.errors import ConfigurationError
from worldstereo.models.paper.branch import Residual
from worldstereo.models.paper.camera_controlnet import CameraControlNet
from worldstereo.models.paper.conditioning import Conditioning
from worldstereo.models.paper.ssm_branch import SpatialStereoMemory


class _Injection:
    """Adds each branch's residuals after their backbone blocks, advancing every branch one block at a time
    (branch block ``i`` runs just before it is needed, so one residual per branch is alive at once)."""

    def __init__(self, streams: list[Iterator[Residual]]) -> None:
        self._streams = streams
        self._pending = [next(stream, None) for stream in streams]

    def after_block(self, index: int, _module: nn.Module, _args: tuple, hidden: Tensor) -> Tensor:
        for i, stream in enumerate(self._streams):
            residual = self._pending[i]
            if residual is not None and residual.layer == index:
                hidden = residual.add_to(hidden)
                self._pending[i] = next(stream, None)
        return hidden


class WorldStereoTransformer(nn.Module):
    """Velocity model: Wan2.1-I2V backbone (unchanged forward) + camera ControlNet + SSM branch.

    The backbone runs its own ``forward``; forward hooks on its blocks add the branch residuals, so with
    zero-initialised branches the output is the backbone's, bit for bit.
    """

    def __init__(
        self,
        backbone: WanTransformer3DModel,
        camera: CameraControlNet | None = None,
        ssm: SpatialStereoMemory | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.camera = camera
        self.ssm = ssm
        depth = len(backbone.blocks)
        for name, branch in (("camera", camera), ("ssm", ssm)):
            if branch is not None and branch.trunk.inject_layers[-1] >= depth:
                raise ConfigurationError(
                    f"{name} branch injects after block {branch.trunk.inject_layers[-1]}, backbone has {depth}"
                )

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.dtype

    def forward(
        self, latents: Tensor, timestep: Tensor, prompt_embeds: Tensor, conditioning: Conditioning
    ) -> Tensor:
        """``latents [B, z, T, h, w]``, ``timestep [B]`` (0..1000), ``prompt_embeds [B, 512, text_dim]`` → velocity
        ``[B, z, T, h, w]`` (float32). The conditioning (batch 1) is shared by the ``B`` samples."""
        dtype, batch = self.dtype, latents.shape[0]

        def shared(x: Tensor) -> Tensor:
            return x.expand(batch, *x.shape[1:])

        condition = shared(conditioning.image_condition)  # [frame mask; first-frame latents]
        image_embeds = None if conditioning.image_embeds is None else shared(conditioning.image_embeds).to(dtype)
        prompt_embeds = prompt_embeds.to(dtype)
        use_camera = self.camera is not None and conditioning.camera is not None
        use_memory = self.ssm is not None and conditioning.memory is not None
        streams = []
        if use_camera or use_memory:
            temb, _, text, image = self.backbone.condition_embedder(timestep, prompt_embeds, image_embeds)
            context = text if image is None else torch.cat([image, text], dim=1)
            if use_camera:
                guidance = conditioning.camera
                frame_mask = condition[:, : -latents.shape[1]]
                control = torch.cat([latents, frame_mask, shared(guidance.render_latents)], dim=1)
                streams.append(self.camera.residuals(control, shared(guidance.camera_condition), temb, context))
            if use_memory:
                memory = conditioning.memory
                targets = latents.index_select(2, memory.frames)
                references, pointmaps = shared(memory.reference_latents), shared(memory.pointmap_latents)
                streams.append(self.ssm.residuals(targets, references, pointmaps, memory.frames, temb, context))
        injection = _Injection(streams)
        hooks = [
            block.register_forward_hook(partial(injection.after_block, index))
            for index, block in enumerate(self.backbone.blocks)
        ]
        try:
            hidden = torch.cat([latents, condition], dim=1).to(dtype)
            velocity = self.backbone(hidden, timestep, prompt_embeds, image_embeds, return_dict=False)[0]
        finally:
            for hook in hooks:
                hook.remove()
        return velocity.float()
