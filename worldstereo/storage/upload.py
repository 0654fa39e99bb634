"""Putting input images, with their sidecars, into the input bucket."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from worldstereo.errors import InvalidInputError
from worldstereo.inputs import RELEASE_PROMPT, is_input_image, release_sidecar_keys, sidecar_keys
from worldstereo.prompts import prompt_keys
from worldstereo.storage.base import ObjectStore

log = logging.getLogger(__name__)
Warn = Callable[[str], None]


def content_mismatch(image: Path) -> str | None:
    """Why the file is not an image of its extension, judged by its signature (PNG, JPEG, WebP); None if it is."""
    with image.open("rb") as file:
        head = file.read(12)
    extension = image.suffix.lower()
    if extension == ".png":
        fits, kind = head.startswith(b"\x89PNG\r\n\x1a\n"), "PNG"
    elif extension in (".jpg", ".jpeg"):
        fits, kind = head.startswith(b"\xff\xd8\xff"), "JPEG"
    else:
        fits, kind = head[:4] == b"RIFF" and head[8:12] == b"WEBP", "WebP"
    return None if fits else f"{image} does not start with a {kind} signature (first bytes {head[:8]!r})"


def upload_inputs(
    store: ObjectStore, bucket: str, images: Iterable[Path], prefix: str = "", *, overwrite: bool = True,
    force: bool = False, warn: Warn = log.warning,
) -> list[str]:
    """Upload each image under ``prefix`` after the sidecars found beside it; returns the uploaded image keys.

    Sidecars go first, so a batch or a bucket notification never sees an image without them. With
    ``overwrite=False`` objects that exist are left as they are. An image whose content is not of its
    extension (:func:`content_mismatch`) is reported to ``warn`` and left out, sidecars too, unless ``force``.
    """
    images = [Path(image) for image in images]
    for image in images:
        if not is_input_image(image.name):
            raise InvalidInputError(f"{image} is not an input image (.png, .jpg, .jpeg, .webp)")
        if not image.is_file():
            raise InvalidInputError(f"no input image at {image}")
    keys = []
    for image in images:
        if (problem := content_mismatch(image)) is not None:
            warn(f"{problem}: {'uploading it anyway (force)' if force else 'skipped (force uploads it)'}")
            if not force:
                continue
        sidecars = [image.with_name(Path(key).name) for key in (*sidecar_keys(image.name), *prompt_keys(image.name))]
        for path in [p for p in sidecars if p.is_file()] + [image]:
            key, data = prefix + path.name, path.read_bytes()
            if overwrite:
                store.put_bytes(bucket, key, data)
            else:
                store.put_if_absent(bucket, key, data)
        keys.append(prefix + image.name)
    return keys


def upload_tree(store: ObjectStore, bucket: str, root: Path, prefix: str = "", *, force: bool = False,
                warn: Warn = log.warning) -> list[str]:
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
        keys += upload_inputs(store, bucket, [image], folder_prefix, force=force, warn=warn)
    if not keys:
        raise InvalidInputError(f"no input images under {root}")
    return keys
