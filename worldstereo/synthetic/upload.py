"""Putting the bundled synthetic samples into the input bucket."""

from __future__ import annotations

import tempfile
from pathlib import Path

from worldstereo.config import Settings
from worldstereo.storage.factory import open_store
from worldstereo.synthetic.samples import write_samples


def upload_samples(settings: Settings, prefix: str = "samples/", seed: int = 0) -> list[str]:
    """Write the samples and upload each file once (existing objects are left as they are); returns image keys."""
    store = open_store(settings.storage)
    bucket = settings.storage.input_bucket
    images = []
    with tempfile.TemporaryDirectory() as tmp:
        for image in write_samples(Path(tmp), seed=seed):
            # sidecars first, so the image never appears without them
            for path in sorted(Path(tmp).glob(f"{image.stem}.*"), key=lambda p: p == image):
                store.put_if_absent(bucket, prefix + path.name, path.read_bytes())
            images.append(prefix + image.name)
    return images
