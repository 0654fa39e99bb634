"""Library commands of the ``worldstereo`` command line (orchestration commands are added in ``flows.cli``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="WorldStereo: single images and 360° panoramas to explorable 3D scenes.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures (and write them with --json).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

JsonOption = Annotated[Optional[Path], typer.Option("--json", help="Also write the result as JSON to this file.")]


def emit(result: dict, text: str, json_path: Path | None) -> None:
    typer.echo(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2, sort_keys=True))
        typer.echo(f"wrote {json_path}")


@app.command()
def config() -> None:
    """Print the effective settings (secrets masked) and which model weights are configured."""
    from worldstereo.config import load_settings
    from worldstereo.pipeline.weights import weights_report

    settings = load_settings()
    typer.echo(json.dumps(settings.model_dump(mode="json") | {"weights": weights_report(settings)}, indent=2))


@app.command()
def samples(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the sample inputs into.")],
    seed: int = 0,
) -> None:
    """Write synthetic perspective and panorama inputs (image + depth sidecar + camera JSON)."""
    from worldstereo.synthetic.samples import write_samples

    for path in write_samples(out_dir, seed=seed):
        typer.echo(str(path))


@app.command("upload")
def upload_command(
    images: Annotated[Optional[list[Path]], typer.Argument(help="Input images (their NAME.depth.npy / NAME.camera.json beside them go too) or folders of inputs and release scene folders (SCENE/image.png + prompt.json).")] = None,
    prefix: Annotated[str, typer.Option(help="Key prefix in the input bucket, e.g. drops/.")] = "",
    samples: Annotated[bool, typer.Option(help="Upload the bundled synthetic samples (under samples/ unless --prefix).")] = False,
    force: Annotated[bool, typer.Option(help="Upload images whose content is not of their extension too.")] = False,
) -> None:
    """Put images into the configured input bucket, sidecars first; the next batch registers them.

    An image whose content is not of its extension (e.g. a .png that is no PNG) is skipped with a warning
    unless --force."""
    from worldstereo.config import load_settings
    from worldstereo.errors import InvalidInputError
    from worldstereo.storage import open_store
    from worldstereo.storage.upload import upload_inputs, upload_tree
    from worldstereo.synthetic.upload import upload_samples

    if not images and not samples:
        raise typer.BadParameter("name images to upload, or pass --samples")
    settings = load_settings()
    try:
        keys = upload_samples(settings, prefix or "samples/") if samples else []
        store = open_store(settings.storage)
        folders = [p for p in images or [] if p.is_dir()]
        def warn(message: str) -> None:
            typer.echo(f"warning: {message}", err=True)

        files = [p for p in images or [] if not p.is_dir()]
        keys += upload_inputs(store, settings.storage.input_bucket, files, prefix, force=force, warn=warn)
        for folder in folders:
            keys += upload_tree(store, settings.storage.input_bucket, folder, prefix, force=force, warn=warn)
    except InvalidInputError as exc:
        raise typer.BadParameter(str(exc), param_hint="IMAGES") from exc
    for key in keys:
        typer.echo(f"{settings.storage.input_bucket}/{key}")


@app.command("catalog")
def catalog_command(
    status: Annotated[
        Optional[list[str]], typer.Option(help="Only scenes in this status (repeatable): pending, running, done, failed.")
    ] = None,
    json_path: JsonOption = None,
) -> None:
    """List the configured work bucket's scenes: status, attempts, input and the reason of each failure."""
    from worldstereo.config import load_settings
    from worldstereo.catalog import Catalog, SceneStatus
    from worldstereo.storage import open_store

    try:
        wanted = [SceneStatus(s) for s in status or SceneStatus]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--status") from exc
    settings = load_settings().storage
    entries = Catalog(open_store(settings), settings.work_bucket).by_status(*wanted)
    rows = [{"scene": e.scene_id, "status": str(e.status), "attempts": e.attempts, "input": e.input_key,
             "updated_at": e.updated_at.isoformat(timespec="seconds"), "error": e.error or ""} for e in entries]
    counts = {str(s): sum(row["status"] == s for row in rows) for s in wanted}
    lines = [f"{r['scene']:<28} {r['status']:<8} {r['attempts']:>3}  {r['input']}  {r['error']}".rstrip() for r in rows]
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f" in {settings.work_bucket}")
    emit({"scenes": rows, "counts": counts}, "\n".join(lines), json_path)


def _settings(**overrides: object):
    """Settings from the environment/YAML with command-line overrides applied (``None`` = not given), validated."""
    from pydantic import ValidationError

    from worldstereo.config import load_settings, with_overrides

    updates = {k: v for k, v in overrides.items() if v is not None}
    trajectory = {k: updates.pop(k) for k in ("num_frames", "preset_set", "planner", "max_trajectories")
                  if k in updates}
    if trajectory:
        updates["trajectory"] = trajectory
    try:
        return with_overrides(load_settings(), updates)
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc


