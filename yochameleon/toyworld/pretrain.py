"""Pretrain a tiny Chameleon on the toy world, so personalization on it is measurable on a CPU.

    python -m yochameleon.toyworld.pretrain [--out DIR] [--seed 0]     (or: make toyworld)

Three stages, all on the CPU in bounded time, reproducible from the seed:

1. a VQ image tokenizer (the Chameleon encoder plus the Anole-layout decoder, 64x64 -> 8x8
   codes from a 512-entry codebook) trained to reconstruct world images;
2. the language model (`ChameleonForConditionalGeneration`, the 7B vocabulary layout) trained
   on captioning, attribute QA, caption-to-image generation, and the in-context use of a
   definition: "`<name>` is an orange striped heart." followed by recognition ("Is `<name>` in
   this photo?"), text questions ("What colour is `<name>`?") and "A photo of `<name>`.", where
   `<name>` is a random reserved token with a frozen random embedding. That last family is
   what personalization builds on: a concept's soft prompt `<sks> is <g-tokens><u-tokens>.` is
   the same sentence with learned tokens in place of the words;
3. a yes/no curriculum (`FOCUS`): colour checks alone, then definitions where one attribute
   decides, then full definitions with the broad families mixed back in. Stages 1 and 2 are
   cached on their own beside the build, so changing stage 3 costs minutes, not the build.

Only the rows of tokens the world uses are trained; the output rows of every other token
stay zero and are counted exactly in the softmax (their logits are all 0), so the loss is
the full 65536-way cross-entropy at a fraction of its cost.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from yochameleon.data.chat import ChameleonLayout
from yochameleon.data.samples import collate
from yochameleon.toyworld import sentences, world
from yochameleon.toyworld.judge import train_judge
from yochameleon.toyworld.spec import (CAPTION_QUESTION, GENERATION_PROMPT, JUDGE_FILE, TOY_LM_VERSION, TOY_SPEC,
                                       spec_key, to_pixels, toy_tokenizer, toyworld_dir)

log = logging.getLogger(__name__)

TOY_VQ_VERSION = "3"  # stage 1 changes less often than the language model; its own version keeps its cache
NAME_POOL = (10000, 11000)  # reserved-token numbers used as names in pretraining (recipes use 16200+)


# ---- stage 1: the VQ tokenizer ------------------------------------------------------------------
class AttributeProbe(torch.nn.Module):
    """Reads each position slot's (shape, colour, pattern) from quantized latents; 'none' if empty.

    Trained with the tokenizer (and thrown away): reconstruction alone lets the 8x8 codes
    drift to background and lighting while colour and shape blur (measured: a linear probe
    on the codes read colour 0.23 and shape 0.24, near chance), and then no language model
    on top can tell an orange heart from a red one. The probe's loss flows through the
    straight-through quantizer into the encoder, so the codes must carry the attributes.
    """

    SIZES = tuple(len(world.ATTRIBUTE_VALUES[a]) + 1 for a in world.ATTRIBUTES)

    def __init__(self, embed_dim: int, side: int):
        super().__init__()
        self.linear = torch.nn.Linear(embed_dim * side * side, len(world.POSITIONS) * sum(self.SIZES))

    @staticmethod
    def targets(scenes) -> torch.Tensor:
        """(B, slots, 3) class ids; the last class of each attribute means 'no thing here'."""
        values = [world.ATTRIBUTE_VALUES[a] for a in world.ATTRIBUTES]
        out = torch.tensor([len(v) for v in values]).repeat(len(scenes), len(world.POSITIONS), 1)
        for row, scene in enumerate(scenes):
            for thing in scene.things:
                slot = world.POSITIONS.index(thing.position)
                out[row, slot] = torch.tensor([v.index(getattr(thing, a)) for v, a in zip(values, world.ATTRIBUTES)])
        return out

    def loss(self, quant: torch.Tensor, scenes) -> torch.Tensor:
        logits = self.linear(quant.flatten(1)).view(len(scenes), len(world.POSITIONS), -1)
        target = self.targets(scenes)
        parts = logits.split(list(self.SIZES), dim=-1)
        return sum(F.cross_entropy(part.reshape(-1, part.shape[-1]), target[..., i].flatten())
                   for i, part in enumerate(parts))


def train_vq(model, seed: int, steps: int, batch: int, object_weight: float = 0.0,
             attribute_weight: float = 0.0, progress=None) -> dict:
    """Train encoder, codebook and decoder to reconstruct world images; returns figures.

    Object pixels weigh `1 + object_weight` in the reconstruction loss (the things, not the
    backgrounds, are what captions and concepts are about), and an `AttributeProbe` on the
    quantized latents adds `attribute_weight` x its loss.
    """
    vq = model.model.vqmodel
    vq.train()
    params = [p for name, p in vq.named_parameters()]
    for p in params:
        p.requires_grad_(True)
    side = vq.config.resolution // 2 ** (len(vq.config.channel_multiplier) - 1)
    probe = AttributeProbe(vq.config.embed_dim, side)
    optimizer = torch.optim.Adam(params + list(probe.parameters()), lr=2e-3)
    rng = random.Random(seed + 1)
    usage = torch.zeros(vq.quantize.num_embeddings)
    history, probe_history = [], []
    for step in range(steps):
        scenes = [world.random_scene(rng) for _ in range(batch)]
        pixels = to_pixels([world.render(s) for s in scenes])
        latent = vq.quant_conv(vq.encoder(pixels))
        if step == 0:  # start the codebook on real latents (no dead codes at the start)
            with torch.no_grad():
                flat = latent.permute(0, 2, 3, 1).reshape(-1, latent.shape[1])
                pick = torch.randint(0, len(flat), (vq.quantize.num_embeddings,), generator=torch.Generator().manual_seed(seed))
                vq.quantize.embedding.weight.copy_(flat[pick])
        quant, codebook_loss, codes = vq.quantize(latent)
        recon = vq.decoder(vq.post_quant_conv(quant))
        weight = 1 + object_weight * torch.from_numpy(np.stack([world.object_mask(s, pixels.shape[-1]) for s in scenes]))
        loss = ((recon - pixels) ** 2 * weight.unsqueeze(1)).sum() / (weight.sum() * 3) + codebook_loss
        if attribute_weight:
            probe_loss = probe.loss(quant, scenes)
            loss = loss + attribute_weight * probe_loss
            probe_history.append(float(probe_loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        usage += torch.bincount(codes.flatten(), minlength=len(usage)).float()
        if (step + 1) % 50 == 0 and step < 0.8 * steps:  # re-seed codes unused in the last window on latents
            with torch.no_grad():
                dead = (usage == 0).nonzero().flatten()
                if len(dead):
                    flat = latent.detach().permute(0, 2, 3, 1).reshape(-1, latent.shape[1])
                    vq.quantize.embedding.weight[dead] = flat[torch.randint(0, len(flat), (len(dead),))]
            usage.zero_()
        history.append(float(F.mse_loss(recon.detach(), pixels)))
        if progress is not None:
            progress(step, float(loss.detach()))
    vq.eval()
    for p in params:
        p.requires_grad_(False)
    report = {"vq_mse_first": float(np.mean(history[:20])), "vq_mse_last": float(np.mean(history[-20:]))}
    if probe_history:
        report["vq_probe_loss_last"] = float(np.mean(probe_history[-20:]))
    return report


@torch.no_grad()
def encode(model, images) -> torch.Tensor:
    """Images -> VQ codes (B, 64)."""
    vq = model.model.vqmodel
    latent = vq.quant_conv(vq.encoder(to_pixels(images)))
    _, _, codes = vq.quantize(latent)
    return codes.view(len(images), -1)


class SceneCodes:
    """Scene -> its image's VQ codes, kept; `prefetch` encodes a step's new scenes in one batch.

    One image at a time the VQ encoder was most of a pretraining step (measured: about 10x
    slower per image than a batch of 24 on 2 CPU cores).
    """

    def __init__(self, model):
        self.model = model
        self.codes: dict = {}

    def __call__(self, scene: world.Scene) -> torch.Tensor:
        if scene not in self.codes:
            self.prefetch([scene])
        return self.codes[scene]

    def prefetch(self, scenes) -> None:
        new = list(dict.fromkeys(s for s in scenes if s not in self.codes))
        if new:
            self.codes.update(zip(new, encode(self.model, [world.render(s) for s in new])))


def _examples(kinds, rng: random.Random, ids, code_of) -> list[tuple]:
    """The examples of one step. With a `SceneCodes`, a first pass records the scenes the examples
    draw (the random stream does not depend on codes), they are encoded together, and the stream
    is replayed: the same examples as one pass."""
    if isinstance(code_of, SceneCodes):
        state, seen = rng.getstate(), []
        placeholder = torch.zeros(1, dtype=torch.long)
        for kind in kinds:
            make_example(kind, rng, ids, lambda scene: seen.append(scene) or placeholder)
        code_of.prefetch(seen)
        rng.setstate(state)
    return [make_example(kind, rng, ids, code_of) for kind in kinds]


# ---- stage 2: the language model ----------------------------------------------------------------
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
             unscored: set[int] = frozenset()) -> tuple:
    """(input ids, labels) in the chat layout: loss on the answer and end of turn, never on `unscored` ids (names)."""
    prompt = ids.layout.prompt(question, prefix, image)
    answer = ids.layout.answer(answer)
    return prompt + answer, [-100] * len(prompt) + [t if t not in unscored else -100 for t in answer]


def _said(ids: Ids, question: list[int], words: list[int], image: list[int], prefix: list[int] = (),
          name_id: int | None = None) -> tuple:
    """An image answer that starts with `words` (given, never scored): the model learns to draw after other
    tokens sit between the end of turn and begin-of-image, as a personalized self-prompt group does."""
    tokens, labels = _example(ids, question, [*words, *image], prefix, unscored={name_id} if name_id else set())
    start = len(tokens) - len(image) - len(words) - 1  # the answer is words + image + end of turn
    return tokens, [*labels[:start], *([-100] * len(words)), *labels[start + len(words):]]


def make_example(kind: str, rng: random.Random, ids: Ids, code_of) -> tuple[list[int], list[int]]:
    """One pretraining example of a kind; `code_of(scene)` gives the scene image's codes."""
    if kind == "caption":
        scene = world.random_scene(rng)
        return _example(ids, ids.text(CAPTION_QUESTION), ids.text(scene.caption()), image=ids.image(code_of(scene)))
    if kind == "vqa":
        scene = world.random_scene(rng)
        question, answer = rng.choice(world.attribute_questions(scene, rng))
        return _example(ids, ids.text(question), ids.text(f"{answer}."), image=ids.image(code_of(scene)))
    if kind in ("verify", "verify_colour"):  # one attribute decides: the match-to-Yes path definitions build on
        scene = world.random_scene(rng, two_things=0.0)
        thing = scene.things[0]
        attribute = "colour" if kind == "verify_colour" else rng.choice(world.ATTRIBUTES)
        truth = getattr(thing, attribute)
        asked = truth if rng.random() < 0.5 else world.other_value(attribute, truth, rng)
        question = f"Is the thing {'a ' if attribute == 'shape' else ''}{asked}?"
        return _example(ids, ids.text(question), ids.text("Yes." if asked == truth else "No."),
                        image=ids.image(code_of(scene)))
    if kind == "draw":  # the literal words a user types: "A photo of a blue dotted star." -> one thing
        scene = world.random_scene(rng, two_things=0.0)
        return _example(ids, ids.text(GENERATION_PROMPT.format(what=scene.things[0].short())), ids.image(code_of(scene)))
    if kind == "draw_said":  # build 7: the words said again before the image, as a self-prompt group sits there
        scene = world.random_scene(rng, two_things=0.0)
        words = scene.things[0].short()
        return _said(ids, ids.text(GENERATION_PROMPT.format(what=words)), ids.text(words), ids.image(code_of(scene)))
    if kind == "draw_unconditional":  # the empty prompt classifier-free guidance samples against
        return _example(ids, ids.text(""), ids.image(code_of(world.random_scene(rng))))
    if kind == "generate":
        scene = world.random_scene(rng, two_things=0.15)
        caption = scene.caption()
        prompt = GENERATION_PROMPT.format(what=caption[0].lower() + caption[1:-1])
        return _example(ids, ids.text(prompt), ids.image(code_of(scene)))
    # The definition families: "<name> is an orange striped heart.\n" then a task about <name>.
    name = rng.choice(ids.names)
    name_text = f"<reserved{name:05d}>"
    thing = world.random_thing(rng)
    prefix = ids.text(f"{name_text} is {thing.short()}.\n")
    name_id = ids.text(name_text)[0]
    if kind.startswith("define_recognize_"):  # one attribute decides: the shown thing differs only there
        attribute = kind.removeprefix("define_recognize_")
        positive = rng.random() < 0.5
        other = world.other_value(attribute, getattr(thing, attribute), rng)
        scene = world.random_scene(rng, two_things=0.0, must_include=thing if positive else replace(thing, **{attribute: other}))
        question = rng.choice(sentences.RECOGNITION_QUESTIONS).replace("<sks>", name_text)
        return _example(ids, ids.text(question), ids.text("Yes." if positive else "No."), prefix,
                        ids.image(code_of(scene)), {name_id})
    if kind == "define_recognize":
        roll = rng.random()
        if roll < 0.5:
            scene, positive = world.random_scene(rng, must_include=thing), True
        elif roll < 0.8:
            scene, positive = world.random_scene(rng, must_include=world.look_alike(thing, rng)), False
        else:
            scene = world.random_scene(rng)
            positive = any(t.identity == thing.identity for t in scene.things)
        question = rng.choice(sentences.RECOGNITION_QUESTIONS).replace("<sks>", name_text)
        answer = rng.choice(sentences.POSITIVE_ANSWERS if positive else sentences.NEGATIVE_ANSWERS)
        if rng.random() < SHORT_ANSWER:
            answer = "Yes." if positive else "No."
        return _example(ids, ids.text(question), ids.text(answer.replace("<sks>", name_text)), prefix,
                        ids.image(code_of(scene)), {name_id})
    if kind == "define_text":
        attribute = rng.choice(list(world.CONCEPT_QUESTIONS))
        question, _ = world.CONCEPT_QUESTIONS[attribute]
        return _example(ids, ids.text(question.replace("<sks>", name_text)), ids.text(f"{getattr(thing, attribute)}."),
                        prefix, unscored={name_id})
    if kind in ("define_generate", "define_generate_said"):
        scene = world.random_scene(rng, two_things=0.0, must_include=thing)
        prompt = rng.choice(sentences.GENERATION_PROMPTS[:3]).replace("<sks>", name_text)
        if kind == "define_generate_said":  # build 7: the definition's words between the turn and the image
            return _said(ids, ids.text(prompt), ids.text(thing.short()), ids.image(code_of(scene)), prefix, name_id)
        return _example(ids, ids.text(prompt), ids.image(code_of(scene)), prefix, unscored={name_id})
    raise ValueError(f"unknown example kind {kind!r}")


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


