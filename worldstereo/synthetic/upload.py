"""Putting the bundled synthetic samples into the input bucket."""

from __future__ import annotations

import tempfile
from pathlib import Path

from worldstereo.config import Settings
from worldstereo.storage.factory import open_store
from worldstereo.storage.upload import upload_inputs
from worldstereo.synthetic.samples import write_samples


def upload_samples(settings: Settings, prefix: str = "samples/", seed: int = 0) -> list[str]:
    """Write the samples and upload each file once (existing objects are left as they are); returns image keys."""
    with tempfile.TemporaryDirectory() as tmp:
        images = write_samples(Path(tmp), seed=seed)
        return upload_inputs(open_store(settings.storage), settings.storage.input_bucket, images, prefix,
                             overwrite=False)