def backend_help(kind: str) -> str:
    """The backend names of ``kind`` from the registry, for an option's help."""
    from worldstereo.pipeline.registry import names

    return " | ".join(names(kind))


@app.command("run-scene")
def run_scene_command(
    input_path: Annotated[Path, typer.Argument(help="Input image (sidecars NAME.depth.npy / NAME.camera.json beside it).")],
    out: Annotated[Path, typer.Option(help="Local store directory for the outputs.")] = Path("outputs"),
    generator: Annotated[Optional[str], typer.Option(help=backend_help("generator"))] = None,
    reconstructor: Annotated[Optional[str], typer.Option(help=backend_help("reconstructor"))] = None,
    depth: Annotated[Optional[str], typer.Option(help=backend_help("depth"))] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames per trajectory (paper: 81).")] = None,
    scale: Annotated[Optional[float], typer.Option(help="Working resolution as a fraction of the 480p bucket.")] = None,
    json_path: JsonOption = None,
) -> None:
    """Run (or resume) one scene end to end in this process."""
    from tqdm import tqdm

    from worldstereo.pipeline.local import local_scene_id, process_scene, read_local_input
    from worldstereo.storage.factory import open_store
    from worldstereo.storage.keys import outputs_prefix

    settings = _settings(generator=generator, reconstructor=reconstructor, depth_backend=depth,
                         num_frames=frames,
                         resolution_scale=scale, storage={"backend": "local", "root": out})
    scene = read_local_input(input_path, settings)
    scene_id = local_scene_id(input_path)
    with tqdm(desc=scene_id, unit="stage") as bar:
        def progress(event) -> None:
            bar.total = event.total
            bar.set_postfix_str(f"{event.trajectory or event.stage} {event.status}")
            bar.update(1)

        summary = process_scene(open_store(settings.storage), scene_id, scene, settings, progress)
    where = out / settings.storage.work_bucket / outputs_prefix(scene_id)
    emit(summary, f"scene {scene_id}: {summary['fused_points']} fused points -> {where}", json_path)


