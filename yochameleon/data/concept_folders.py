"""A dataset of many concepts for training a concept encoder: one folder per subject, a few photos each.

    <root>/
        splits.json          optional: {"val": [names], "test": [names]} (the rest train)
        <name>/              one subject: 2 or more photos (jpg, png, ...)
            checks.json      optional: text checks about it (question, options, answer, wording), for scoring
                             text QA on held-out concepts (`concept.text_checks`' format)
            qa.json          optional: text QA to learn from, [{"question": "What colour is <sks>?",
                             "answer": "orange."}, ...] (`<sks>` stands for the concept); without it the
                             frozen backbone's own answers about the photos are the targets (Yo'LLaVA's way)

Validation concepts choose the encoder's checkpoint; test concepts are scored once at the end. A name in
two splits, or a split naming a folder that is not there, is refused naming the file and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from yochameleon.data.concept import ConceptDataError, parse_text_checks
from yochameleon.data.images import list_images

SPLITS_FILE, CHECKS_FILE, QA_FILE = "splits.json", "checks.json", "qa.json"
MIN_PHOTOS = 2  # one to encode from, one other to learn to recognize and draw


@dataclass
class ConceptFolder:
    """One subject of the dataset."""

    name: str
    photos: list[Path]
    checks: list = field(default_factory=list)  # `TextCheck`s (held-out text QA), from checks.json
    qa: list | None = None  # text QA turns to learn from ({"question", "answer"}), from qa.json; None: none given


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConceptDataError(f"{path} is not valid JSON ({err}); fix or delete it") from err


def read_qa(path: Path) -> list[dict]:
    """A concept folder's qa.json: a non-empty list of {"question": ... <sks> ..., "answer": ...}."""
    entries = _read_json(path)
    fix = 'it must be a list of {"question": "... <sks> ...?", "answer": "..."} (<sks> stands for the concept)'
    if not isinstance(entries, list) or not entries:
        raise ConceptDataError(f"{path}: {fix}")
    for i, entry in enumerate(entries):
        if (not isinstance(entry, dict) or not isinstance(entry.get("question"), str)
                or not isinstance(entry.get("answer"), str) or not entry["answer"].strip()):
            raise ConceptDataError(f"{path}: entry {i} is {entry!r}; {fix}")
        if "<sks>" not in entry["question"]:
            raise ConceptDataError(f"{path}: entry {i}'s question {entry['question']!r} does not name <sks>; {fix}")
    return [{"question": e["question"], "answer": e["answer"]} for e in entries]


def _names(value, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ConceptDataError(f"{where} must list concept folder names, got {value!r}")
    return list(value)


def read_concept_folders(root, val=None, test=None) -> dict[str, list[ConceptFolder]]:
    """{"train", "val", "test"} -> the concept folders of each split (sorted by name).

    `val` / `test`: lists of folder names; when both are None, `<root>/splits.json` names them (no file: every
    concept trains and nothing chooses the checkpoint).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConceptDataError(f"encoder data root {root} is not a directory: give a folder with one sub-folder of "
                               "photos per subject (data.root=...)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 3:
        raise ConceptDataError(f"{root} holds {len(folders)} concept folders; an encoder learns across many "
                               "subjects: give at least 3 (dozens to hundreds is usual)")
    where = "data.val_concepts / data.test_concepts"
    if val is None and test is None and (root / SPLITS_FILE).exists():
        splits = _read_json(root / SPLITS_FILE)
        where = str(root / SPLITS_FILE)
        val, test = splits.get("val"), splits.get("test")
    val, test = _names(val, where), _names(test, where)
    names = {p.name for p in folders}
    for split, chosen in (("val", val), ("test", test)):
        missing = sorted(set(chosen) - names)
        if missing:
            raise ConceptDataError(f"{where}: the {split} split names {missing[:5]}, which are not folders of {root}")
    both = sorted(set(val) & set(test))
    if both:
        raise ConceptDataError(f"{where}: {both[:5]} are in both the val and the test split; a concept is in one split")
    out: dict[str, list[ConceptFolder]] = {"train": [], "val": [], "test": []}
    for folder in folders:
        photos = list_images(folder, f"photos of concept {folder.name!r}")
        if len(photos) < MIN_PHOTOS:
            raise ConceptDataError(f"{folder} holds {len(photos)} photo; every concept needs at least {MIN_PHOTOS} "
                                   "(one to encode from, another to learn from). Add photos or remove the folder.")
        checks = []
        if (folder / CHECKS_FILE).exists():
            checks = parse_text_checks(folder.name, _read_json(folder / CHECKS_FILE))
        qa = read_qa(folder / QA_FILE) if (folder / QA_FILE).exists() else None
        split = "val" if folder.name in val else "test" if folder.name in test else "train"
        out[split].append(ConceptFolder(folder.name, photos, checks, qa))
    if not out["train"]:
        raise ConceptDataError(f"{where}: every concept of {root} is held out; leave most of them for training")
    return out
