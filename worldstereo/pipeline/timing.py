"""Seconds spent in the named steps of a stage, collected only while a caller listens (benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_listener: ContextVar[dict[str, float] | None] = ContextVar("step_seconds", default=None)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Add the seconds of the block to ``name`` of the listening collector; free when nobody listens."""
    seconds = _listener.get()
    if seconds is None:
        yield
        return
    _synchronize()
    start = time.perf_counter()
    try:
        yield
    finally:
        _synchronize()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


@contextmanager
def collect_steps() -> Iterator[dict[str, float]]:
    """Listen to :func:`step` in this context; yields the dict that fills up with step seconds."""
    seconds: dict[str, float] = {}
    token = _listener.set(seconds)
    try:
        yield seconds
    finally:
        _listener.reset(token)


def _synchronize() -> None:
    """Asynchronous CUDA work is charged to the step that queued it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
