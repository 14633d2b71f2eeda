"""A concept's files, validated up front: photos, validation and test photos, negative pools, conversations,
and the text checks its answers are scored on.

Three splits: train (learn), val (choose: the best checkpoint, defaults), test (report once).
Nothing is ever chosen on the test split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from yochameleon.data.conversations import load_conversations
from yochameleon.data.images import check_photo_count, list_images, list_images_recursive, validate_concept_name
from yochameleon.errors import ConceptDataError

log = logging.getLogger(__name__)


def _refuse_shared(name: str, shared: set, what: str, why: str, fix: str) -> None:
    """Refuse a split whose files are also in another split (what chooses or reports must be held out)."""
    if shared:
        raise ConceptDataError(f"concept <{name}>: {len(shared)} {what} (e.g. {min(shared)}). {why}; {fix}.")


@dataclass
class EvalSplit:
    """Photos to score recognition on, and what they are."""

    name: str  # "val" | "test" | "train"
    positives: list[Path]
    negatives: list[Path]
    heldout: bool  # neither the positives nor the negatives were trained on
    note: str = ""  # says what is not held out, when something is not


WORDINGS = ("training", "heldout")  # a text check's wording: as in training, or never seen there


@dataclass(frozen=True)
class TextCheck:
    """A text-only multiple-choice question about the concept; the option whose first token scores highest answers."""

    question: str  # with <sks> (or <name>) for the concept, e.g. "What colour is <sks>?"
    options: tuple[str, ...]  # the answer words scored, e.g. the colours
    answer: str  # one of the options
    wording: str = "training"  # "training": the wording training used; "heldout": one it never saw
    attribute: str = ""  # what it asks about: figures per attribute (`text_qa_<attribute>`)


def parse_text_checks(name: str, entries) -> list[TextCheck]:
    """`concept.text_checks` entries ({question, options, answer, wording, attribute}) as TextChecks."""
    checks = []
    for index, entry in enumerate(entries or []):
        where = f"concept <{name}>: text_checks[{index}]"
        if not hasattr(entry, "get") or not entry.get("question") or not entry.get("options"):
            raise ConceptDataError(f"{where} needs a question, options and an answer, e.g. {{question: 'What colour "
                                   "is <sks>?', options: [red, blue], answer: red}}")
        options = tuple(str(o) for o in entry["options"])
        if len(options) < 2 or len(set(options)) != len(options):
            raise ConceptDataError(f"{where} has options {list(options)}: give at least two different options")
        answer, wording = str(entry.get("answer")), str(entry.get("wording") or "training")
        if answer not in options:
            raise ConceptDataError(f"{where}: answer {answer!r} is not one of the options {list(options)}")
        if wording not in WORDINGS:
            raise ConceptDataError(f"{where}: wording {wording!r} must be one of {', '.join(WORDINGS)}")
        checks.append(TextCheck(str(entry["question"]), options, answer, wording, str(entry.get("attribute") or "")))
    return checks


@dataclass
class ConceptData:
    """Everything training and evaluation need to know about one concept's data."""

    name: str
    photos: list[Path]
    negatives: list[Path]
    test_photos: list[Path] = field(default_factory=list)
    test_negatives: list[Path] = field(default_factory=list)
    conversations: list[dict] = field(default_factory=list)
    description: str | None = None
    class_noun: str | None = None  # e.g. "dog": lets generated answers about "the dog" become "<sks>"
    category: str = "object"  # object | pet | person | toy: which attribute questions to ask
    val_photos: list[Path] = field(default_factory=list)
    val_negatives: list[Path] = field(default_factory=list)
    text_checks: list[TextCheck] = field(default_factory=list)  # scored once at the end of training

    @classmethod
    def from_config(cls, cfg) -> "ConceptData":
        """Validate the concept config's paths and list its images."""
        name = validate_concept_name(str(cfg.name))
        photos = list_images(cfg.photos, f"photos of <{name}>")
        check_photo_count(photos, cfg.photos)
        negatives = list_images_recursive(list(cfg.negatives), "negative pool")
        photo_set = {p.resolve() for p in photos}
        negatives = [p for p in negatives if p.resolve() not in photo_set]
        test_photos = list_images(cfg.test_photos, f"held-out photos of <{name}>") if cfg.get("test_photos") else []
        test_negatives = (list_images_recursive(list(cfg.test_negatives), "held-out negatives")
                          if cfg.get("test_negatives") else [])
        val_photos = list_images(cfg.val_photos, f"validation photos of <{name}>") if cfg.get("val_photos") else []
        val_negatives = (list_images_recursive(list(cfg.val_negatives), "validation negatives")
                         if cfg.get("val_negatives") else [])
        if bool(val_photos) != bool(val_negatives):
            given, missing = ("val_photos", "val_negatives") if val_photos else ("val_negatives", "val_photos")
            raise ConceptDataError(
                f"concept <{name}>: concept.{given} is set but concept.{missing} is not. A validation split chooses "
                f"the best adapter and needs both held-out photos of <{name}> and held-out negatives; set "
                f"concept.{missing}, or remove concept.{given} (then the final adapter is kept and nothing is chosen).")
        test_set = {p.resolve() for p in test_photos}
        val_set = {p.resolve() for p in val_photos}
        _refuse_shared(name, val_set & photo_set, "validation photo(s) are also in concept.photos",
                       "A split is only held out if its files are nowhere else",
                       "give concept.val_photos a folder of its own")
        _refuse_shared(name, val_set & test_set, "validation photo(s) are also in concept.test_photos",
                       "A split is only held out if its files are nowhere else",
                       "give concept.val_photos a folder of its own")
        # A test folder of all concepts contains this concept's own held-out photos: never call those negatives.
        own = test_set | val_set | photo_set
        test_negatives = [p for p in test_negatives if p.resolve() not in own]
        val_negatives = [p for p in val_negatives if p.resolve() not in own]
        _refuse_shared(name, {p.resolve() for p in val_negatives} & {p.resolve() for p in test_negatives},
                       "image(s) are in both concept.val_negatives and concept.test_negatives",
                       "What chooses the adapter must not be what reports it",
                       "give the validation negatives a folder of their own")
        # A training negative that is also a held-out negative would be learnt and then used to choose best/
        # or to report: refused (not dropped), like the other overlaps, because it says the folders are
        # laid out wrongly (e.g. a negatives root that holds the held-out folders), which the user must fix.
        training_negatives = {p.resolve() for p in negatives}
        for key, held_out in (("val_negatives", val_negatives), ("test_negatives", test_negatives)):
            shared = training_negatives & {p.resolve() for p in held_out}
            _refuse_shared(name, shared, f"image(s) are in both concept.negatives and concept.{key} "
                           f"({', '.join(str(p) for p in sorted(shared)[:3])}{', ...' if len(shared) > 3 else ''})",
                           "A held-out negative must never be trained on, or the split that "
                           f"{'chooses best/' if key == 'val_negatives' else 'reports'} scores what training saw",
                           f"give concept.{key} folders of their own and keep them out of the concept.negatives "
                           "folders (which are searched recursively)")
        conversations = (load_conversations(cfg.conversations, name, photo_dir=cfg.photos)
                         if cfg.get("conversations") else [])
        return cls(name=name, photos=photos, negatives=negatives, test_photos=test_photos,
                   test_negatives=test_negatives, conversations=conversations,
                   description=cfg.get("description"), class_noun=cfg.get("class_noun"),
                   category=str(cfg.get("category") or "object"), val_photos=val_photos, val_negatives=val_negatives,
                   text_checks=parse_text_checks(name, cfg.get("text_checks")))

    def selection_split(self) -> EvalSplit:
        """What evaluations during training score: the validation split, else the training photos (said loudly).

        Only a validation split may choose anything (the best adapter); the training photos are
        scored to watch learning, never to choose.
        """
        if self.val_photos:
            return EvalSplit("val", self.val_photos, self.val_negatives, True)
        log.warning("concept <%s> has no val_photos/val_negatives: evaluations during training score the TRAINING "
                    "photos, and no best adapter is chosen (the final one is kept)", self.name)
        return EvalSplit("train", self.photos, self.negatives[: max(len(self.photos), 4)], False,
                         "training photos and training negatives")

    def test_split(self) -> EvalSplit | None:
        """The split scored once, at the end, for reporting (None without test_photos)."""
        if not self.test_photos:
            return None
        if self.test_negatives:
            return EvalSplit("test", self.test_photos, self.test_negatives, True)
        log.warning("concept <%s> has test_photos but no test_negatives: the held-out photos are scored against "
                    "TRAINING negatives, so the negative accuracy is not held out (set concept.test_negatives)",
                    self.name)
        return EvalSplit("test", self.test_photos, self.negatives[: max(len(self.test_photos), 4)], False,
                         "held-out positives, TRAINING negatives (no test_negatives)")
