"""How well the toy backbone knows its world: captions, attribute QA, definitions, generation.

    python -m yochameleon.toyworld.knowledge [--n 60]

Every figure is measured on scenes drawn from a seed the pretraining never used, through
the project's own inference code (`PersonalizedChameleon` with no concept loaded).
"""

from __future__ import annotations

import argparse
import json
import random

import torch

from yochameleon.data.chat import chat_layout
from yochameleon.metrics.recognition import p_yes, says_yes, yes_no_ids
from yochameleon.model.decoding import left_pad
from yochameleon.model.image_generation import decode_image_tokens, to_pil
from yochameleon.model.image_generation import draw as draw_images
from yochameleon.model.load import load_backbone
from yochameleon.model.personalized import PersonalizedChameleon
from yochameleon.toyworld import sentences, world
from yochameleon.toyworld.judge import HEADS, judge_accuracy, load_judge
from yochameleon.toyworld.spec import CAPTION_QUESTION, GENERATION_PROMPT, toyworld_dir

HELD_OUT = 50_000_000  # scene seeds for evaluation start here (pretraining draws from its own streams)


class ToyPrompts:
    """Prompt ids in the chat layout the pretraining used (and personalization uses)."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.layout = chat_layout(backbone)

    def text(self, text: str) -> list[int]:
        return self.layout.text(text)

    def image(self, image) -> list[int]:
        pixels = self.backbone.processor.image_processor(image, return_tensors="pt")["pixel_values"]
        return self.layout.image(self.backbone.encode_images(pixels)[0].tolist())

    def prompt(self, question: str, image=None, prefix: str = "") -> list[int]:
        """`prefix` is a definition such as "<name> is an orange striped heart.\\n" (none by default)."""
        return self.layout.prompt(self.text(question), self.text(prefix) if prefix else (),
                                  self.image(image) if image is not None else ())

    def image_prompt(self, question: str, prefix: str = "") -> list[int]:
        """A generation prompt: the prompt, then begin-of-image."""
        return self.layout.image_prompt(self.text(question), self.text(prefix) if prefix else ())


def _greedy(model, backbone, prompts: list[list[int]], max_new: int = 24) -> list[str]:
    ids, mask = left_pad(prompts, backbone.tokenizer.pad_token_id)
    out = model.generate_text(ids, mask, max_new, backbone.text_banned_ids(), backbone.text_stop_ids())
    return [backbone.tokenizer.decode(o).strip() for o in out]


def _first_word(text: str) -> str:
    return text.split()[0].strip(".,").lower() if text.split() else ""


@torch.no_grad()
def knowledge_report(backbone, judge=None, n: int = 60, seed: int = 0, batch: int = 16) -> dict:
    """Accuracies of the backbone on held-out scenes (and the judge's view of its drawings)."""
    model = PersonalizedChameleon(backbone.model, [])
    prompts = ToyPrompts(backbone)
    rng = random.Random(HELD_OUT + seed)
    scenes = [world.random_scene(rng) for _ in range(n)]
    report: dict = {}

    # Captions: a thing counts when "colour pattern shape" appears in the caption.
    captions = []
    for start in range(0, n, batch):
        chunk = scenes[start:start + batch]
        captions += _greedy(model, backbone, [prompts.prompt(CAPTION_QUESTION, world.render(s)) for s in chunk], 30)
    named = [f"{t.colour} {t.pattern} {t.shape}" in c.lower() for s, c in zip(scenes, captions) for t in s.things]
    report["caption_things_named"] = sum(named) / len(named)
    report["caption_example"] = {"truth": scenes[0].caption(), "model": captions[0]}

    # Attribute questions on the image: the first word of the greedy answer.
    qa = [(s, *rng.choice(world.attribute_questions(s, rng))) for s in scenes]
    answers = []
    for start in range(0, n, batch):
        chunk = qa[start:start + batch]
        answers += _greedy(model, backbone, [prompts.prompt(q, world.render(s)) for s, q, _ in chunk], 4)
    report["vqa_accuracy"] = sum(_first_word(a) == t.lower() for (_, _, t), a in zip(qa, answers)) / n

    # Definitions: "<name> is an orange striped heart." + photo + "Is <name> in this photo?"
    yes, no = yes_no_ids(backbone.tokenizer)
    name = "<reserved12345>"  # outside the pretraining name pool
    cases = []
    for i in range(n):
        thing = world.random_thing(rng)
        positive = i % 2 == 0
        shown = thing if positive else world.look_alike(thing, rng)
        cases.append((thing, world.random_scene(rng, two_things=0.0, must_include=shown), positive))
    correct = 0
    for start in range(0, n, batch):
        chunk = cases[start:start + batch]
        batch_prompts = [prompts.prompt(sentences.RECOGNITION_QUESTIONS[0].replace("<sks>", name), world.render(s),
                                        f"{name} is {t.short()}.\n") for t, s, _ in chunk]
        ids, mask = left_pad(batch_prompts, backbone.tokenizer.pad_token_id)
        verdicts = says_yes(p_yes(model.last_logits(ids, mask), yes, no)).tolist()
        correct += sum(y == p for y, (_, _, p) in zip(verdicts, chunk))
    report["definition_recognition_accuracy"] = correct / n

    # Definitions, text only: "What colour is <name>?"
    asks = [(world.random_thing(rng), rng.choice(list(world.CONCEPT_QUESTIONS))) for _ in range(n)]
    replies = []
    for start in range(0, n, batch):
        chunk = asks[start:start + batch]
        replies += _greedy(model, backbone, [prompts.prompt(world.CONCEPT_QUESTIONS[a][0].replace("<sks>", name),
                                                            prefix=f"{name} is {t.short()}.\n") for t, a in chunk], 3)
    report["definition_text_qa_accuracy"] = sum(_first_word(r) == getattr(t, a) for (t, a), r in zip(asks, replies)) / n

    if judge is not None and backbone.has_decoder:
        report.update(vq_ceiling(backbone, judge, rng, n))
        report.update(generation_faithfulness(model, backbone, prompts, judge, rng, n=min(n, 24), batch=batch))
    return report


@torch.no_grad()
def vq_ceiling(backbone, judge, rng, n: int) -> dict:
    """The judge on VQ round trips of held-out renders: what any image the backbone reads or draws can show."""
    scenes = [world.random_scene(rng, two_things=0.0) for _ in range(n)]
    pixels = backbone.processor.image_processor([world.render(s) for s in scenes], return_tensors="pt")["pixel_values"]
    rebuilt = to_pil(decode_image_tokens(backbone, backbone.encode_images(pixels)),
                     backbone.processor.image_processor.rescale_factor)
    return {f"vq_roundtrip_{k}": v for k, v in judge_accuracy(judge, scenes, rebuilt).items()}


def identities() -> list[world.Thing]:
    """Every identity of the world (shape x colour x pattern: 144 things)."""
    return [world.Thing(s, c, p) for s in world.SHAPES for c in world.COLOURS for p in world.PATTERNS]


def draw(model, backbone, prompt_ids: list[list[int]], batch: int = 24, seed: int = 0) -> list:
    """Images for image prompts with the backbone's default sampling (what `make demo` samples with)."""
    unconditional = chat_layout(backbone).unconditional_image_prompt()
    return draw_images(model, backbone, prompt_ids, [unconditional] * len(prompt_ids), backbone.sampling(),
                       torch.Generator().manual_seed(seed), batch)


def judged(judge, images, things) -> dict:
    """Fraction of images whose shape, colour, pattern (and all three) the judge reads as `things`'."""
    verdicts = judge.predict(images)
    right = [{a: v[a] == getattr(t, a) for a in HEADS} for v, t in zip(verdicts, things)]
    return {"all": sum(all(r.values()) for r in right) / len(right),
            **{a: sum(r[a] for r in right) / len(right) for a in HEADS}}


def generation_faithfulness(model, backbone, prompts: ToyPrompts, judge, rng, n: int = 24, batch: int = 12,
                            per_identity: int = 2) -> dict:
    """The judge on drawings, sampled as `make demo` samples (`Backbone.sampling()`'s defaults):

    - `literal`: "A photo of a blue dotted star." for every identity of the world, `per_identity` each;
    - `caption`: "A photo of a large blue dotted star." for `n` random things;
    - `definition`: "<name> is a blue dotted star.\n" then "A photo of <name>." for the same things.
    """
    out = {}
    everyone = identities() * per_identity
    images = draw(model, backbone, [prompts.image_prompt(GENERATION_PROMPT.format(what=t.short())) for t in everyone])
    out |= {f"generation_literal_{k}": v for k, v in judged(judge, images, everyone).items()}
    out["generation_literal_images"] = len(everyone)
    things = [world.random_thing(rng) for _ in range(n)]
    name = "<reserved12345>"
    for label, make in (
        ("caption", lambda t: prompts.image_prompt(GENERATION_PROMPT.format(what=t.noun))),
        ("definition", lambda t: prompts.image_prompt(f"A photo of {name}.", prefix=f"{name} is {t.short()}.\n")),
    ):
        images = draw(model, backbone, [make(t) for t in things], batch)
        out |= {f"generation_{label}_{k}": v for k, v in judged(judge, images, things).items()}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--path", default=None, help="toy backbone directory (default: the cached build)")
    args = parser.parse_args(argv)
    path = args.path or toyworld_dir()
    if not args.path and not (path / "config.json").is_file():  # building is build.py's job (it sits above this)
        raise SystemExit(f"error: no toy-world backbone at {path}; run `make toyworld` first, or pass --path DIR")
    backbone = load_backbone(path, name="toyworld")
    print(json.dumps(knowledge_report(backbone, load_judge(path), n=args.n), indent=2))


if __name__ == "__main__":
    main()
