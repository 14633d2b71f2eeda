"""What the toy backbone is pretrained on: one example of a kind, made by a small builder, and the mixtures.

    make_example(kind, rng, ids, code_of)    one (input ids, labels) of `kind`; `code_of(scene)` gives its codes
    BUILDERS                                 kind -> builder: the whole list of kinds
    MIXTURE, FOCUS, DRAW                     the kinds' shares in stage 2, stage 3's phases, stage 4

Every example is in the chat layout personalization uses (`data/chat.py`): pretraining in it is
what makes the toy backbone personalizable. The definition kinds ("<name> is an orange striped
heart.\\n" then a task about <name>) name a thing by a random reserved token, as a concept's soft
prompt names it by learned tokens. A builder draws from `rng` in a fixed order, so a seed gives the
same examples (tests/test_toy_pretrain.py pins them).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from functools import cached_property, partial

import torch

from yochameleon.data.chat import ChameleonLayout
from yochameleon.toyworld import sentences, world
from yochameleon.toyworld.spec import CAPTION_QUESTION, GENERATION_PROMPT

NAME_POOL = (10000, 11000)  # reserved-token numbers used as names in pretraining (recipes use 16200+)
Example = tuple[list[int], list[int]]  # (input ids, labels)


@dataclass
class Ids:
    """Token facts the example builders need."""

    tokenizer: object
    bos: int
    eot: int
    boi: int
    eoi: int
    first_image_id: int
    names: list[int]  # reserved-token numbers: <reservedNNNNN> names a thing in a definition

    @cached_property
    def layout(self) -> ChameleonLayout:
        """The chat layout personalization uses: pretraining in it is what makes the toy personalizable."""
        return ChameleonLayout(self.tokenizer, self.bos, self.boi, self.eoi, self.eot)

    def text(self, text: str) -> list[int]:
        return self.layout.text(text)

    def image(self, codes: torch.Tensor) -> list[int]:
        return self.layout.image((codes + self.first_image_id).tolist())


def _example(ids: Ids, question: list[int], answer: list[int], prefix: list[int] = (), image: list[int] = (),
             unscored: set[int] = frozenset()) -> Example:
    """(input ids, labels) in the chat layout: loss on the answer and end of turn, never on `unscored` ids (names)."""
    prompt = ids.layout.prompt(question, prefix, image)
    answer = ids.layout.answer(answer)
    return prompt + answer, [-100] * len(prompt) + [t if t not in unscored else -100 for t in answer]


def _said(ids: Ids, question: list[int], words: list[int], image: list[int], prefix: list[int] = (),
          name_id: int | None = None) -> Example:
    """An image answer that starts with `words` (given, never scored): the model learns to draw after other
    tokens sit between the end of turn and begin-of-image, as a personalized self-prompt group does."""
    tokens, labels = _example(ids, question, [*words, *image], prefix, unscored={name_id} if name_id else set())
    start = len(tokens) - len(image) - len(words) - 1  # the answer is words + image + end of turn
    return tokens, [*labels[:start], *([-100] * len(words)), *labels[start + len(words):]]


# ---- the world described, asked about and drawn --------------------------------------------------
def caption(rng: random.Random, ids: Ids, code_of) -> Example:
    scene = world.random_scene(rng)
    return _example(ids, ids.text(CAPTION_QUESTION), ids.text(scene.caption()), image=ids.image(code_of(scene)))


def vqa(rng: random.Random, ids: Ids, code_of) -> Example:
    scene = world.random_scene(rng)
    question, answer = rng.choice(world.attribute_questions(scene, rng))
    return _example(ids, ids.text(question), ids.text(f"{answer}."), image=ids.image(code_of(scene)))


def verify(rng: random.Random, ids: Ids, code_of, attribute: str | None = None) -> Example:
    """One attribute decides (`attribute`, else a random one): the match-to-Yes path definitions build on."""
    scene = world.random_scene(rng, two_things=0.0)
    thing = scene.things[0]
    attribute = attribute or rng.choice(world.ATTRIBUTES)
    truth = getattr(thing, attribute)
    asked = truth if rng.random() < 0.5 else world.other_value(attribute, truth, rng)
    question = f"Is the thing {'a ' if attribute == 'shape' else ''}{asked}?"
    return _example(ids, ids.text(question), ids.text("Yes." if asked == truth else "No."),
                    image=ids.image(code_of(scene)))


def draw(rng: random.Random, ids: Ids, code_of) -> Example:
    """The literal words a user types: "A photo of a blue dotted star." -> one thing."""
    scene = world.random_scene(rng, two_things=0.0)
    return _example(ids, ids.text(GENERATION_PROMPT.format(what=scene.things[0].short())), ids.image(code_of(scene)))


def draw_said(rng: random.Random, ids: Ids, code_of) -> Example:
    """Build 7: the words said again before the image, as a self-prompt group sits there."""
    scene = world.random_scene(rng, two_things=0.0)
    words = scene.things[0].short()
    return _said(ids, ids.text(GENERATION_PROMPT.format(what=words)), ids.text(words), ids.image(code_of(scene)))


def draw_unconditional(rng: random.Random, ids: Ids, code_of) -> Example:
    """The empty prompt classifier-free guidance samples against."""
    return _example(ids, ids.text(""), ids.image(code_of(world.random_scene(rng))))


def generate(rng: random.Random, ids: Ids, code_of) -> Example:
    scene = world.random_scene(rng, two_things=0.15)
    described = scene.caption()
    prompt = GENERATION_PROMPT.format(what=described[0].lower() + described[1:-1])
    return _example(ids, ids.text(prompt), ids.image(code_of(scene)))


# ---- the definition families: "<name> is an orange striped heart.\n" then a task about <name> ----------
@dataclass(frozen=True)
class Definition:
    """A random thing and the reserved token that names it, as the prefix introduces them."""

    name_text: str  # "<reserved10042>"
    name_id: int  # its id: never scored
    thing: world.Thing
    prefix: list[int]  # "<reserved10042> is an orange striped heart.\n"

    @classmethod
    def draw(cls, rng: random.Random, ids: Ids) -> Definition:
        name_text = f"<reserved{rng.choice(ids.names):05d}>"
        thing = world.random_thing(rng)
        prefix = ids.text(f"{name_text} is {thing.short()}.\n")
        return cls(name_text, ids.text(name_text)[0], thing, prefix)


def define_recognize_one(rng: random.Random, ids: Ids, code_of, attribute: str) -> Example:
    """One attribute decides: the shown thing is the defined one or differs from it there only."""
    d = Definition.draw(rng, ids)
    positive = rng.random() < 0.5
    other = world.other_value(attribute, getattr(d.thing, attribute), rng)
    shown = d.thing if positive else replace(d.thing, **{attribute: other})
    scene = world.random_scene(rng, two_things=0.0, must_include=shown)
    question = rng.choice(sentences.RECOGNITION_QUESTIONS).replace("<sks>", d.name_text)
    return _example(ids, ids.text(question), ids.text("Yes." if positive else "No."), d.prefix,
                    ids.image(code_of(scene)), {d.name_id})


def define_recognize(rng: random.Random, ids: Ids, code_of) -> Example:
    """Is <name> in this photo? Half the time it is; else a look-alike, or a random scene (then it may be)."""
    d = Definition.draw(rng, ids)
    roll = rng.random()
    if roll < 0.5:
        scene, positive = world.random_scene(rng, must_include=d.thing), True
    elif roll < 0.8:
        scene, positive = world.random_scene(rng, must_include=world.look_alike(d.thing, rng)), False
    else:
        scene = world.random_scene(rng)
        positive = any(t.identity == d.thing.identity for t in scene.things)
    question = rng.choice(sentences.RECOGNITION_QUESTIONS).replace("<sks>", d.name_text)
    answer = rng.choice(sentences.POSITIVE_ANSWERS if positive else sentences.NEGATIVE_ANSWERS)
    if rng.random() < SHORT_ANSWER:
        answer = "Yes." if positive else "No."
    return _example(ids, ids.text(question), ids.text(answer.replace("<sks>", d.name_text)), d.prefix,
                    ids.image(code_of(scene)), {d.name_id})


def define_text(rng: random.Random, ids: Ids, code_of) -> Example:
    """What colour / pattern / shape is <name>? With no image."""
    d = Definition.draw(rng, ids)
    attribute = rng.choice(list(world.CONCEPT_QUESTIONS))
    question, _ = world.CONCEPT_QUESTIONS[attribute]
    return _example(ids, ids.text(question.replace("<sks>", d.name_text)), ids.text(f"{getattr(d.thing, attribute)}."),
                    d.prefix, unscored={d.name_id})


def define_generate(rng: random.Random, ids: Ids, code_of, said: bool = False) -> Example:
    """A photo of <name>. `said` (build 7): the definition's words between the turn and the image."""
    d = Definition.draw(rng, ids)
    scene = world.random_scene(rng, two_things=0.0, must_include=d.thing)
    prompt = rng.choice(sentences.GENERATION_PROMPTS[:3]).replace("<sks>", d.name_text)
    if said:
        return _said(ids, ids.text(prompt), ids.text(d.thing.short()), ids.image(code_of(scene)), d.prefix, d.name_id)
    return _example(ids, ids.text(prompt), ids.image(code_of(scene)), d.prefix, unscored={d.name_id})


