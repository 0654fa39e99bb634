"""The ``worldstereo`` command line: the library's commands plus the orchestration ones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from worldstereo.cli import JsonOption, _settings, app, backend_help, bench_app, emit

# An embedded Prefect server must not try to phone home from machines without internet access, and may take
# minutes to answer on its first start on a fresh machine (Prefect's default wait is 20 s).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")


@app.command()
def batch(
    samples: Annotated[bool, typer.Option(help="First upload the bundled synthetic samples to the input bucket.")] = False,
    input_prefix: str = "",
    limit: Optional[int] = None,
    rerun_failed: bool = False,
    generator: Annotated[Optional[str], typer.Option(help=backend_help("generator"))] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames per trajectory (paper: 81).")] = None,
    scale: Annotated[Optional[float], typer.Option(help="Working resolution as a fraction of the 480p bucket.")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Scenes at once (default: the cluster's stage slots).")] = None,
    json_path: JsonOption = None,
) -> None:
    """Run the scene-batch flow in this process (Prefect's ephemeral API unless PREFECT_API_URL is set)."""
    from flows.scene_batch import run_scene_batch

    settings = _settings(resolution_scale=scale, num_frames=frames)  # bad values fail here, before anything runs
    if samples:
        from worldstereo.synthetic.upload import upload_samples

        for key in upload_samples(settings):
            typer.echo(f"input {key}")
    overrides = {"resolution_scale": scale} if scale is not None else None
    rows = run_scene_batch(input_prefix=input_prefix, limit=limit, rerun_failed=rerun_failed, generator=generator,
                           trajectory={"num_frames": frames} if frames else None, concurrency=concurrency,
                           overrides=overrides)
    lines = [f"{r['status']:>6}  {r['scene']:<32} {r['duration_s']:>8.1f}s  {r['error'] or r['outputs']}" for r in rows]
    lines += where_to_look(settings)
    emit({"scenes": rows}, "\n".join(lines), json_path)


def where_to_look(settings) -> list[str]:
    """Where a batch's outputs are, and where to see its runs in the Prefect UI."""
    from prefect.settings import PREFECT_API_URL

    storage = settings.storage
    if storage.backend == "local":
        outputs = f"{(storage.root / storage.work_bucket).resolve()}/scenes/SCENE_ID/outputs/"
    else:
        outputs = f"s3://{storage.work_bucket}/scenes/SCENE_ID/outputs/ on {storage.endpoint}"
    api = PREFECT_API_URL.value()
    ui = (f"{api.removesuffix('/api')} (flow run scene-batch)" if api else
          "run `prefect server start`, then open http://127.0.0.1:4200 (this run is in its database)")
    return [f"outputs: {outputs}", f"Prefect UI: {ui}"]


@app.command("release-pools")
def release_pools() -> None:
    """Stop the model actors that batches leave running on the Ray cluster (``ray.address``) for the next one."""
    from tasks.ray_pools import release_all_pools

    typer.echo(f"released {release_all_pools(_settings().ray)} model actors")


@app.command("serve-webhook")
def serve_webhook(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: int = 8765,
    deployment: Annotated[Optional[str], typer.Option(help="Deployment to start (FLOW/DEPLOYMENT).")] = None,
) -> None:
    """Serve the bucket-notification receiver: new input images start the scene-batch deployment."""
    import uvicorn

    from flows.webhook import create_app

    settings = _settings()
    webhook = settings.webhook.model_copy(update={"deployment": deployment}) if deployment else settings.webhook
    uvicorn.run(create_app(settings.storage.input_bucket, webhook), host=host, port=port)


@bench_app.command("orchestration")
def bench_orchestration(
    json_path: JsonOption = None,
    sample: Annotated[str, typer.Option(help="Synthetic sample: room | object | panorama.")] = "room",
    frames: int = 9,
    scale: float = 0.25,
    generator: str = "oracle",
) -> None:
    """One scene through the scene-batch flow and as a direct library call: times and their ratio."""
    from flows.bench import format_report, run_orchestration_benchmark

    result = run_orchestration_benchmark(sample=sample, frames=frames, scale=scale, generator=generator)
    emit(result, format_report(result), json_path)


@bench_app.command("catalog")
def bench_catalog(
    json_path: JsonOption = None,
    scenes: Annotated[str, typer.Option(help="Catalog sizes, comma-separated.")] = "1000,10000",
    run: Annotated[int, typer.Option(help="Scenes each batch runs through the flow.")] = 200,
    root: Annotated[str | None, typer.Option(help="Directory for the local store (default: the temporary one).")] = None,
) -> None:
    """Catalog sizes N: registration, selection, one-row reads and compaction at N; the flow's CPU, memory, Prefect
    database and task runs per scene; everything extrapolated to 100,000 scenes."""
    from flows.bench_catalog import format_report, run_catalog_benchmark

    sizes = tuple(int(n) for n in scenes.split(",") if n.strip())
    result = run_catalog_benchmark(scenes=sizes, run=run, root=root)
    emit(result, format_report(result), json_path)


@bench_app.command("scaling")
def bench_scaling(
    json_path: JsonOption = None,
    scenes: int = 8,
    memory_scenes: Annotated[tuple[int, int], typer.Option(help="Two batch sizes whose flow peak memory is compared.")] = (8, 32),
    sleep: Annotated[float, typer.Option(help="Seconds the simulated generator takes per trajectory.")] = 8.0,
) -> None:
    """N scenes with a sleeping generator on a local Ray with k = 1, 2, 4 worker slots: throughput and flow memory."""
    from flows.bench_scaling import format_report, run_scaling_benchmark

    result = run_scaling_benchmark(scenes=scenes, memory_scenes=memory_scenes, sleep_s=sleep)
    emit(result, format_report(result), json_path)


if __name__ == "__main__":
    app()
