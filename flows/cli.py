"""The ``worldstereo`` command line: the library's commands plus the orchestration ones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from worldstereo.cli import JsonOption, app, bench_app, emit

# An embedded Prefect server must not try to phone home from machines without internet access.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@app.command()
def batch(
    samples: Annotated[bool, typer.Option(help="First upload the bundled synthetic samples to the input bucket.")] = False,
    input_prefix: str = "",
    limit: Optional[int] = None,
    rerun_failed: bool = False,
    generator: Annotated[Optional[str], typer.Option(help="oracle | warp | worldstereo")] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames per trajectory (paper: 81).")] = None,
    scale: Annotated[Optional[float], typer.Option(help="Working resolution as a fraction of the 480p bucket.")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Scenes at once (default: the cluster's stage slots).")] = None,
    json_path: JsonOption = None,
) -> None:
    """Run the scene-batch flow in this process (Prefect's ephemeral API unless PREFECT_API_URL is set)."""
    from flows.scene_batch import scene_batch
    from worldstereo.config import load_settings

    if samples:
        from worldstereo.synthetic.upload import upload_samples

        for key in upload_samples(load_settings()):
            typer.echo(f"input {key}")
    overrides = {"resolution_scale": scale} if scale is not None else None
    rows = scene_batch(input_prefix=input_prefix, limit=limit, rerun_failed=rerun_failed, generator=generator,
                       trajectory={"num_frames": frames} if frames else None, concurrency=concurrency,
                       overrides=overrides)
    settings = load_settings()
    lines = [f"{r['status']:>6}  {r['scene']:<32} {r['duration_s']:>8.1f}s  {r['error'] or r['outputs']}" for r in rows]
    where = settings.storage.root if settings.storage.backend == "local" else settings.storage.endpoint
    lines.append(f"{len(rows)} scenes; outputs in bucket {settings.storage.work_bucket} at {where}")
    emit({"scenes": rows}, "\n".join(lines), json_path)


@app.command("serve-webhook")
def serve_webhook(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: int = 8765,
    deployment: Annotated[Optional[str], typer.Option(help="Deployment to start (FLOW/DEPLOYMENT).")] = None,
) -> None:
    """Serve the bucket-notification receiver: new input images start the scene-batch deployment."""
    import uvicorn

    from flows.webhook import WebhookSettings, create_app

    settings = WebhookSettings(**({"deployment": deployment} if deployment else {}))
    uvicorn.run(create_app(settings=settings), host=host, port=port)


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


if __name__ == "__main__":
    app()
