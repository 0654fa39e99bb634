"""Scene prompts from sidecar files: ``NAME.prompt.json`` / a release folder's ``prompt.json``, or ``NAME.txt``."""

from __future__ import annotations

import json

from worldstereo.errors import InvalidInputError

# the release's caption keys, most detailed first; ``prompt`` is the reconstruction examples' key
PROMPT_KEYS = ("long caption", "medium caption", "short caption", "prompt")


def parse_prompt(data: bytes, name: str) -> str:
    """The prompt text of a sidecar named ``name`` (``.json``: the first of ``PROMPT_KEYS`` present; else text)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"prompt file {name} is not UTF-8: {exc}") from None
    if not name.endswith(".json"):
        prompt = text.strip()
    else:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"prompt file {name} does not parse: {exc}") from None
        found = [document[k] for k in PROMPT_KEYS if isinstance(document, dict) and isinstance(document.get(k), str)]
        if not found:
            raise InvalidInputError(f"prompt file {name} needs one of the keys {', '.join(PROMPT_KEYS)}")
        prompt = found[0].strip()
    if not prompt:
        raise InvalidInputError(f"prompt file {name} holds an empty prompt")
    return prompt
