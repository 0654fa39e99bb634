"""The viser scene of a scene's outputs: splats (or the cloud), the mesh on a toggle, each trajectory's frustums
in its own colour with its keyframes, the input image in the panel."""

from __future__ import annotations

import numpy as np
import viser
import viser.transforms as vtf

from worldstereo.viewer.outputs import SceneOutputs

# one colour per trajectory (Tableau 10)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def _nearest_axis(up: np.ndarray) -> str:
    axis = int(np.abs(up).argmax())
    return ("+" if up[axis] > 0 else "-") + "xyz"[axis]


def build_scene(server: viser.ViserServer, outputs: SceneOutputs) -> None:
    """Fill ``server``'s scene and panel from ``outputs``."""
    extent = float(np.linalg.norm(np.percentile(outputs.points, 98, 0) - np.percentile(outputs.points, 2, 0)))
    server.scene.set_up_direction(_nearest_axis(outputs.up))
    if outputs.splats is not None:
        s = outputs.splats
        server.scene.add_gaussian_splats("/splats", centers=s.centers, covariances=s.covariances, rgbs=s.rgbs,
                                         opacities=s.opacities)
    else:
        server.scene.add_point_cloud("/cloud", outputs.points, outputs.colors, point_size=extent / 500)
    if outputs.mesh is not None:
        vertices, faces, colors = outputs.mesh
        mesh = server.scene.add_mesh_simple("/mesh", vertices, faces, visible=False)
        if colors is not None:
            import trimesh

            mesh.remove()
            mesh = server.scene.add_mesh_trimesh("/mesh", trimesh.Trimesh(vertices, faces, vertex_colors=colors,
                                                                          process=False), visible=False)
        toggle = server.gui.add_checkbox("Mesh", initial_value=False)

        @toggle.on_update
        def _(_event) -> None:
            mesh.visible = toggle.value

    scale = extent / 40
    for index, trajectory in enumerate(outputs.trajectories):
        color = PALETTE[index % len(PALETTE)]
        fov = 2 * np.arctan(trajectory.height / (2 * trajectory.K[0, 1, 1]))
        for frame, c2w in enumerate(trajectory.c2w):
            image = trajectory.keyframes.get(frame)
            server.scene.add_camera_frustum(
                f"/trajectories/{trajectory.name}/{frame:03d}", fov=float(fov),
                aspect=trajectory.width / trajectory.height, scale=scale * (1.5 if image is not None else 0.6),
                color=color, image=image, wxyz=vtf.SO3.from_matrix(c2w[:3, :3]).wxyz, position=c2w[:3, 3],
                thickness=scale / 15)
        server.gui.add_markdown(f"<span style='color: rgb{color}'>■</span> {trajectory.name}: "
                                f"{len(trajectory.c2w)} cameras, {len(trajectory.keyframes)} keyframes")
    if outputs.input_image is not None:
        server.gui.add_image(outputs.input_image, label="input")
    if outputs.trajectories:
        start = outputs.trajectories[0].c2w[0]
        server.initial_camera.position = tuple(start[:3, 3] - start[:3, 2] * extent * 0.3)
        server.initial_camera.look_at = tuple(start[:3, 3] + start[:3, 2] * extent * 0.3)
        server.initial_camera.up = tuple(outputs.up)


def serve(outputs: SceneOutputs, host: str = "127.0.0.1", port: int = 8080) -> viser.ViserServer:
    """A running viser server showing ``outputs`` (its own threads; call ``stop()`` to end it)."""
    server = viser.ViserServer(host=host, port=port, verbose=False)
    build_scene(server, outputs)
    return server
