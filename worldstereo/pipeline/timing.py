"""Seconds spent in the named steps of a stage, collected only while a caller listens (benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

@dataclass
class StepTimes:
    """Wall-clock and process CPU seconds per step (CPU time counts every thread of this process)."""

    wall: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)


_listener: ContextVar[StepTimes | None] = ContextVar("step_times", default=None)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Add the seconds of the block to ``name`` of the listening collector; free when nobody listens."""
    times = _listener.get()
    if times is None:
        yield
        return
    _synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        _synchronize()
        times.wall[name] = times.wall.get(name, 0.0) + time.perf_counter() - wall
        times.cpu[name] = times.cpu.get(name, 0.0) + time.process_time() - cpu


@contextmanager
def collect_steps() -> Iterator[StepTimes]:
    """Listen to :func:`step` in this context; yields the :class:`StepTimes` that fills up."""
    times = StepTimes()
    token = _listener.set(times)
    try:
        yield times
    finally:
        _listener.reset(token)


def _synchronize() -> None:
    """Asynchronous CUDA work is charged to the step that queued it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
