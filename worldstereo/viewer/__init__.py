"""The viser view of a scene's outputs: splats (or the fused cloud), the mesh, trajectories, the input image."""
