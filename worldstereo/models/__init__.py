"""WorldStereo video model on diffusers' Wan2.1-I2V classes: camera ControlNet (GGM), SSM branch, samplers."""

from worldstereo.models.camera_controlnet import CameraControlNet
from worldstereo.models.conditioning import CameraGuidance, Conditioning, StereoMemory, build_conditioning
from worldstereo.models.config import BranchConfig, WorldStereoConfig, full_config, tiny_config
from worldstereo.models.model import WorldStereoModel
from worldstereo.models.samplers import DMDSampler, FlowMatchingSampler
from worldstereo.models.ssm_branch import SpatialStereoMemory
from worldstereo.models.worldstereo_transformer import WorldStereoTransformer

__all__ = [
    "BranchConfig",
    "CameraControlNet",
    "CameraGuidance",
    "Conditioning",
    "DMDSampler",
    "FlowMatchingSampler",
    "SpatialStereoMemory",
    "StereoMemory",
    "WorldStereoConfig",
    "WorldStereoModel",
    "WorldStereoTransformer",
    "build_conditioning",
    "full_config",
    "tiny_config",
]
