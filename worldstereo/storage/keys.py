"""Object keys and bucket names: validation, scene ids, and the work-bucket layout.

Work bucket layout (the same on every backend)::

    catalog/catalog.parquet                                 one row per scene
    scenes/{scene_id}/records/{stage}[-{trajectory}].parquet  one stage record each
    scenes/{scene_id}/outputs/...                           everything a scene produces
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import unicodedata
from pathlib import PurePosixPath

from worldstereo.errors import InvalidKeyError

MAX_KEY_BYTES = 1024
PARTIAL_SUFFIX = ".partial"  # reserved: names of in-flight local writes
SCENE_ID_STEM_CHARS = 40
SCENE_ID_HASH_CHARS = 10

_SCENE_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def _check_segments(text: str, segments: list[str], what: str) -> None:
    """Shared rules for keys and prefixes: size, characters, segments."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"invalid {what} {text!r}: not encodable as UTF-8") from exc
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(f"invalid {what}: {size} bytes of UTF-8, the limit is {MAX_KEY_BYTES}")
    if text.startswith("/"):
        raise InvalidKeyError(f"invalid {what} {text!r}: leading '/'")
    if "\\" in text:
        raise InvalidKeyError(f"invalid {what} {text!r}: backslash")
    control = _CONTROL.search(text)
    if control is not None:
        raise InvalidKeyError(f"invalid {what} {text!r}: control character {control.group()!r}")
    for index, segment in enumerate(segments):
        if segment == "":
            raise InvalidKeyError(
                f"invalid {what} {text!r}: empty segment at position {index} (from '//' or a trailing '/')"
            )
        if segment in (".", ".."):
            raise InvalidKeyError(f"invalid {what} {text!r}: relative segment {segment!r}")
        if segment.endswith(PARTIAL_SUFFIX):
            raise InvalidKeyError(
                f"invalid {what} {text!r}: segment {segment!r} ends with the reserved suffix {PARTIAL_SUFFIX!r}"
            )


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise ``InvalidKeyError`` naming the problem."""
    if not isinstance(key, str) or key == "":
        raise InvalidKeyError(f"invalid key {key!r}: must be a non-empty string")
    _check_segments(key, key.split("/"), "key")
    return key


def validate_prefix(prefix: str) -> str:
    """Like ``validate_key`` but may be empty or end with ``/``."""
    if not isinstance(prefix, str):
        raise InvalidKeyError(f"invalid prefix {prefix!r}: must be a string")
    segments = prefix.split("/")
    _check_segments(prefix, segments[:-1] if segments[-1] == "" else segments, "prefix")
    return prefix


def validate_bucket(name: str) -> str:
    """Return ``name`` if it follows the S3 bucket naming rules, else raise ``InvalidKeyError``."""
    if not isinstance(name, str) or not _BUCKET.match(name):
        raise InvalidKeyError(
            f"invalid bucket {name!r}: 3-63 characters of a-z, 0-9, '.', '-', starting and ending alphanumeric"
        )
    if ".." in name or ".-" in name or "-." in name:
        raise InvalidKeyError(f"invalid bucket {name!r}: '.' next to '.' or '-'")
    if name.startswith(_BUCKET_RESERVED_PREFIXES) or name.endswith(_BUCKET_RESERVED_SUFFIXES):
        raise InvalidKeyError(f"invalid bucket {name!r}: reserved prefix or suffix")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise InvalidKeyError(f"invalid bucket {name!r}: formatted as an IP address")


def validate_scene_id(scene_id: str) -> str:
    """Scene ids are lowercase ``[a-z0-9]`` words joined by single ``-``, at most 64 characters."""
    if not isinstance(scene_id, str) or len(scene_id) > 64 or not _SCENE_ID.match(scene_id):
        raise InvalidKeyError(f"invalid scene id {scene_id!r}: expected [a-z0-9] words joined by '-', <= 64 chars")
    return scene_id


def validate_name(name: str, what: str = "name") -> str:
    """Stage and trajectory names: ``[a-z0-9_]``, starting alphanumeric (no ``-``: it separates them in keys)."""
    if not isinstance(name, str) or len(name) > 64 or not _NAME.match(name):
        raise InvalidKeyError(f"invalid {what} {name!r}: expected [a-z0-9_], starting alphanumeric, <= 64 chars")
    return name


def scene_id_from_key(input_key: str) -> str:
    """Stable scene id: slug of the file stem plus a short hash of the whole key, e.g. ``room-01-3f9a0c12de``."""
    validate_key(input_key)
    stem = PurePosixPath(input_key).stem or PurePosixPath(input_key).name
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_stem.lower())[:SCENE_ID_STEM_CHARS].strip("-") or "scene"
    digest = hashlib.sha256(input_key.encode("utf-8")).hexdigest()[:SCENE_ID_HASH_CHARS]
    return f"{slug}-{digest}"


def catalog_key() -> str:
    """The catalog manifest in the work bucket."""
    return "catalog/catalog.parquet"


def catalog_updates_prefix(scene_id: str | None = None) -> str:
    """Status changes not yet folded into the catalog manifest (of one scene if given)."""
    return "catalog/updates/" + ("" if scene_id is None else f"{validate_scene_id(scene_id)}/")


def catalog_update_key(scene_id: str, stamp: str) -> str:
    """One status change of a scene, under a key no other change takes (``stamp``: time and a random token),
    until compaction folds it into the catalog manifest and deletes exactly that key."""
    return f"{catalog_updates_prefix(scene_id)}{validate_name(stamp, 'update stamp')}.json"


def claim_key(scene_id: str) -> str:
    """Which batch runs a scene now: a small lease object replaced only by conditional writes."""
    return f"catalog/claims/{validate_scene_id(scene_id)}.json"


def scene_prefix(scene_id: str) -> str:
    """Everything of one scene lives under this prefix."""
    return f"scenes/{validate_scene_id(scene_id)}/"


def records_prefix(scene_id: str) -> str:
    """Stage records of one scene."""
    return f"{scene_prefix(scene_id)}records/"


def record_key(scene_id: str, stage: str, trajectory: str | None = None) -> str:
    """One record per (scene, stage, trajectory); ``trajectory=None`` for scene-wide stages."""
    name = validate_name(stage, "stage")
    if trajectory is not None:
        name = f"{name}-{validate_name(trajectory, 'trajectory')}"
    return f"{records_prefix(scene_id)}{name}.parquet"


def outputs_prefix(scene_id: str) -> str:
    """Outputs of one scene."""
    return f"{scene_prefix(scene_id)}outputs/"


def output_key(scene_id: str, *parts: str) -> str:
    """``scenes/{scene_id}/outputs/{parts joined by '/'}``, validated."""
    if not parts:
        raise InvalidKeyError("an output key needs at least one part after the outputs prefix")
    return validate_key(outputs_prefix(scene_id) + "/".join(parts))
