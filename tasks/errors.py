"""Failure reasons a person can read: the underlying error's type and message, without the remote traceback
or terminal colours that Ray wraps around it (the full traceback goes to the logs)."""

from __future__ import annotations

import re

import ray

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
REASON_CHARS = 2000


def plain(text: str) -> str:
    """``text`` without ANSI escape sequences."""
    return _ANSI.sub("", text)


def underlying(exc: BaseException) -> BaseException:
    """The error a Ray task raised, unwrapped from Ray's task-error envelopes."""
    while isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        exc = exc.cause
    return exc


def readable_reason(exc: BaseException) -> str:
    """``Type: message`` of the underlying error on one line, colourless and at most ``REASON_CHARS`` long."""
    exc = underlying(exc)
    message = plain(str(exc)).strip()
    if isinstance(exc, ray.exceptions.RayError):  # system failures: their first line names what died
        message = message.splitlines()[0] if message else ""
    reason = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return reason[:REASON_CHARS]
