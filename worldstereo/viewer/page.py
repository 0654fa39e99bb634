"""A scene's viewer as one self-contained HTML page (viser's client with the serialised scene inlined): it opens
from a bucket or a disk with no Python."""

from __future__ import annotations

import contextlib
import io
import socket

from worldstereo.viewer.outputs import SceneOutputs
from worldstereo.viewer.server import serve

PAGE = "viewer.html"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scene_page(outputs: SceneOutputs) -> bytes:
    """The HTML of viser's client showing ``outputs`` as :func:`serve` builds them (a server on a loopback port
    lives only while the scene is serialised; its start and stop banners are not printed)."""
    with contextlib.redirect_stdout(io.StringIO()):
        server = serve(outputs, port=_free_port())
        try:
            return server.scene.as_html().encode()
        finally:
            server.stop()
