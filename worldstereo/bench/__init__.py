"""Benchmarks of the hot paths, runnable on any device."""

from worldstereo.bench.render import format_report, run_render_benchmark

__all__ = ["format_report", "run_render_benchmark"]
