"""WorldStereo: camera-guided video generation with geometric memories, then 3D reconstruction."""

__version__ = "0.1.0"
