"""Trajectory planners: ``explore`` looks into what the cache lacks, stays in free space, and its choices are kept in
the scene's state and made again by a resumed scene."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from worldstereo.config import Settings, SplatSettings, StorageSettings, TrajectorySettings
from worldstereo.evaluation.coverage import coverage_curve
from worldstereo.evaluation.ground_truth import reachable_surface, visible_surface
from worldstereo.evaluation.pointcloud_metrics import tau_from_extent
from worldstereo.geometry.camera import Camera, look_at
from worldstereo.pipeline import scene as stages
from worldstereo.pipeline.local import read_local_input
from worldstereo.pipeline.registry import make_backends
from worldstereo.pipeline.runner import run_scene
from worldstereo.planning import Choice, ExplorePlanner, Origin, Planned, PlanInput
from worldstereo.planning.candidates import candidates, hole_targets
from worldstereo.planning.explore import explore_grid
from worldstereo.storage.factory import open_store
from worldstereo.storage.keys import output_key
from worldstereo.synthetic import make_scene
from worldstereo.synthetic.samples import write_samples
from worldstereo.synthetic.scenes import SyntheticScene, _Layout

# a 6 x 6 x 3 m room (z up) split by a partition along y = 0.0..0.1 from the x = -3 wall to x = 1: the alcove
# behind it (y > 0.1, x < 1) is hidden from the input camera, which looks along the partition from the far side
ALCOVE = ((-3.0, 0.1), (1.0, 3.0))  # x and y ranges of the alcove's floor


def _alcove_scene() -> SyntheticScene:
    layout = _Layout(np.random.default_rng(0))
    layout.box((-3.0, -3.0, 0.0), (3.0, 3.0, 3.0), hollow=True)
    layout.box((-3.0, 0.0, 0.0), (1.0, 0.1, 3.0))
    geometry, appearance = layout.build()
    return SyntheticScene("alcove", "room", 0, geometry, appearance, (2.2, -2.5, 1.5), (-2.5, -0.5, 1.2),
                          ((-3.0, -3.0, 0.0), (3.0, 3.0, 3.0)))


def _alcove_plan() -> tuple[SyntheticScene, PlanInput]:
    """The input view, and the main room seen all around from the input's position (turned about the vertical,
    tilted up and down): what is left unexplored is the alcove."""
    scene = _alcove_scene()
    camera = scene.input_camera(48, 80)
    eye = camera.centers[0]
    angles = torch.deg2rad(torch.tensor([90.0, 180.0, 270.0], dtype=torch.float64))
    aims = [torch.stack([torch.cos(a), torch.sin(a), torch.tensor(0.0, dtype=torch.float64)]) for a in angles]
    aims += [torch.tensor([-0.35, 0.0, z], dtype=torch.float64) for z in (1.0, -1.0)]
    around = Camera(camera.K.expand(len(aims), 3, 3), look_at(eye, eye + torch.stack(aims), torch.tensor([0.0, 0, 1])
                                                             .to(eye)), camera.height, camera.width)
    views = Camera.cat([camera, around])
    depth = scene.render(views).depth
    seen = views.backproject(torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth)))[torch.isfinite(depth)]
    median = float(depth[0][torch.isfinite(depth[0])].median())
    plan = PlanInput(seen.float(), [Origin("", camera, depth[0], 0)], [], [views], [], median)
    return scene, plan


def _alcove_share(scene: SyntheticScene, cameras) -> float:
    """The largest share of a view's pixels that land on the alcove's floor or walls."""
    views = scene.render(cameras.to(dtype=torch.float64))
    points = cameras.to(dtype=torch.float64).backproject(torch.where(torch.isfinite(views.depth), views.depth,
                                                                      torch.zeros_like(views.depth)))
    (x0, x1), (y0, y1) = ALCOVE
    inside = (points[..., 0] < x1 - 0.05) & (points[..., 1] > y0 + 0.05) & torch.isfinite(views.depth)
    return float(inside.flatten(1).float().mean(1).amax())


SETTINGS = TrajectorySettings(planner="explore", num_frames=9, max_trajectories=8)


def _explore(scene: SyntheticScene, plan: PlanInput, count: int) -> list[Choice]:
    """``count`` choices, each path's true views merged into the cache before the next choice (an oracle scene)."""
    choices, points = [], plan.points
    for _ in range(count):
        choice = ExplorePlanner().next(plan, SETTINGS)
        assert choice is not None
        choices.append(choice)
        cameras = choice.trajectory.cameras.to(dtype=torch.float64)
        depth = scene.render(cameras).depth
        seen = cameras.backproject(torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth)))
        points = torch.cat([points, seen[torch.isfinite(depth)].to(points)])
        end = Origin(choice.name, cameras[len(cameras) - 1:], None, None)
        plan = replace(plan, points=points, ends=[*plan.ends, end], views=[*plan.views, cameras],
                       history=[*plan.history, Planned(choice.name, choice.trajectory, True)])
    return choices


