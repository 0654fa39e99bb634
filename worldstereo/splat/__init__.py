"""3D Gaussian splats of a scene: the model, the rasterizer backends behind one call, training, writers, the mesh."""
