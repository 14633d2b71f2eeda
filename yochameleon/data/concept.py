"""A concept's files, validated up front: photos, held-out photos, negative pools, conversations."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from yochameleon.data.conversations import load_conversations
from yochameleon.data.images import check_photo_count, list_images, list_images_recursive, validate_concept_name

log = logging.getLogger(__name__)


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
        # A test folder of all concepts contains this concept's own held-out photos: never call those negatives.
        test_set = {p.resolve() for p in test_photos} | photo_set
        test_negatives = [p for p in test_negatives if p.resolve() not in test_set]
        conversations = (load_conversations(cfg.conversations, name, photo_dir=cfg.photos)
                         if cfg.get("conversations") else [])
        return cls(name=name, photos=photos, negatives=negatives, test_photos=test_photos,
                   test_negatives=test_negatives, conversations=conversations,
                   description=cfg.get("description"), class_noun=cfg.get("class_noun"),
                   category=str(cfg.get("category") or "object"))

    def eval_split(self) -> tuple[list[Path], list[Path], str]:
        """Photos to measure recognition on: held-out when given, else the training data (said loudly)."""
        if self.test_photos:
            negatives = self.test_negatives or self.negatives[: max(len(self.test_photos), 4)]
            return self.test_photos, negatives, "held-out"
        log.warning("concept <%s> has no test_photos: recognition accuracy is measured on the TRAINING photos "
                    "and says little about generalisation", self.name)
        return self.photos, self.negatives[: max(len(self.photos), 4)], "train"
