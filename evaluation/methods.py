"""What is evaluated: a trained adapter, or a prompting baseline on the same frozen backbone.

Every method answers through the same `SampleBuilder` chat layout and the same scoring
code; they differ only in how the subject is introduced before the question:

- `adapter`: the learned soft prompt `<sks> is <g-tokens><u-tokens>.` (+ self-prompting);
- `plain`: nothing; the subject is just its name;
- `description`: "`name` is `<a written description>`.";
- `reference_photos`: "Photos of `name`:" followed by the training photos as image tokens;
- `encoder`: the concept's rows encoded from its training photos by a concept encoder (zero-shot).

`tokens` is what introducing the subject costs in the prompt, as the papers report it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from yochameleon.data.images import load_image
from yochameleon.data.samples import SampleBuilder
from yochameleon.model.personalized import PersonalizedChameleon

BASELINES = ("plain", "description", "reference_photos")


@lru_cache(maxsize=256)
def cached_photo(path: str):
    """The image file at `path`, read once (the tasks read the same photos for every method)."""
    return load_image(path)


class TextSubject:
    """A subject introduced by text (and optionally photos) instead of learned tokens."""

    def __init__(self, name: str, description: str | None = None, photos: tuple = ()):
        self.name, self.description, self.photos = name, description, tuple(photos)
        self.token_ids = torch.zeros(0, dtype=torch.long)

    @property
    def identifier(self) -> str:
        return self.name

    def system_prefix(self) -> str:
        if self.photos:
            return f"Photos of {self.name}:"
        return f"{self.name} is {self.description}." if self.description else ""


class EvalBuilder(SampleBuilder):
    """SampleBuilder that reads image files itself (no VQ cache); the introduction, reference photos included, is
    `SampleBuilder.prefix_ids` (`samples.introduction_ids`), the same ids training built."""

    def shown_image_ids(self, image, flip: bool = False) -> list[int]:
        if isinstance(image, (str, Path)):
            image = cached_photo(str(image))
        return super().shown_image_ids(image, flip)


@dataclass
class Method:
    """A named way to put subjects in front of the frozen backbone."""

    name: str
    backbone: object
    model: PersonalizedChameleon
    subjects: dict  # subject name (as written in questions, `<name>`) -> concept object (tokens or TextSubject)
    self_prompting: bool = False
    self_prompt: str = "forced"
    notes: dict = field(default_factory=dict)

    def builder(self, subject: str, others: tuple[str, ...] = ()) -> EvalBuilder:
        """Builder whose `<sks>` is `subject`; `others` are also introduced (multi-concept questions)."""
        main = self.subjects[subject]
        extra = tuple(self.subjects[o] for o in others)
        return EvalBuilder(self.backbone, main, None, self.self_prompting, extra)

    def rewrite(self, text: str, subject: str) -> str:
        """Question text naming `<subject>` in the eval set's spelling -> this method's concept names."""
        concept = self.subjects[subject]
        learned = self.name in ("adapter", "encoder")  # concepts with tokens of their own are named <name>
        return text.replace(f"<{subject}>", f"<{concept.name}>" if learned else concept.name)

    def tokens(self, subject: str) -> int:
        return self.builder(subject).introduction_tokens()


def adapter_method(personalized_model, subjects: dict[str, str]) -> Method:
    """The trained adapters; `subjects` maps eval-set subject -> loaded concept name."""
    concepts = {s: personalized_model.concepts[c] for s, c in subjects.items()}
    first = next(iter(subjects.values()))
    return Method("adapter", personalized_model.backbone, personalized_model.model, concepts,
                  self_prompting=personalized_model.self_prompting[first],
                  self_prompt=personalized_model.self_prompt_mode[first])


def encoder_method(backbone, encoder_dir, name: str, subject: str, photos) -> Method:
    """A concept encoded from `photos` by the encoder at `encoder_dir` (no training); `notes` says what adding it
    cost in seconds."""
    from yochameleon.concept.encoder import ZeroShot, load_encoder

    zero_shot = ZeroShot(load_encoder(encoder_dir, backbone), backbone)
    tokens = zero_shot.encode(name, list(photos))
    recipe = zero_shot.config.recipe or {}
    return Method("encoder", backbone, PersonalizedChameleon(backbone.model, [tokens]).eval(), {subject: tokens},
                  self_prompting=bool(recipe.get("self_prompting", True)),
                  self_prompt=str(recipe.get("inference", {}).get("self_prompt", "forced")),
                  notes={"seconds_to_add": tokens.encoded_seconds, "photos": len(photos)})


def baseline_method(kind: str, backbone, names: dict[str, str], descriptions: dict[str, str],
                    photos: dict[str, list]) -> Method:
    """A prompting baseline over the plain backbone; `names` maps subject -> the name used in text."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; choose from {', '.join(BASELINES)}")
    model = PersonalizedChameleon(backbone.model, []).eval()
    subjects = {}
    for subject, name in names.items():
        if kind == "description" and not descriptions.get(subject):
            continue
        subjects[subject] = TextSubject(name, descriptions.get(subject) if kind == "description" else None,
                                        tuple(photos.get(subject, ())) if kind == "reference_photos" else ())
    return Method(kind, backbone, model, subjects)