def test_explore_looks_into_the_hidden_alcove():
    scene, plan = _alcove_plan()
    assert _alcove_share(scene, scene.input_camera(48, 80)) == 0.0
    choices = _explore(scene, plan, 3)
    first = choices[0]
    assert first.score > SETTINGS.min_gain and len(first.runners_up) == 5
    assert all(first.score >= r.score for r in first.runners_up)
    shares = [_alcove_share(scene, c.trajectory.cameras) for c in choices]
    print("\nalcove share of each path's best view:", [(c.label, round(s, 3)) for c, s in zip(choices, shares)])
    assert max(shares) >= 0.2


def test_a_path_through_a_wall_is_rejected():
    scene, plan = _alcove_plan()
    grid = explore_grid(plan, SETTINGS)
    eye = plan.starts[0].camera.centers[0].to(plan.points)
    steps = torch.linspace(0, 1, 9, dtype=eye.dtype)[:, None]
    line = lambda goal: eye + steps * (torch.tensor(goal).to(eye) - eye)  # noqa: E731
    assert not grid.collides(line((1.5, -1.5, 1.5)))  # ahead, inside the room
    assert grid.collides(line((-1.0, 1.5, 1.5)))  # through the partition into the alcove
    assert grid.collides(line((2.2, -4.0, 1.5)))  # through the room's wall behind the camera
    found = candidates(plan.starts, hole_targets(grid, 6, 8), grid, plan.median_depth, SETTINGS)
    assert found
    for candidate in found:  # no kept path crosses the partition's plane between x = -3 and x = 1
        eyes = candidate.trajectory.cameras.centers.double()
        a, b = eyes[:-1], eyes[1:]
        crossing = (a[:, 1] - 0.05) * (b[:, 1] - 0.05) < 0
        s = (0.05 - a[:, 1]) / (b[:, 1] - a[:, 1])
        x = a[:, 0] + s * (b[:, 0] - a[:, 0])
        assert not (crossing & (x < 1.0)).any(), candidate.label


def test_no_path_leaves_into_space_no_view_looked_through():
    """Seen from the input alone, the space behind the camera is unknown (a wall may stand there unseen): a path
    may not go into it further than ``slack_ratio`` x the median depth from carved space."""
    scene, plan = _alcove_plan()
    alone = replace(plan, views=[plan.starts[0].camera])
    grid = explore_grid(alone, SETTINGS)
    eye = plan.starts[0].camera.centers[0].to(plan.points)
    behind = -plan.starts[0].camera.c2w[0, :3, 2].to(eye)  # the input camera looks along +z
    slack = SETTINGS.explore.slack_ratio * plan.median_depth
    steps = torch.linspace(0, 1, 9, dtype=eye.dtype)[:, None]
    assert not grid.collides(eye + steps * 0.5 * slack * behind)
    assert grid.collides(eye + steps * (slack + 3 * grid.voxel) * behind)


