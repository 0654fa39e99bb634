"""Scene captions from prompt sidecars: ``NAME.prompt.json`` (the release's ``prompt.json`` keys) or ``NAME.txt``."""

from __future__ import annotations

import json

from worldstereo.errors import InvalidInputError

# Preference order of the caption keys in a prompt JSON file (the release's single-view runs use the long one).
PROMPT_KEYS = ("long caption", "medium caption", "short caption", "prompt")
PROMPT_JSON_SUFFIX, PROMPT_TEXT_SUFFIX = ".prompt.json", ".txt"


def prompt_keys(image_key: str) -> tuple[str, str]:
    """Prompt sidecar keys of an image key, in precedence order: ``a/NAME.png → (a/NAME.prompt.json, a/NAME.txt)``."""
    stem = image_key.rpartition(".")[0]
    return stem + PROMPT_JSON_SUFFIX, stem + PROMPT_TEXT_SUFFIX


def parse_prompt(data: bytes, name: str) -> str:
    """The caption in sidecar ``name``: a JSON object's first non-empty key of :data:`PROMPT_KEYS`, or UTF-8
    text. Raises :class:`InvalidInputError` naming the file and what it must hold."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInputError(f"prompt sidecar {name} is not UTF-8 text") from None
    if name.endswith(".json"):
        try:
            document = json.loads(text)
        except ValueError as error:
            raise InvalidInputError(f"prompt sidecar {name} is not valid JSON: {error}") from None
        captions = [document.get(key) for key in PROMPT_KEYS] if isinstance(document, dict) else []
        text = next((c for c in captions if isinstance(c, str) and c.strip()), "")
        if not text:
            raise InvalidInputError(
                f"prompt sidecar {name} must be a JSON object with a non-empty string under one of "
                f"{', '.join(repr(k) for k in PROMPT_KEYS)}"
            )
    text = text.strip()
    if not text:
        raise InvalidInputError(f"prompt sidecar {name} is empty: write the scene's caption into it or remove it")
    return text
