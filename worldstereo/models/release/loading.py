"""Local loading of the released variants: each ``worldstereo-<variant>/{config.json, model.safetensors}`` is an
overlay on the Wan2.1-I2V diffusers directory (RELEASED_MODEL §1). Nothing is downloaded; every problem is a
:class:`ConfigurationError` naming the file and the setting to fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from diffusers.models.modeling_utils import no_init_weights

from worldstereo.errors import ConfigurationError
from worldstereo.models.loading import keeps_fp32, stream_weights, weight_files
from worldstereo.models.release.config import ReleaseConfig, Variant, variant_folder
from worldstereo.models.release.transformer import ReleaseTransformer

log = logging.getLogger(__name__)

RELEASE_SETTING = "WORLDSTEREO_MODELS__WORLDSTEREO_RELEASE"
WAN_SETTING = "WORLDSTEREO_MODELS__WAN_I2V"
WAN_SUBFOLDERS = ("transformer", "vae", "text_encoder", "tokenizer", "image_encoder", "image_processor", "scheduler")
OVERLAY = "model.safetensors"
# Keys the overlay may leave out: the control patch embedding starts as a copy of the backbone's, and the
# reference-index embedding is never used by the forward pass.
OPTIONAL_OVERLAY = ("controlnet.controlnet_patch_embedding.", "ref_index_embedding.")


def resolve_snapshot(root: Path, name: str) -> Path:
    """``root/name``, or ``name`` inside a hub-cache snapshot under ``root`` (``snapshots/<rev>/`` or
    ``models--*/snapshots/<rev>/``; the revision named by ``refs/main`` first)."""
    if (root / name).exists():
        return root / name
    for cache in [root, *sorted(root.glob("models--*"))]:
        main = cache / "refs" / "main"
        revisions = [main.read_text().strip()] if main.is_file() else []
        revisions += sorted(p.name for p in (cache / "snapshots").glob("*"))
        for revision in revisions:
            candidate = cache / "snapshots" / revision / name
            if candidate.exists():
                return candidate
    return root / name


def _read_json(path: Path, setting: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigurationError(f"{path} does not exist: set {setting} to the directory that holds it")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"cannot read {path}: {error}; fix the file or {setting}") from None


def variant_dir(release_dir: Path | None, variant: Variant) -> Path:
    """The folder of ``variant`` in the release directory (checked to hold config.json + model.safetensors)."""
    if release_dir is None:
        raise ConfigurationError(
            f"no released WorldStereo weights configured: set {RELEASE_SETTING} to a local copy of the model "
            "repository (folders worldstereo-camera, worldstereo-memory, worldstereo-memory-dmd)"
        )
    folder = resolve_snapshot(Path(release_dir), variant_folder(variant))
    missing = [name for name in ("config.json", OVERLAY) if not (folder / name).is_file()]
    if missing:
        state = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        raise ConfigurationError(
            f"{folder} {state}: {RELEASE_SETTING} must name a directory holding {variant_folder(variant)}/ with "
            f"config.json and {OVERLAY}"
        )
    return folder


def read_release_config(release_dir: Path | None, variant: Variant) -> tuple[ReleaseConfig, Path]:
    """The variant's config (every §1.3 key read from the file) and its folder."""
    folder = variant_dir(release_dir, variant)
    path = folder / "config.json"
    try:
        return ReleaseConfig.from_dict(variant, _read_json(path, RELEASE_SETTING), str(path)), folder
    except ConfigurationError as error:
        raise ConfigurationError(f"{error} (set by {RELEASE_SETTING})") from None


def wan_dir(path: Path | None) -> Path:
    """The Wan2.1-I2V diffusers directory, checked for every subfolder the release uses."""
    if path is None:
        raise ConfigurationError(
            f"no Wan2.1-I2V base model configured: set {WAN_SETTING} to a local Wan2.1-I2V-14B diffusers directory "
            f"({', '.join(WAN_SUBFOLDERS)})"
        )
    root = Path(path)
    resolved = resolve_snapshot(root, "transformer").parent
    missing = [name for name in WAN_SUBFOLDERS if not (resolved / name).is_dir()]
    if missing:
        raise ConfigurationError(f"{resolved} lacks {', '.join(missing)}/: set {WAN_SETTING} to a Wan2.1-I2V "
                                 "diffusers directory")
    return resolved


def check_base(config: ReleaseConfig, wan_config: dict[str, Any], wan: Path) -> None:
    """``base_model`` must name a Wan2.1-I2V model, and the local transformer must be an I2V one (36 input
    channels, CLIP image tokens)."""
    if "wan2.1-i2v" not in config.base_model.lower().replace("_", "-"):
        raise ConfigurationError(
            f"{variant_folder(config.variant)}/config.json names base_model {config.base_model!r}, not a Wan2.1-I2V "
            f"model; check {RELEASE_SETTING}"
        )
    if wan_config.get("in_channels") != 36 or wan_config.get("image_dim") is None:
        raise ConfigurationError(
            f"{wan / 'transformer' / 'config.json'} is not a Wan2.1-I2V transformer (in_channels 36, image_dim set); "
            f"set {WAN_SETTING} to the Wan2.1-I2V diffusers directory"
        )
    log.info("WorldStereo %s: base model %s, weights from %s", config.variant, config.base_model, wan)


def load_release_transformer(
    config: ReleaseConfig, folder: Path, wan: Path, *, dtype: torch.dtype, device: torch.device | str
) -> ReleaseTransformer:
    """Build the variant's transformer in ``dtype`` on ``device`` (fp32-kept modules in float32), stream the Wan
    transformer in, then overlay ``model.safetensors``. Strict: unexpected or mis-shaped weights and weights
    neither file provides are errors."""
    wan_config = _read_json(wan / "transformer" / "config.json", WAN_SETTING)
    check_base(config, wan_config, wan)
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device), no_init_weights():
            model = ReleaseTransformer(wan_config, config.controlnet, memory=config.memory)
    except ConfigurationError as error:
        raise ConfigurationError(f"{folder / 'config.json'}: {error} (set by {RELEASE_SETTING})") from None
    finally:
        torch.set_default_dtype(previous)
    for name, parameter in model.named_parameters():
        if keeps_fp32(ReleaseTransformer, name):
            parameter.data = parameter.data.float()
    model.eval().requires_grad_(False)
    targets = model.state_dict()
    base_files = [path for path in weight_files(wan / "transformer")]
    for path in base_files:
        if not path.is_file():
            raise ConfigurationError(f"{path} does not exist: set {WAN_SETTING} to a complete Wan2.1-I2V directory")
    loaded: set[str] = set()
    for path in base_files:
        loaded |= stream_weights(targets, path, "the Wan2.1-I2V transformer", f" (check {WAN_SETTING})",
                                 ignored=ReleaseTransformer._keys_to_ignore_on_load_unexpected or ())
    with torch.no_grad():
        model.controlnet.copy_patch_embedding(model.patch_embedding)
        if hasattr(model, "ref_index_embedding"):
            model.ref_index_embedding.weight.zero_()
    loaded |= stream_weights(targets, folder / OVERLAY, f"WorldStereo {config.variant}", f" (check {RELEASE_SETTING})")
    missing = sorted(key for key in set(targets) - loaded if not key.startswith(OPTIONAL_OVERLAY))
    if missing:
        raise ConfigurationError(
            f"{folder / OVERLAY} and {wan / 'transformer'} leave {len(missing)} weights unset, e.g. {missing[0]}: "
            f"check {RELEASE_SETTING} and {WAN_SETTING}"
        )
    return model