def test_rays_go_on_through_unknown_space_and_report_where_they_leave_it():
    """``march(..., through=UNKNOWN)``: a ray passes free and unknown voxels, stops at the first other one and
    reports the last unknown voxel it crossed; one that leaves the grid meets ``BEYOND``."""
    from worldstereo.planning.occupancy import BEYOND, FREE, OCCUPIED, UNKNOWN, Occupancy, march

    rows = [[FREE, UNKNOWN, UNKNOWN, FREE, OCCUPIED, UNKNOWN], [FREE, FREE, UNKNOWN, UNKNOWN, FREE, FREE]]
    state = torch.tensor(rows, dtype=torch.uint8).T[..., None]  # [x = 6, y = 2, z = 1]: flat id x * 2 + y
    grid = Occupancy(torch.zeros(3, dtype=torch.float64), 1.0, state, state == FREE)
    origins = torch.tensor([[0.0, 0.5, 0.5], [0.0, 1.5, 0.5]], dtype=torch.float64)
    directions = torch.tensor([[1.0, 0.0, 0.0]] * 2, dtype=torch.float64)
    first, met, last = march(grid, origins, directions, 10.0, through=UNKNOWN)
    assert met.tolist() == [OCCUPIED, BEYOND] and first[0] == 4 * 2
    assert last.tolist() == [2 * 2, 3 * 2 + 1]
    first, met, last = march(grid, origins, directions, 10.0)  # free space only: the first unknown voxel stops it
    assert met.tolist() == [UNKNOWN, UNKNOWN] and first.tolist() == [1 * 2, 2 * 2 + 1] and last.tolist() == [-1, -1]


def _settings(root: Path) -> Settings:
    return Settings(storage=StorageSettings(backend="local", root=root), generator="oracle", resolution_scale=0.25,
                    trajectory=TrajectorySettings(planner="explore", num_frames=5, max_trajectories=3),
                    splat=SplatSettings(enabled=False))


def _run(settings: Settings, image: Path, fail_at: str | None = None) -> stages.SceneContext:
    store = open_store(settings.storage)
    ctx = stages.SceneContext(store, settings.storage.work_bucket, "room", settings)
    depth, generator, reconstructor = make_backends(settings)

    def generate(request):
        if request.trajectory == fail_at:
            raise RuntimeError("lost worker")
        return generator.generate(request)

    for _ in run_scene(ctx, read_local_input(image, settings), depth.estimate, generate, reconstructor.reconstruct):
        pass
    return ctx


@pytest.mark.slow
def test_choices_are_recorded_and_a_resumed_scene_makes_them_again(tmp_path):
    image = next(p for p in write_samples(tmp_path / "samples") if p.stem == "room")
    undisturbed = _run(_settings(tmp_path / "a"), image)
    names = stages.trajectory_names(undisturbed)
    assert len(names) == 3 and all(n.startswith(f"x{k}_") for k, n in enumerate(names, start=1))
    final = undisturbed.states.load(names[-1])
    assert [c["name"] for c in final.choices] == names
    for choice in final.choices:
        assert choice["runners_up"] and all(choice["score"] >= r["score"] for r in choice["runners_up"])
    records = {r.trajectory: r.metrics for r in undisturbed.records.records("room") if r.stage == "trajectory"}
    assert records[names[0]]["next_score"] == final.choices[1]["score"]

    resumed = _settings(tmp_path / "b")
    with pytest.raises(RuntimeError, match="lost worker"):
        _run(resumed, image, fail_at=names[1])
    ctx = _run(resumed, image)
    assert stages.trajectory_names(ctx) == names
    assert ctx.states.load(names[-1]).choices == final.choices
    get = lambda c, *k: c.store.get_bytes(c.bucket, output_key("room", *k))  # noqa: E731
    assert get(ctx, "exports", "cameras.json") == get(undisturbed, "exports", "cameras.json")
    exported = get(ctx, "exports", "cameras.json").decode()
    assert all(f'"{name}"' in exported for name in names)  # ordinary trajectories in the exports


def test_coverage_truth_is_the_surface_reachable_from_free_space():
    scene = make_scene("object")
    truth = reachable_surface(scene, 20_000)
    (lo, hi) = (torch.tensor(c, dtype=torch.float64) for c in scene.free_space)
    assert len(truth) == 20_000 and ((truth >= lo - 1e-6) & (truth <= hi + 1e-6)).all()
    pedestal_back = (truth[:, 1] > 0.25) & (truth[:, 1] < 0.5) & (truth[:, 0].abs() < 0.2) & (truth[:, 2] > 0.05)
    assert pedestal_back.any()  # the object's far side, which no default camera sees, is in the truth
    input_view = scene.render(scene.input_camera(60, 96)).depth
    cloud = visible_surface([scene.input_camera(60, 96)], [input_view])
    steps = coverage_curve(torch.cat([cloud, truth[:10_000]]), [("init", len(cloud)), ("half", len(cloud) + 10_000)],
                           truth, tau_from_extent(truth))
    assert steps[0].completeness < 0.5 < steps[1].completeness and steps[1].k == 1
