"""Putting input images, with their sidecars, into the input bucket."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from worldstereo.errors import InvalidInputError
from worldstereo.inputs import is_input_image, sidecar_keys
from worldstereo.prompts import prompt_keys
from worldstereo.storage.base import ObjectStore


def upload_inputs(
    store: ObjectStore, bucket: str, images: Iterable[Path], prefix: str = "", *, overwrite: bool = True
) -> list[str]:
    """Upload each image under ``prefix`` after the sidecars found beside it; returns the image keys.

    Sidecars go first, so a batch or a bucket notification never sees an image without them. With
    ``overwrite=False`` objects that exist are left as they are.
    """
    images = [Path(image) for image in images]
    for image in images:
        if not is_input_image(image.name):
            raise InvalidInputError(f"{image} is not an input image (.png, .jpg, .jpeg, .webp)")
        if not image.is_file():
            raise InvalidInputError(f"no input image at {image}")
    keys = []
    for image in images:
        sidecars = [image.with_name(Path(key).name) for key in (*sidecar_keys(image.name), *prompt_keys(image.name))]
        for path in [p for p in sidecars if p.is_file()] + [image]:
            key, data = prefix + path.name, path.read_bytes()
            if overwrite:
                store.put_bytes(bucket, key, data)
            else:
                store.put_if_absent(bucket, key, data)
        keys.append(prefix + image.name)
    return keys