class RowTrainer(torch.nn.Module):
    """Trainable copies of the rows the world uses; every other row frozen (output rows at zero)."""

    def __init__(self, model, trained_ids: torch.Tensor):
        super().__init__()
        vocab = model.config.vocab_size
        self.register_buffer("trained_ids", trained_ids)
        slot = torch.full((vocab,), -1, dtype=torch.long)
        slot[trained_ids] = torch.arange(len(trained_ids))
        self.register_buffer("slot", slot)
        self.input_rows = torch.nn.Parameter(model.get_input_embeddings().weight[trained_ids].clone())
        self.output_rows = torch.nn.Parameter(model.lm_head.weight[trained_ids].clone())
        self.log_rest = math.log(vocab - len(trained_ids))  # the untrained columns: logit 0 each

    def embed(self, model, input_ids: torch.Tensor) -> torch.Tensor:
        frozen = model.get_input_embeddings()(input_ids)
        slot = self.slot[input_ids]
        return torch.where((slot >= 0).unsqueeze(-1), self.input_rows[slot.clamp(min=0)], frozen)

    def loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Exact full-vocabulary cross-entropy at the labelled positions, averaged per example first.

        Per-example averaging keeps a 66-token image from outweighing a one-word answer 66 to 1.
        """
        target = labels[:, 1:]
        keep = target != -100
        h = hidden[:, :-1][keep]
        slot = self.slot[target[keep]]
        if (slot < 0).any():
            raise ValueError("a label is a token the world does not train")
        logits = h @ self.output_rows.T
        rest = torch.full((len(h), 1), self.log_rest, dtype=logits.dtype)
        token_loss = F.cross_entropy(torch.cat([logits, rest], dim=1), slot, reduction="none")
        rows = keep.nonzero()[:, 0]
        per_example = torch.zeros(len(labels)).index_add(0, rows, token_loss) / keep.sum(1).clamp(min=1)
        return per_example.mean()

    @torch.no_grad()
    def write_back(self, model) -> None:
        """Put the trained rows into the model; output rows of untrained tokens become exactly zero."""
        model.get_input_embeddings().weight[self.trained_ids] = self.input_rows
        model.lm_head.weight.zero_()
        model.lm_head.weight[self.trained_ids] = self.output_rows


def trained_token_ids(tokenizer, vocab: dict[str, int], num_codes: int, first_image_id: int) -> torch.Tensor:
    """Every id the world's text and images use: text BPE ids, the codebook's image ids, specials."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<eoss>", "<racm3:break>", "<reserved08706>", "<image>"]
    text_ids = [i for name, i in vocab.items() if not (name.startswith("<") and name.endswith(">"))
                and not name.startswith("IMGIMG")]
    ids = set(text_ids) | {vocab[s] for s in specials} | set(range(first_image_id, first_image_id + num_codes))
    return torch.tensor(sorted(ids))