BUILDERS = {
    "caption": caption,
    "vqa": vqa,
    "verify": verify,
    "verify_colour": partial(verify, attribute="colour"),
    "draw": draw,
    "draw_said": draw_said,
    "draw_unconditional": draw_unconditional,
    "generate": generate,
    "define_recognize": define_recognize,
    **{f"define_recognize_{a}": partial(define_recognize_one, attribute=a) for a in world.ATTRIBUTES},
    "define_text": define_text,
    "define_generate": define_generate,
    "define_generate_said": partial(define_generate, said=True),
}


def make_example(kind: str, rng: random.Random, ids: Ids, code_of) -> Example:
    """One pretraining example of a kind; `code_of(scene)` gives the scene image's codes."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown example kind {kind!r}")
    return BUILDERS[kind](rng, ids, code_of)


# ---- the mixtures ------------------------------------------------------------------------------------
MIXTURE = {"caption": 0.10, "vqa": 0.16, "verify": 0.12, "generate": 0.10, "define_recognize": 0.34,
           "define_text": 0.05, "define_generate": 0.13}
# Half the recognition answers are a bare "Yes."/"No.": the loss is averaged per example, and in a
# ten-token answer the one token that decides gets a tenth of the weight (measured: with the long
# answers only and no `verify` family, 4500 steps left definition recognition at chance, 0.50;
# fine-tuning build 3 on bare-answer colour checks alone lifted them to 0.99 within 700 steps).
SHORT_ANSWER = 0.5
# Stage 3. Yes/no questions are never learnt inside the broad mixture (measured on build 4's
# stage 2, 6000 steps with `verify` at 12%: single-attribute checks 0.52, definition
# recognition 0.50, the Yes-No logit gap the same for every input): each answer is an
# interaction between the question and the image, and the gradient that would start the
# match-to-Yes path is drowned by the other families. Alone, colour checks are learnt within
# 100 steps (0.86); with that path in place, definitions where a single attribute decides (the
# shown thing differs from the definition in that attribute only) are learnt, and full
# definitions against look-alikes follow (0.50 -> 0.72 over the curriculum, measured on 96
# held-out cases). The last phase mixes the broad families back in so nothing is forgotten.
FOCUS = (
    {"verify_colour": 1.0},
    {"define_recognize_colour": 0.7, "verify": 0.3},
    {"define_recognize_colour": 0.2, "define_recognize_shape": 0.2, "define_recognize_pattern": 0.2, "verify": 0.2,
     "define_recognize": 0.2},
    {"define_recognize": 0.6, "verify": 0.2, "caption": 0.07, "vqa": 0.07, "define_text": 0.03, "define_generate": 0.03},
)


# Stage 4. Build 4 drew the right shape for a definition a quarter of the time (colour 0.54): caption-to-
# image was 10% of the broad mixture and had no short form. Drawing is trained last, from the literal
# words a user types ("A photo of a blue dotted star."), with an empty prompt 8% of the time so
# classifier-free guidance has an unconditional model to push against, and the understanding
# families replayed so the yes/no curriculum is not forgotten.
DRAW = {"draw": 0.42, "draw_unconditional": 0.08, "define_generate": 0.2, "generate": 0.06,
        "define_recognize": 0.14, "verify": 0.04, "define_text": 0.03, "vqa": 0.03}
