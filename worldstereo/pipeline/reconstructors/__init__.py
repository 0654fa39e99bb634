"""Reconstructors: ``rendered-depth`` (known cameras, generator depth), ``depth-anything-3`` and ``worldmirror``."""
