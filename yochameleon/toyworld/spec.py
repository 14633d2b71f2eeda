"""What the toy backbone is and where it is cached: its spec, build key, tokenizer corpus, files.

The bottom of the toy world next to `world.py`: every other toyworld module (and the
`${toyworld:...}` resolver, through `concepts.py`) reads these names from here, so none of
them needs the orchestrator (`build.py`) and the imports form no circle.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch

from yochameleon.tiny import chameleon as tiny
from yochameleon.toyworld import sentences, world

TOY_BUILD_VERSION = "5"
TOY_LM_VERSION = "4"  # stages 2 and 3 (build 4's); their caches survive a change of stage 4
TOY_SPEC = {
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": 512,
    "image_resolution": 64,
    "vq_base_channels": 32,
    "vq_channel_multiplier": [1, 1, 2, 2],  # 64x64 -> 8x8 codes
    "vq_latent_channels": 32,
    "vq_embed_dim": 16,
    "vq_num_codes": 512,
    "vq_attn_resolutions": [],
    "vq_object_weight": 4.0,  # reconstruction weight of object pixels over background pixels
    "vq_attribute_weight": 0.5,  # weight of the attribute probe on the quantized latents
    "text_vocab_size": 1200,
    "seed": 0,
    "vq_steps": 2500,
    "vq_batch": 16,
    "lm_steps": 6000,
    "lm_batch": 24,
    "lm_lr": 3e-3,
    # Stage 3, the yes/no curriculum (constant lr, fresh optimizer): colour checks alone, then
    # definitions where one attribute decides, then full definitions. See `pretrain.FOCUS` for why.
    "focus_steps": [200, 300, 400, 400],
    "focus_lr": 1e-3,
    # Stage 4, drawing (`examples.DRAW` unless a build gives its `draw_mixture`): chunks of steps, each with a
    # fresh optimizer at a constant lr. 0 chunks here = build 4; the shipped build is `SHIPPED_BUILD` below.
    "draw_chunks": 0,
    "draw_chunk_steps": 500,
    "draw_lr": 1e-3,
    "judge_steps": 400,
}

# Build 5: the drawing stage on, and the image sampling it was measured with recorded in the
# checkpoint (`Backbone.sampling`): `build_toyworld_checkpoint(out_dir, BUILD_5)`.
BUILD_5 = {"draw_chunks": 6, "draw_sampling": {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "guidance_scale": 3.0}}
# Build 6: build 5 with captions and more understanding replayed in stage 4 (58% drawing instead of 76%):
# captions are kept and the recognition gate holds at 40 epochs, but "A photo of <bo>." is still drawn
# right 1 time in 16 (docs/toyworld.md, "Build 6"). Not shipped either.
BUILD_6 = {**BUILD_5, "draw_mixture": {
    "draw": 0.36, "draw_unconditional": 0.06, "define_generate": 0.15, "generate": 0.04,
    "define_recognize": 0.18, "verify": 0.05, "caption": 0.08, "vqa": 0.05, "define_text": 0.03}}

# Build 7: build 6's mixture with a fifth of its drawing said first (the words, unscored, between the end of
# turn and begin-of-image, where a personalized self-prompt group sits) and a longer drawing stage (8 x 500
# steps; build 5 was still improving at 3000). docs/toyworld.md, "Build 7".
BUILD_7 = {**BUILD_6, "draw_chunks": 8, "draw_mixture": {
    "draw": 0.28, "draw_said": 0.08, "draw_unconditional": 0.06, "define_generate": 0.09, "define_generate_said": 0.06,
    "generate": 0.04, "define_recognize": 0.18, "verify": 0.05, "caption": 0.08, "vqa": 0.05, "define_text": 0.03}}
# The shipped build (the pack in yochameleon/assets/toyworld; what `model=toyworld`, `make demo` and `make toyworld`
# use): build 7, the first shipped build that draws ("A photo of a blue dotted star." judged all three right
# 0.726 over 288 images, build 4: 0.000) with build 4's captions and definition recognition kept
# (docs/toyworld.md, "Build 7"). Until 2026-12-03 the pack was build 4 (`BUILD_4`: TOY_SPEC alone).
BUILD_4: dict = {}
SHIPPED_BUILD = BUILD_7


def shipped_spec() -> dict:
    """The spec of the shipped build: TOY_SPEC with `SHIPPED_BUILD`'s settings."""
    return {**TOY_SPEC, **SHIPPED_BUILD}

CAPTION_QUESTION = "Describe the image."
GENERATION_PROMPT = "A photo of {what}."

JUDGE_FILE = "toyworld_judge.safetensors"  # the attribute judge, saved next to a toy backbone


def corpus_lines(seed: int, n: int = 1500) -> tuple[str, ...]:
    """World sentences for the BPE, so attribute words become single tokens."""
    rng = random.Random(seed)
    lines = [CAPTION_QUESTION]
    for values in (world.SHAPES, world.COLOURS, world.PATTERNS, world.SIZES, world.BACKGROUNDS):
        lines += [f"{v}." for v in values] * 20 + [f" {v}" for v in values] * 20
    for index in range(n):
        scene = world.scene(seed, index)
        lines.append(scene.caption())
        lines.append(GENERATION_PROMPT.format(what=scene.caption()[0].lower() + scene.caption()[1:-1]))
        lines += [f"{q} {a}." for q, a in world.attribute_questions(scene, rng)]
        thing = scene.things[0]
        lines.append(f"is {thing.short()}.")
    for question, _ in world.CONCEPT_QUESTIONS.values():
        lines += [question.replace("<sks> ", "").replace("<sks>", "")] * 20
    return tuple(lines)


def toy_tokenizer(spec: dict):
    """The toy backbone's BPE (tokenizer, vocabulary), as the build trains it and the unpacking rebuilds it.

    Its text is the toy world's own fixed sentences (`sentences.py`, never data/templates.py) and
    `corpus_lines`, so editing a template leaves the toy build and the shipped pack valid.
    """
    return tiny.build_tokenizer(spec["text_vocab_size"], corpus_lines(spec["seed"]), sentences)


def spec_key(spec: dict, version: str = TOY_BUILD_VERSION) -> str:
    """Identity of a build: spec, tokenizer corpus (the toy world's own sentences and its scenes'), version.

    Code is not hashed (a shipped build must survive refactors): bump TOY_BUILD_VERSION whenever
    a change to world.py or pretrain.py changes what the build produces.
    """
    if not spec.get("draw_chunks"):  # no drawing stage: the build is build 4, under its own key
        spec, version = {k: v for k, v in spec.items() if not k.startswith("draw_")}, TOY_LM_VERSION
    lines = tiny.training_corpus(corpus_lines(spec["seed"]), sentences)  # what `toy_tokenizer` trains on
    corpus = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    blob = json.dumps({"version": version, "corpus": corpus, **spec}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def to_pixels(images) -> torch.Tensor:
    """PIL images -> (B, 3, H, W) in [-1, 1], as ChameleonImageProcessor does for these sizes."""
    array = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache the toy world writes into: `cache_dir`, else $YOCHAMELEON_CACHE or ~/.cache/yochameleon."""
    return Path(cache_dir or tiny.default_cache_dir())


def toyworld_dir(cache_dir: str | Path | None = None, spec: dict | None = None) -> Path:
    """Where the toy backbone of `spec` (TOY_SPEC with these settings; None: the shipped build) lives in the cache."""
    build = SHIPPED_BUILD if spec is None else spec
    return cache_root(cache_dir) / "models" / f"toyworld-{spec_key({**TOY_SPEC, **build})}"
