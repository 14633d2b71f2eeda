"""Yo'LLaVA-format conversation files: `{"<image path or subject>": [{"Human": q, "AI": a}, ...]}`."""

from __future__ import annotations

import json
from pathlib import Path

from yochameleon.errors import ConceptDataError

EXPECTED = '{"<image path or subject name>": [{"Human": "question with <sks>", "AI": "answer"}, ...]}'


def _resolve_image(key: str, base: Path, photo_dir: Path | None) -> str | None:
    candidates = [Path(key).expanduser(), base / key] + ([photo_dir / key] if photo_dir else [])
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    return None


def load_conversations(path, concept_name: str, photo_dir=None) -> list[dict]:
    """Flat list of {"image": abs path or None, "question", "answer"} with the subject written `<sks>`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConceptDataError(f"conversations file {path} does not exist; fix concept.conversations or set it to null")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConceptDataError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}). "
                               f"Expected {EXPECTED}") from err
    if not isinstance(data, dict) or not data:
        raise ConceptDataError(f"{path} must be a non-empty JSON object. Expected {EXPECTED}")
    mention = f"<{concept_name}>"
    turns = []
    for key, entries in data.items():
        if not isinstance(entries, list):
            raise ConceptDataError(f"{path}: the value of {key!r} must be a list of turns. Expected {EXPECTED}")
        image = _resolve_image(key, path.parent, Path(photo_dir) if photo_dir else None)
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or "Human" not in entry or "AI" not in entry:
                raise ConceptDataError(f"{path}: entry {index} under {key!r} needs both \"Human\" and \"AI\" "
                                       f"keys. Expected {EXPECTED}")
            turns.append({"image": image,
                          "question": str(entry["Human"]).replace(mention, "<sks>"),
                          "answer": str(entry["AI"]).replace(mention, "<sks>")})
    return turns
