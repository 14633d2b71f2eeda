"""Evaluation questions: Yo'LLaVA-format multiple-choice files and the shipped DreamBooth set.

Visual QA (Yo'LLaVA format, a list of questions per image also accepted)::

    {"<image path>": {"question": "...", "options": {"A": "...", "B": "..."}, "correct_answer": "A"}}

Text-only QA, keyed by subject::

    {"<subject>": [{"question": "What colour is <sks>?", "options": {...}, "correct_answer": "B"}, ...]}

Multi-concept QA, a list naming two subjects written `<subject>` in the text::

    [{"concepts": ["dog", "cat"], "question": "...", "options": {...}, "correct_answer": "A"}]
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from yochameleon.errors import YoChameleonError

log = logging.getLogger(__name__)

LETTER = re.compile(r"[A-Z]")
SHIPPED_SET = Path(__file__).resolve().parent / "sets" / "dreambooth"


class QuestionFileError(YoChameleonError):
    """A question file is malformed."""


@dataclass(frozen=True)
class MCQuestion:
    """One multiple-choice question; `image` is None for text-only questions."""

    question: str
    options: dict[str, str]
    answer: str
    image: Path | None = None
    concepts: tuple[str, ...] = ()
    source: str = ""  # file and key, for messages

    def prompt_text(self) -> str:
        """Question, lettered options and the instruction to answer with a letter."""
        lines = [self.question] + [f"{letter}. {text}" for letter, text in self.options.items()]
        return "\n".join(lines) + "\nAnswer with the option's letter."


@dataclass
class LoadedQuestions:
    """Questions that can be asked, and the ones skipped because their image is missing."""

    questions: list[MCQuestion] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)


def _read_json(path: Path):
    if not path.is_file():
        raise QuestionFileError(f"question file {path} does not exist; fix the path in the evaluation config")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise QuestionFileError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from err


def _question(entry, path: Path, where: str, image: Path | None = None, concepts=()) -> MCQuestion:
    if not isinstance(entry, dict) or not {"question", "options", "correct_answer"} <= set(entry):
        raise QuestionFileError(f"{path}: {where} needs \"question\", \"options\" and \"correct_answer\"; "
                                f"see {__name__} for the format")
    options = entry["options"]
    if not isinstance(options, dict) or len(options) < 2:
        raise QuestionFileError(f"{path}: {where}: \"options\" must map at least two letters to answers")
    bad = [key for key in options if not (isinstance(key, str) and LETTER.fullmatch(key))]
    if bad:
        raise QuestionFileError(f"{path}: {where}: option keys must be single capital letters A, B, C, ... "
                                f"(got {bad[0]!r}); rename the options, answers are scored by their letter")
    answer = str(entry["correct_answer"]).strip().strip(".")
    if answer not in options:
        raise QuestionFileError(f"{path}: {where}: correct_answer {entry['correct_answer']!r} is not one of the "
                                f"options {sorted(options)}")
    return MCQuestion(str(entry["question"]), {k: str(v) for k, v in options.items()}, answer, image,
                      tuple(concepts), f"{path.name}:{where}")


def _entries(value) -> list:
    return value if isinstance(value, list) else [value]


def load_visual_qa(path: str | Path, images_root: str | Path | None = None,
                   only: set[Path] | None = None) -> LoadedQuestions:
    """Visual questions; an image that is not found is listed and its questions skipped.

    `only` keeps the questions about those images (resolved paths), e.g. one subject's test photos.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise QuestionFileError(f"{path} must be a JSON object keyed by image path; see {__name__}")
    root = Path(images_root) if images_root else path.parent
    loaded = LoadedQuestions()
    for key, value in data.items():
        image = Path(key) if Path(key).is_absolute() else root / key
        if only is not None and image.resolve() not in only:
            continue
        if not image.is_file():
            loaded.missing_images.append(str(image))
            continue
        for index, entry in enumerate(_entries(value)):
            loaded.questions.append(_question(entry, path, f"{key}[{index}]", image=image))
    if loaded.missing_images:
        log.warning("%s: %d image(s) not found, their questions are skipped: %s", path,
                    len(loaded.missing_images), ", ".join(loaded.missing_images[:5]))
    return loaded


def load_text_qa(path: str | Path, subject: str) -> list[MCQuestion]:
    """Text-only questions about one subject (empty when the file has none for it)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise QuestionFileError(f"{path} must be a JSON object keyed by subject; see {__name__}")
    return [_question(e, path, f"{subject}[{i}]") for i, e in enumerate(_entries(data.get(subject, [])))]


def load_multi_concept(path: str | Path) -> list[MCQuestion]:
    """Questions naming two subjects."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list):
        raise QuestionFileError(f"{path} must be a JSON list of questions with \"concepts\"; see {__name__}")
    out = []
    for index, entry in enumerate(data):
        concepts = entry.get("concepts") if isinstance(entry, dict) else None
        if not isinstance(concepts, list) or len(concepts) != 2:
            raise QuestionFileError(f"{path}: question {index} needs \"concepts\": [two subject names]")
        out.append(_question(entry, path, f"[{index}]", concepts=concepts))
    return out


@dataclass
class EvalSet:
    """The shipped (or a user's) evaluation set: split, descriptions and question files."""

    root: Path
    images: Path

    def _file(self, name: str) -> Path:
        return self.root / name

    def split(self) -> dict:
        return _read_json(self._file("split.json"))

    def subjects(self) -> list[str]:
        return sorted(self.split())

    def test_photos(self, subject: str) -> list[Path]:
        split = self.split()
        if subject not in split:
            raise QuestionFileError(f"{self._file('split.json')} has no subject {subject!r}; "
                                    f"known: {', '.join(sorted(split))}")
        return [self.images / p for p in split[subject]["test"]]

    def other_test_photos(self, subject: str) -> list[Path]:
        """Every other subject's test photos: the recognition negatives of the Yo'LLaVA protocol."""
        return [self.images / p for s, v in sorted(self.split().items()) if s != subject for p in v["test"]]

    def descriptions(self) -> dict[str, str]:
        path = self._file("descriptions.json")
        return _read_json(path) if path.is_file() else {}

    def text_qa(self, subject: str) -> list[MCQuestion]:
        return load_text_qa(self._file("text_qa.json"), subject)

    def visual_qa(self, subject: str) -> LoadedQuestions:
        keys = {(self.images / p).resolve() for p in self.split().get(subject, {}).get("test", [])}
        return load_visual_qa(self._file("visual_qa.json"), self.images, only=keys)

    def multi_concept(self, subject: str) -> list[MCQuestion]:
        path = self._file("multi_concept.json")
        return [q for q in load_multi_concept(path) if subject in q.concepts] if path.is_file() else []
