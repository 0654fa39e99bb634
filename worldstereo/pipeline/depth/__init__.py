"""Depth initialisation: ``sidecar`` (depth beside the image) and ``moge`` (MoGe from local weights)."""
