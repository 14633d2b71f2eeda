"""Yo'LLaVA-format conversation files: `{"<image path or subject>": [{"Human": q, "AI": a}, ...]}`."""

from __future__ import annotations

import json
from pathlib import Path

from yochameleon.data.images import IMAGE_SUFFIXES
from yochameleon.errors import ConceptDataError

EXPECTED = '{"<image path or subject name>": [{"Human": "question with <sks>", "AI": "answer"}, ...]}'


def _resolve_image(key: str, file: Path, photo_dir: Path | None) -> str | None:
    """Absolute path of the photo a key names, None for a text-only key; error for a photo that is not there."""
    key_path = Path(key).expanduser()
    candidates = [file.parent / key_path]  # an absolute key stays absolute when joined
    if photo_dir is not None:
        # Yo'LLaVA's released files use absolute paths from the authors' machines: fall back to the file name.
        candidates += [photo_dir / key, photo_dir / key_path.name]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    if key_path.suffix.lower() in IMAGE_SUFFIXES:
        # Silently training on these turns without their photo would teach the wrong thing.
        raise ConceptDataError(
            f"{file}: key {key!r} names an image that was not found (looked in {file.parent}"
            f"{'' if photo_dir is None else f' and {photo_dir}'}). Fix: copy the photo there, correct the key, "
            "or key text-only turns by the subject name instead.")
    return None


def load_conversations(path, concept_name: str, photo_dir=None) -> list[dict]:
    """Flat list of {"image": abs path or None, "question", "answer"} with the subject written `<sks>`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConceptDataError(f"conversations file {path} does not exist; fix concept.conversations or set it to null")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise ConceptDataError(f"{path} is not UTF-8 text ({err}); save it as UTF-8 JSON. Expected {EXPECTED}") from err
    except json.JSONDecodeError as err:
        raise ConceptDataError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}). "
                               f"Expected {EXPECTED}") from err
    if not isinstance(data, dict) or not data:
        raise ConceptDataError(f"{path} must be a non-empty JSON object. Expected {EXPECTED}")
    photo_dir = Path(photo_dir).expanduser() if photo_dir else None
    mention = f"<{concept_name}>"
    turns = []
    for key, entries in data.items():
        if not isinstance(entries, list):
            raise ConceptDataError(f"{path}: the value of {key!r} must be a list of turns. Expected {EXPECTED}")
        image = _resolve_image(key, path, photo_dir)
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or "Human" not in entry or "AI" not in entry:
                raise ConceptDataError(f"{path}: entry {index} under {key!r} needs both \"Human\" and \"AI\" "
                                       f"keys. Expected {EXPECTED}")
            if not isinstance(entry["Human"], str) or not isinstance(entry["AI"], str):
                raise ConceptDataError(f"{path}: entry {index} under {key!r}: \"Human\" and \"AI\" must be text "
                                       f"strings. Expected {EXPECTED}")
            turns.append({"image": image,
                          "question": entry["Human"].replace(mention, "<sks>"),
                          "answer": entry["AI"].replace(mention, "<sks>")})
    if not turns:
        raise ConceptDataError(f"{path} has no question/answer turns; add some or set concept.conversations "
                               f"to null. Expected {EXPECTED}")
    return turns
