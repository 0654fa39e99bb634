"""WorldStereo video models on diffusers' Wan2.1-I2V classes: the released 2.0 variants (``release_*``) and the
paper's architecture (camera ControlNet (GGM) + SSM branch), with their samplers."""

from worldstereo.models.camera_controlnet import CameraControlNet
from worldstereo.models.conditioning import CameraGuidance, Conditioning, StereoMemory, build_conditioning
from worldstereo.models.config import BranchConfig, WorldStereoConfig, full_config, tiny_config
from worldstereo.models.model import WorldStereoModel
from worldstereo.models.release_config import ControlNetConfig, ReleaseConfig
from worldstereo.models.release_model import KeyframeClip, ReleaseModel
from worldstereo.models.release_transformer import ReleaseTransformer
from worldstereo.models.samplers import DMDSampler, FlowMatchingSampler, UniPCSampler
from worldstereo.models.ssm_branch import SpatialStereoMemory
from worldstereo.models.worldstereo_transformer import WorldStereoTransformer

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
