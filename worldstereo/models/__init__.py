"""WorldStereo video models on diffusers' Wan2.1-I2V classes: the released 2.0 variants (``release/``) and the
paper's architecture (camera ControlNet (GGM) + SSM branch), with their samplers."""

from worldstereo.models.paper.camera_controlnet import CameraControlNet
from worldstereo.models.paper.conditioning import CameraGuidance, Conditioning, StereoMemory, build_conditioning
from worldstereo.models.paper.config import BranchConfig, WorldStereoConfig, full_config, tiny_config
from worldstereo.models.paper.model import WorldStereoModel
from worldstereo.models.paper.ssm_branch import SpatialStereoMemory
from worldstereo.models.paper.transformer import WorldStereoTransformer
from worldstereo.models.release.config import ControlNetConfig, ReleaseConfig
from worldstereo.models.release.model import KeyframeClip, ReleaseModel
from worldstereo.models.release.transformer import ReleaseTransformer
from worldstereo.models.samplers import DMDSampler, FlowMatchingSampler, UniPCSampler

__all__ = [
    "BranchConfig",
    "CameraControlNet",
    "CameraGuidance",
    "Conditioning",
    "ControlNetConfig",
    "DMDSampler",
    "FlowMatchingSampler",
    "KeyframeClip",
    "ReleaseConfig",
    "ReleaseModel",
    "ReleaseTransformer",
    "SpatialStereoMemory",
    "StereoMemory",
    "UniPCSampler",
    "WorldStereoConfig",
    "WorldStereoModel",
    "WorldStereoTransformer",
    "build_conditioning",
    "full_config",
    "tiny_config",
]
