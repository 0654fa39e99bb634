"""Depth initialisation: ``auto``, ``sidecar`` and the models ``depth-pro``, ``depth-anything-metric``, ``moge``."""
