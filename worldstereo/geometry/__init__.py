"""Cameras, trajectories, 3D cache rendering, alignment and panoramas: pure tensor maths."""

from worldstereo.geometry.camera import Camera, look_at, rigid_inverse

__all__ = ["Camera", "look_at", "rigid_inverse"]
