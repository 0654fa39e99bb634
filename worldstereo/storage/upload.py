"""Putting input images, with their sidecars, into the input bucket."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from worldstereo.errors import InvalidInputError
from worldstereo.inputs import RELEASE_PROMPT, is_input_image, release_sidecar_keys, sidecar_keys
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


def upload_tree(store: ObjectStore, bucket: str, root: Path, prefix: str = "") -> list[str]:
    """Upload every input under the folder ``root``: flat images with their sidecars, and release scene folders
    (``SCENE/image.*`` + ``prompt.json``, ``camera.json``, ``renders/traj_eloop/camera.json``), each image last.

    Keys keep the paths relative to ``root`` (relative to its parent when ``root`` is itself a scene folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder")
    base = root.parent if (root / RELEASE_PROMPT).is_file() else root
    keys = []
    for image in sorted(p for p in root.rglob("*") if p.is_file() and is_input_image(p.name)):
        relative = image.relative_to(base).as_posix()
        folder_prefix = prefix + relative.rpartition("/")[0] + ("/" if "/" in relative else "")
        extras = [(prefix + k, base / k) for k in release_sidecar_keys(relative).values() if (base / k).is_file()]
        for key, path in extras:
            store.put_bytes(bucket, key, path.read_bytes())
        keys += upload_inputs(store, bucket, [image], folder_prefix)
    if not keys:
        raise InvalidInputError(f"no input images under {root}")
    return keys
