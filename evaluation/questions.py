"""Evaluation questions: the published Yo'LLaVA files, the project's own format, and the shipped DreamBooth set.

Visual QA, the project's format (a list of questions per image also accepted)::

    {"<image path>": {"question": "...", "options": {"A": "...", "B": "..."}, "correct_answer": "A"}}

Visual QA as Yo'LLaVA publishes it (`yollava-visual-qa.json`), keyed by subject, then by an
image path relative to the folder that holds `yollava-data/`::

    {"bo": {"./yollava-data/test/bo/0.png": {"question": "...", "options": {...}, "correct_answer": "A"}}}

Text-only QA, keyed by subject (a list, or Yo'LLaVA's `text_qa.json`: an object keyed "0", "1", ...
whose entries spell the key `option`, singular)::

    {"<subject>": [{"question": "What colour is <sks>?", "options": {...}, "correct_answer": "B"}, ...]}
    {"bo": {"0": {"question": "Is sks a dog or a cat?", "option": {"A": "Dog", "B": "Cat"}, "correct_answer": "A"}}}

In every format a bare `sks` written as a whole word ("Is sks a dog?", "sks's breed") means `<sks>`;
"asks", "tasks" or "sksx" are left alone.

Multi-concept QA, a list naming two subjects written `<subject>` in the text::

    [{"concepts": ["dog", "cat"], "question": "...", "options": {...}, "correct_answer": "A"}]
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from yochameleon.data.images import IMAGE_SUFFIXES
from yochameleon.errors import YoChameleonError

log = logging.getLogger(__name__)

LETTER = re.compile(r"[A-Z]")
# `sks` as a whole word, not already written `<sks>`: "sks's", "sks?" yes; "asks", "sksx", "<sks>" no.
BARE_SKS = re.compile(r"(?<![\w<])sks(?![\w>])")
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


def mark_subject(text: str) -> str:
    """A bare whole-word `sks` (Yo'LLaVA's text questions) becomes the `<sks>` placeholder."""
    return BARE_SKS.sub("<sks>", text)


def _is_entry(value) -> bool:
    return isinstance(value, dict) and "question" in value


def _question(entry, path: Path, where: str, image: Path | None = None, concepts=()) -> MCQuestion:
    if isinstance(entry, dict) and "options" not in entry and "option" in entry:
        entry = {**entry, "options": entry["option"]}  # Yo'LLaVA's text_qa.json spells it `option`
    if not isinstance(entry, dict) or not {"question", "options", "correct_answer"} <= set(entry):
        raise QuestionFileError(f"{path}: {where} needs \"question\", \"options\" (or \"option\") and "
                                f"\"correct_answer\"; see {__name__} for the format")
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
    return MCQuestion(mark_subject(str(entry["question"])), {k: mark_subject(str(v)) for k, v in options.items()},
                      answer, image, tuple(concepts), f"{path.name}:{where}")


def _entries(value) -> list:
    """One entry, a list of entries, or an object of entries keyed "0", "1", ... (in the file's order)."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and value and not _is_entry(value) and all(_is_entry(v) for v in value.values()):
        return list(value.values())
    return [value]


def _by_subject(data: dict) -> bool:
    """True for Yo'LLaVA's visual file: subject -> image path -> question(s)."""
    return bool(data) and all(isinstance(v, dict) and not _is_entry(v) for v in data.values())


def _image_path(key: str, base: Path, data_root: Path | None) -> Path:
    """`key` under `base`; failing that, its tail from `train/` or `test/` on under `data_root`.

    The tail lets `./yollava-data/test/bo/0.png` resolve when the data root has another name.
    """
    key_path = Path(key)
    if key_path.is_absolute():
        return key_path
    candidates = [base / key_path]
    if data_root is not None:
        parts = key_path.parts
        candidates += [data_root / Path(*parts[i:]) for i, part in enumerate(parts) if part in ("train", "test")]
    # Not found: the last candidate (under the configured data root) is where it was expected.
    return next((c for c in candidates if c.is_file()), candidates[-1])


def load_visual_qa(path: str | Path, images_root: str | Path | None = None,
                   only: set[Path] | None = None, data_root: str | Path | None = None,
                   subjects: set[str] | None = None) -> LoadedQuestions:
    """Visual questions; an image that is not found is listed and its questions skipped.

    Image paths are relative to `images_root` (default: the file's folder). In Yo'LLaVA's
    subject-keyed file they are relative to the folder holding the data root (`data_root`,
    default: the file's folder, where Yo'LLaVA ships it), then tried by their `test/...` tail under
    `data_root`. `only` keeps the questions about those images (resolved paths); `subjects` keeps
    those subjects of a subject-keyed file.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise QuestionFileError(f"{path} must be a JSON object keyed by image path (or by subject, then image "
                                f"path); see {__name__}")
    if _by_subject(data):
        root = Path(data_root) if data_root else path.parent
        base = Path(images_root) if images_root else root.parent
        items = [(f"{subject}/{key}", key, value) for subject, images in data.items()
                 if subjects is None or subject in subjects for key, value in images.items()]
    else:
        root = Path(data_root) if data_root else None
        base = Path(images_root) if images_root else path.parent
        items = [(key, key, value) for key, value in data.items()]
    loaded = LoadedQuestions()
    for where, key, value in items:
        image = _image_path(key, base, root)
        if only is not None and image.resolve() not in only:
            continue
        if not image.is_file():
            loaded.missing_images.append(str(image))
            continue
        for index, entry in enumerate(_entries(value)):
            loaded.questions.append(_question(entry, path, f"{where}[{index}]", image=image))
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
    kind = "dreambooth"

    def _file(self, name: str) -> Path:
        return self.root / name

    def available(self) -> bool:
        return self._file("split.json").is_file() and self.images.is_dir()

    def where(self) -> str:
        return f"{self.root} with images {self.images}"

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


YOLLAVA_VISUAL = "yollava-visual-qa.json"
YOLLAVA_TEXT = "text_qa.json"


def _beside(root: Path, name: str) -> Path | None:
    """`name` in the data root, else in the folder holding it (None when in neither)."""
    return next((p for p in (root / name, root.parent / name) if p.is_file()), None)


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class YoLLaVASet:
    """The Yo'LLaVA benchmark: `<root>/train/<subject>/`, `<root>/test/<subject>/` and the two published files.

    Recognition by the Yo'LLaVA protocol: positives are the subject's test photos, negatives every
    other subject's test photos. `visual_file` / `text_file` default to `yollava-visual-qa.json` and
    `text_qa.json` in the data root, else in the folder holding it.
    """

    root: Path
    visual_file: Path | None = None
    text_file: Path | None = None
    kind = "yollava"

    def __post_init__(self):
        self.root = Path(self.root)
        self.visual_file = Path(self.visual_file) if self.visual_file else _beside(self.root, YOLLAVA_VISUAL)
        self.text_file = Path(self.text_file) if self.text_file else _beside(self.root, YOLLAVA_TEXT)
        for path in (self.visual_file, self.text_file):
            if path is not None and not path.is_file():
                raise QuestionFileError(f"question file {path} does not exist; fix eval_set.visual_qa / "
                                        "eval_set.text_qa, or leave them null to find them in the data root")

    def available(self) -> bool:
        return (self.root / "test").is_dir()

    def where(self) -> str:
        return f"{self.root} (needs test/<subject>/ folders)"

    def subjects(self) -> list[str]:
        test = self.root / "test"
        return sorted(p.name for p in test.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if test.is_dir() else []

    def test_photos(self, subject: str) -> list[Path]:
        if subject not in self.subjects():
            raise QuestionFileError(f"{self.root / 'test'} has no folder {subject!r}; known subjects: "
                                    f"{', '.join(self.subjects())}")
        return _image_files(self.root / "test" / subject)

    def other_test_photos(self, subject: str) -> list[Path]:
        """Every other subject's test photos: the recognition negatives of the Yo'LLaVA protocol."""
        return [p for s in self.subjects() if s != subject for p in _image_files(self.root / "test" / s)]

    def descriptions(self) -> dict[str, str]:
        return {}

    def text_qa(self, subject: str) -> list[MCQuestion]:
        return load_text_qa(self.text_file, subject) if self.text_file else []

    def visual_qa(self, subject: str) -> LoadedQuestions:
        if not self.visual_file:
            return LoadedQuestions()
        return load_visual_qa(self.visual_file, data_root=self.root, subjects={subject})

    def multi_concept(self, subject: str) -> list[MCQuestion]:
        return []

    def summary(self) -> dict:
        """What loads from the whole set: subjects, questions per file, images not found."""
        visual = load_visual_qa(self.visual_file, data_root=self.root) if self.visual_file else LoadedQuestions()
        text = _read_json(self.text_file) if self.text_file else {}
        n_text = sum(len(self.text_qa(s)) for s in text) if isinstance(text, dict) else 0
        return {"kind": self.kind, "root": str(self.root), "subjects": len(self.subjects()),
                "visual_qa_file": str(self.visual_file) if self.visual_file else None,
                "text_qa_file": str(self.text_file) if self.text_file else None,
                "visual_qa_loaded": len(visual.questions), "visual_qa_missing_images": len(visual.missing_images),
                "text_qa_loaded": n_text}
