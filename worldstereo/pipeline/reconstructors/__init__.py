"""Reconstructors: ``rendered-depth`` (known cameras, generator depth) and ``worldmirror``."""