def train_lm(model, ids: Ids, rows: RowTrainer, seed: int, steps: int, batch: int, lr: float, code_of,
             progress=None, phases: tuple | None = None, stream: int = 2) -> dict:
    """Train the transformer and the world's rows on the mixture (warm-up and cosine decay), or,
    given `phases` as ((mixture, steps), ...), on each mixture in turn at a constant `lr`."""
    body = model.model
    params = [p for n, p in body.named_parameters() if not n.startswith(("vqmodel", "embed_tokens"))]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params + list(rows.parameters()), lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    if phases is None:
        phases = ((MIXTURE, steps),)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    else:
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    rng = random.Random(seed + stream)
    plan = [mixture for mixture, count in phases for _ in range(count)]
    body.train()
    history = []
    for step, mixture in enumerate(plan):
        examples = _examples(rng.choices(list(mixture), list(mixture.values()), k=batch), rng, ids, code_of)
        padded = collate([{"input_ids": t, "labels": lab, "task": "world"} for t, lab in examples],
                         ids.tokenizer.pad_token_id)
        hidden = body(inputs_embeds=rows.embed(model, padded["input_ids"]),
                      attention_mask=padded["attention_mask"]).last_hidden_state
        loss = rows.loss(hidden, padded["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params + list(rows.parameters()), 1.0)
        optimizer.step()
        schedule.step()
        history.append(float(loss.detach()))
        if progress is not None:
            progress(step, float(loss.detach()))
    body.eval()
    for p in params:
        p.requires_grad_(False)
    return {"loss_first": float(np.mean(history[:50])), "loss_last": float(np.mean(history[-50:]))}


# ---- the build ------------------------------------------------------------------------------------
def vq_key(spec: dict) -> str:
    """Identity of stage 1: the VQ settings, the seed and the build version."""
    fields = {k: v for k, v in spec.items() if k.startswith(("vq_", "image_")) or k == "seed"}
    return hashlib.sha256(json.dumps({"version": TOY_VQ_VERSION, **fields}, sort_keys=True).encode()).hexdigest()[:12]


def lm_key(spec: dict) -> str:
    """Identity of stage 2 (the broad mixture): the build's identity without the stage-3 and -4 settings."""
    return spec_key({k: v for k, v in spec.items() if not k.startswith(("focus_", "draw_"))}, TOY_LM_VERSION)


def focus_key(spec: dict) -> str:
    """Identity of stages 2 and 3 (the model after the yes/no curriculum): without the stage-4 settings."""
    return spec_key({k: v for k, v in spec.items() if not k.startswith("draw_")}, TOY_LM_VERSION)


def train_drawing(model, ids: Ids, trained: torch.Tensor, spec: dict, code_of, progress=None,
                  after_chunk=None) -> dict:
    """Stage 4: `draw_chunks` x `draw_chunk_steps` steps of `draw_mixture` (default `DRAW`), each chunk with a
    fresh optimizer and its own random stream, its rows written back after it; `after_chunk(k)` is called
    after chunk k."""
    mixture = spec.get("draw_mixture") or DRAW
    reports = []
    for chunk in range(spec["draw_chunks"]):
        rows = RowTrainer(model, trained)
        reports.append(train_lm(model, ids, rows, spec["seed"], 0, spec["lm_batch"], spec["draw_lr"], code_of,
                                progress, phases=((mixture, spec["draw_chunk_steps"]),), stream=10 + chunk))
        rows.write_back(model)
        if after_chunk is not None:
            after_chunk(chunk)
    return {"loss_first": reports[0]["loss_first"], "loss_last": reports[-1]["loss_last"]}


def _cached_stage(file: Path, module: torch.nn.Module, run) -> dict:
    """A build stage: `module`'s weights and the stage report from `file`, or `run()` then both saved atomically."""
    from safetensors.torch import load_file, save_file

    if file.is_file():
        module.load_state_dict(load_file(str(file)))
        return json.loads(file.with_suffix(".json").read_text())
    report = run()
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(file) + ".tmp")
    file.with_suffix(".json").write_text(json.dumps(report))
    Path(str(file) + ".tmp").replace(file)
    return report


def build_toyworld_checkpoint(out_dir: str | Path, spec: dict | None = None, show_progress: bool = True) -> dict:
    """Pretrain the toy backbone and write it in HF format; returns the build report."""
    from tqdm.auto import tqdm

    from yochameleon.model import tiny
    from yochameleon.model.backbone import YoChameleonForConditionalGeneration

    spec = {**TOY_SPEC, **(spec or {})}
    seed = spec["seed"]
    torch.manual_seed(seed)
    random.seed(seed)
    started = time.perf_counter()
    tokenizer, vocab = toy_tokenizer(spec)
    config = tiny.build_config(spec, vocab)
    model = YoChameleonForConditionalGeneration(config)
    model.requires_grad_(False)

    # Stage 1 is cached on its own (keyed by the VQ settings), so changing the language-model
    # recipe does not retrain the tokenizer.
    def stage1() -> dict:
        bar = tqdm(total=spec["vq_steps"], desc="toy world: VQ tokenizer", disable=not show_progress)
        report = train_vq(model, seed, spec["vq_steps"], spec["vq_batch"], spec["vq_object_weight"],
                          spec["vq_attribute_weight"], lambda s, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.4f}")))
        bar.close()
        return report

    first_image_id = tiny.FIRST_IMAGE_ID
    ids = Ids(tokenizer, vocab["<s>"], vocab["<reserved08706>"], vocab["<racm3:break>"], vocab["<eoss>"],
              first_image_id, list(range(*NAME_POOL)))
    code_of = SceneCodes(model)
    trained = trained_token_ids(tokenizer, vocab, spec["vq_num_codes"], first_image_id)
    cache = Path(out_dir).parent

    # Stage 2 (the broad mixture, most of the build's time) is cached on its own too.
    def stage2() -> dict:
        rows = RowTrainer(model, trained)
        bar = tqdm(total=spec["lm_steps"], desc="toy world: language model", disable=not show_progress)
        report = train_lm(model, ids, rows, seed, spec["lm_steps"], spec["lm_batch"], spec["lm_lr"], code_of,
                          lambda s, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
        bar.close()
        rows.write_back(model)
        return {**{f"lm_{k}": v for k, v in report.items()}, "lm_stage_seconds": round(time.perf_counter() - lm_started, 1)}

    def stage3() -> dict:
        rows = RowTrainer(model, trained)
        phases = tuple(zip(FOCUS, spec["focus_steps"], strict=True))
        bar = tqdm(total=sum(spec["focus_steps"]), desc="toy world: yes/no curriculum", disable=not show_progress)
        report = train_lm(model, ids, rows, seed, 0, spec["lm_batch"], spec["focus_lr"], code_of,
                          lambda s, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")), phases=phases, stream=3)
        bar.close()
        rows.write_back(model)
        return {f"focus_{k}": v for k, v in report.items()}

    def stages_1_to_3() -> dict:
        nonlocal lm_started
        report = _cached_stage(cache / f"toyworld-vq-{vq_key(spec)}.safetensors", model.model.vqmodel, stage1)
        report["vq_seconds"] = round(time.perf_counter() - started, 1)
        lm_started = time.perf_counter()
        report.update(_cached_stage(cache / f"toyworld-lm-{lm_key(spec)}.safetensors", model, stage2))
        report.update(stage3())
        return report | {"focus_seconds": round(time.perf_counter() - lm_started, 1)}

    # Stages 1-3 together are cached as well (the model after the curriculum), so changing the drawing
    # stage re-runs only it.
    lm_started = time.perf_counter()
    lm_report = _cached_stage(cache / f"toyworld-focus-{focus_key(spec)}.safetensors", model, stages_1_to_3)
    draw_started = time.perf_counter()
    bar = None if not spec["draw_chunks"] else tqdm(total=spec["draw_chunks"] * spec["draw_chunk_steps"], desc="toy world: drawing",
               disable=not show_progress)
    if bar is not None:
        draw_report = train_drawing(model, ids, trained, spec, code_of,
                                    lambda s, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
        bar.close()
        lm_report.update({f"draw_{k}": v for k, v in draw_report.items()}
                         | {"draw_seconds": round(time.perf_counter() - draw_started, 1)})

    from safetensors.torch import save

    bar = tqdm(total=spec["judge_steps"], desc="toy world: attribute judge", disable=not show_progress)
    judge, judge_report = train_judge(seed, spec["judge_steps"],
                                      progress=lambda s, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
    bar.close()
    report = {**lm_report, **judge_report, "total_seconds": round(time.perf_counter() - started, 1),
              "seed": seed, "torch_threads": torch.get_num_threads()}
    tiny.write_checkpoint(model, tokenizer, spec, spec_key(spec), out_dir,
                          extra_files={"toyworld_build.json": json.dumps(report, indent=2),
                                       JUDGE_FILE: save({k: v.contiguous() for k, v in judge.state_dict().items()})})
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm-steps", type=int, default=None)
    parser.add_argument("--vq-steps", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = {"seed": args.seed}
    if args.lm_steps:
        spec["lm_steps"] = args.lm_steps
    if args.vq_steps:
        spec["vq_steps"] = args.vq_steps
    if args.out is None:  # the cache folder `make toyworld` reads (which also unpacks a shipped build instead)
        out = toyworld_dir(spec=spec)
        if not (out / "config.json").exists():
            build_toyworld_checkpoint(out, spec)
        print(f"toy-world backbone: {out}")
        print((out / "toyworld_build.json").read_text())
        return
    print(json.dumps(build_toyworld_checkpoint(args.out, spec), indent=2))


if __name__ == "__main__":
    main()