@app.command("plan")
def plan_command(
    input_path: Annotated[Path, typer.Argument(help="Input image (sidecars beside it) or a release scene folder (image.png + prompt.json).")],
    json_path: Annotated[Path, typer.Option("--json", help="Write each trajectory's cameras (w2c and K per pose) here.")],
    preset_set: Annotated[Optional[str], typer.Option(help="paper | release")] = None,
    depth: Annotated[Optional[str], typer.Option(help="Depth backend (default: the configured one).")] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames per trajectory (paper: 81).")] = None,
    scale: Annotated[Optional[float], typer.Option(help="Working resolution as a fraction of the 480p bucket.")] = None,
    png: Annotated[Optional[Path], typer.Option(help="Also draw the camera paths over the initial cache (top view PNG).")] = None,
    planner: Annotated[Optional[str], typer.Option(help="presets | explore (explore: its first choice and every candidate's score)")] = None,
) -> None:
    """Plan an input's trajectories (depth included) without generating: cameras as JSON, optionally a picture."""
    from worldstereo.pipeline.depth.surface import surface_depth
    from worldstereo.pipeline.local import local_scene_id, read_local_input
    from worldstereo.pipeline.plan_preview import plan_document, plan_png
    from worldstereo.pipeline.registry import make_backend
    from worldstereo.pipeline.scene import plan_scene

    if preset_set not in (None, "paper", "release"):
        raise typer.BadParameter("choose paper or release", param_hint="--preset-set")
    if planner not in (None, "presets", "explore"):
        raise typer.BadParameter("choose presets or explore", param_hint="--planner")
    settings = _settings(depth_backend=depth, num_frames=frames, resolution_scale=scale, preset_set=preset_set,
                         planner=planner)
    if input_path.is_dir():
        input_path = next((p for p in sorted(input_path.glob("image.*")) if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")),
                          input_path / "image.png")
    scene = read_local_input(input_path, settings)
    estimator = make_backend("depth", settings.depth_backend, settings)
    estimator.setup()
    state = plan_scene(settings, local_scene_id(input_path), scene,
                       surface_depth(settings, scene, estimator.estimate(scene)))
    document = plan_document(state, settings)
    if png is not None:
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(plan_png(state, document))
    names = ", ".join(f"{t['name']} ({len(t['w2c'])})" for t in document["trajectories"])
    scored = "".join(f"\n  {c['label']}: {c['score']:.4f}" for c in document.get("candidates", []))
    emit(document, f"{len(document['trajectories'])} trajectories: {names}" + (f"; wrote {png}" if png else "")
         + (f"\ncandidate scores (steradians of new surface):{scored}" if scored else ""), json_path)


@app.command("eval")
def eval_command(
    suite: Annotated[str, typer.Option(help="'synthetic' (bundled ground-truth scenes) or a dataset directory.")] = "synthetic",
    generator: Annotated[Optional[str], typer.Option(help=backend_help("generator"))] = None,
    reconstructor: Annotated[Optional[str], typer.Option(help=backend_help("reconstructor"))] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames per trajectory (paper: 81).")] = None,
    scale: Annotated[Optional[float], typer.Option(help="Working resolution as a fraction of the 480p bucket.")] = None,
    coverage: Annotated[bool, typer.Option(help="Also completeness and F1 of the cache after each trajectory against "
                                                "the surface reachable from free space (synthetic scenes).")] = False,
    planner: Annotated[Optional[str], typer.Option(help="presets | explore")] = None,
    trajectories: Annotated[Optional[int], typer.Option(help="Trajectories per scene (trajectory.max_trajectories).")] = None,
    json_path: JsonOption = None,
) -> None:
    """Run a suite through the pipeline and print the paper-style table (F1, AUC, RotErr, TransErr, ATE, PSNR, SSIM)."""
    import tempfile

    from worldstereo.evaluation.suite import dataset_cases, format_table, run_suite, summarize, synthetic_cases

    settings = _settings(generator=generator, reconstructor=reconstructor, num_frames=frames, resolution_scale=scale,
                         planner=planner, max_trajectories=trajectories)
    with tempfile.TemporaryDirectory() as tmp:
        cases = synthetic_cases(Path(tmp)) if suite == "synthetic" else dataset_cases(Path(suite))
        if not cases:
            raise typer.BadParameter(f"no scenes found in {suite} (expected SCENE/image.* + SCENE/gt.ply)")
        rows = list(run_suite(cases, settings, lambda row: typer.echo(f"{row.scene}: F1 {row.f1:.4f}", err=True),
                              coverage))
    result = summarize(rows)
    emit(result, format_table(rows, result), json_path)


@bench_app.command("coverage")
def bench_coverage(
    png: Annotated[Path, typer.Option(help="Where the plot goes.")] = Path("coverage.png"),
    json_path: JsonOption = None,
    frames: int = 21,
    scale: float = 0.25,
    trajectories: int = 8,
) -> None:
    """Completeness after k = 0..N trajectories of the presets (paper, release) and explore on the synthetic suite
    with the oracle generator, as a table and a PNG plot."""
    from worldstereo.evaluation.coverage_figure import coverage_curves, coverage_png

    settings = _settings(generator="oracle", num_frames=frames, resolution_scale=scale)
    settings = settings.model_copy(update={"splat": settings.splat.model_copy(update={"enabled": False})})
    curves = coverage_curves(settings, trajectories)
    png.write_bytes(coverage_png(curves))
    lines = [f"{scene:<10}{plan:<20}" + " ".join(f"{v:.3f}" for v in values)
             for scene, plans in curves.items() for plan, values in plans.items()]
    emit(curves, "\n".join(lines) + f"\nwrote {png}", json_path)


@bench_app.command("render")
def bench_render(
    json_path: JsonOption = None,
    points: int = 1_000_000,
    frames: int = 81,
    height: int = 480,
    width: int = 768,
    device: str = "cpu",
) -> None:
    """3D cache rendering throughput against a naive per-frame z-buffer."""
    from worldstereo.bench.render import format_report, run_render_benchmark

    result = run_render_benchmark(num_points=points, num_frames=frames, height=height, width=width, device=device)
    emit(result, format_report(result), json_path)


@bench_app.command("ssm")
def bench_ssm(
    json_path: JsonOption = None,
    pairs: int = 8,
    latent_height: int = 32,
    latent_width: int = 32,
    dim: int = 128,
    layers: int = 2,
    repeats: int = 3,
    device: str = "cpu",
) -> None:
    """SSM branch: attention restricted to each stitched pair (the paper) against joint attention."""
    from worldstereo.bench.ssm import format_report, run_ssm_benchmark

    result = run_ssm_benchmark(pairs=pairs, latent_height=latent_height, latent_width=latent_width, dim=dim,
                               num_layers=layers, repeats=repeats, device=device)
    emit(result, format_report(result), json_path)


@bench_app.command("dmd")
def bench_dmd(
    json_path: JsonOption = None,
    frames: int = 9,
    height: int = 64,
    width: int = 64,
    flow_steps: int = 40,
    dmd_steps: int = 4,
    guidance: float = 5.0,
    repeats: int = 3,
    device: str = "cpu",
) -> None:
    """Sampling: 4-step CFG-free DMD against flow matching with CFG, on the tiny model."""
    from worldstereo.bench.dmd import format_report, run_dmd_benchmark

    result = run_dmd_benchmark(frames=frames, height=height, width=width, flow_steps=flow_steps,
                               dmd_steps=dmd_steps, guidance=guidance, repeats=repeats, device=device)
    emit(result, format_report(result), json_path)


@bench_app.command("pipeline")
def bench_pipeline(
    json_path: JsonOption = None,
    frames: int = 81,
    scale: float = 1.0,
    device: str = "cpu",
    pointmaps: Annotated[bool, typer.Option(help="Also build SSM pointmaps (worldstereo-paper reads them).")] = False,
    repeats: Annotated[int, typer.Option(help="Runs of the scene; the medians are reported.")] = 1,
    path: Annotated[str, typer.Option(help="oracle | release (released generator's pre-processing, release "
                                           "memory rules, depth-anything-3 with a tiny network)")] = "oracle",
    planner: Annotated[str, typer.Option(help="presets | explore (its cost per choice is reported)")] = "presets",
    trajectories: Annotated[Optional[int], typer.Option(help="trajectory.max_trajectories")] = None,
) -> None:
    """Seconds per trajectory step and per export outside the model, and the planner's cost per choice, on the
    synthetic room."""
    from worldstereo.bench.pipeline import format_report, run_pipeline_benchmark

    if path not in ("oracle", "release"):
        raise typer.BadParameter(f"--path must be oracle or release, not {path!r}")
    if planner not in ("presets", "explore"):
        raise typer.BadParameter(f"--planner must be presets or explore, not {planner!r}")
    result = run_pipeline_benchmark(frames=frames, scale=scale, device=device, pointmaps=pointmaps, repeats=repeats,
                                    path=path, planner=planner, trajectories=trajectories)
    emit(result, format_report(result), json_path)


@bench_app.command("model")
def bench_model(
    json_path: JsonOption = None,
    variant: Annotated[str, typer.Option(help="camera | memory | memory-dmd")] = "memory-dmd",
    size: Annotated[str, typer.Option(help="tiny | full (Wan2.1-I2V-14B + the released ControlNet)")] = "tiny",
    device: str = "cpu",
    frames: int = 21,
    height: Annotated[Optional[int], typer.Option(help="Default 480 (full) or 96 (tiny).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Default 832 (full) or 160 (tiny).")] = None,
    references: int = 8,
    steps: Annotated[Optional[int], typer.Option(help="Sampler steps (default: the variant's).")] = None,
) -> None:
    """The released model with random weights: one clip's encode, transformer calls, sampling, decode, memory."""
    from worldstereo.bench.model import format_report, run_model_benchmark

    if variant not in ("camera", "memory", "memory-dmd") or size not in ("tiny", "full"):
        raise typer.BadParameter("--variant camera|memory|memory-dmd, --size tiny|full")
    result = run_model_benchmark(variant, size, device, frames=frames, height=height, width=width,
                                 references=references, steps=steps)
    emit(result, format_report(result), json_path)


if __name__ == "__main__":
    app()


@bench_app.command("splat")
def bench_splat(
    json_path: JsonOption = None,
    frames: int = 21,
    scale: Annotated[float, typer.Option(help="Image size as a fraction of 480x832.")] = 0.5,
    device: str = "cpu",
    iterations: Annotated[Optional[int], typer.Option(help="Iterations timed (default: splat.iterations).")] = None,
) -> None:
    """Splat training on the synthetic room: iterations/s, seconds per scene at the default iterations, peak memory."""
    from worldstereo.bench.splat import format_report, run_splat_benchmark

    result = run_splat_benchmark(frames=frames, scale=scale, device=device, iterations=iterations,
                                 settings=_settings().splat)
    emit(result, format_report(result), json_path)


@app.command("view")
def view_command(
    scene: Annotated[str, typer.Argument(help="A scene id in the configured store, or a scene's exports folder.")],
    host: str = "127.0.0.1",
    port: int = 8080,
) -> None:
    """Open a scene's splats (or fused cloud), mesh, trajectories and input image in a viser web viewer."""
    from worldstereo.storage.factory import open_store
    from worldstereo.storage.keys import output_key
    from worldstereo.viewer.outputs import directory_reader, read_outputs, store_reader
    from worldstereo.viewer.server import serve

    path = Path(scene)
    if path.is_dir():
        exports = path / "exports" if (path / "exports").is_dir() else path
        read, images = directory_reader(exports)
    else:
        settings = _settings()
        read, images = store_reader(open_store(settings.storage), settings.storage.work_bucket,
                                    output_key(scene, "exports") + "/")
    if read("fused.ply") is None:
        raise typer.BadParameter(f"no exports of {scene} (expected exports/fused.ply)")
    server = serve(read_outputs(read, images), host=host, port=port)
    typer.echo(f"viewing {scene} at http://{host}:{server.get_port()}/ (Ctrl-C stops)")
    server.sleep_forever()
