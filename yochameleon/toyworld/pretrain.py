"""Pretrain a tiny Chameleon on the toy world, so personalization on it is measurable on a CPU.

    python -m yochameleon.toyworld.pretrain [--out DIR] [--seed 0]     (or: make toyworld)

The build is a table of stages (`STAGES`), all on the CPU in bounded time, reproducible from the seed:

1. `vq`: a VQ image tokenizer (`vq.py`: the Chameleon encoder plus the Anole-layout decoder,
   64x64 -> 8x8 codes from a 512-entry codebook) trained to reconstruct world images;
2. `language model`: `ChameleonForConditionalGeneration` (the 7B vocabulary layout) trained on
   the broad mixture (`examples.py`): captioning, attribute QA, caption-to-image generation, and
   the in-context use of a definition: "`<name>` is an orange striped heart." followed by
   recognition ("Is `<name>` in this photo?"), text questions ("What colour is `<name>`?") and
   "A photo of `<name>`.", where `<name>` is a random reserved token with a frozen random
   embedding. That last family is what personalization builds on: a concept's soft prompt
   `<sks> is <g-tokens><u-tokens>.` is the same sentence with learned tokens in place of the words;
3. `curriculum`: yes/no questions (`examples.FOCUS`): colour checks alone, then definitions where
   one attribute decides, then full definitions with the broad families mixed back in;
4. `drawing` (off in the shipped build): the literal words a user types, drawn (`examples.DRAW`);
5. `judge`: the attribute classifier that reads drawings (`judge.py`), saved beside the backbone.

Stages 1 and 2 are cached on their own beside the build, and 1-3 together, each keyed by the
settings that decide it (`vq_key`, `lm_key`, `focus_key`), so changing stage 3 costs minutes,
and stage 4 only itself.

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
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from yochameleon.data.samples import collate
from yochameleon.toyworld import world
from yochameleon.toyworld.examples import DRAW, FOCUS, MIXTURE, NAME_POOL, Ids, make_example
from yochameleon.toyworld.judge import train_judge
from yochameleon.toyworld.spec import (JUDGE_FILE, SHIPPED_BUILD, TOY_LM_VERSION, TOY_SPEC, spec_key, toy_tokenizer,
                                       toyworld_dir)
from yochameleon.toyworld.vq import encode, train_vq

log = logging.getLogger(__name__)

TOY_VQ_VERSION = "3"  # stage 1 changes less often than the language model; its own version keeps its cache


# ---- stage 2's examples, their images encoded a step at a time -------------------------------------
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


# ---- the stages' caches ------------------------------------------------------------------------
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


# ---- the build: a table of stages ------------------------------------------------------------------
@dataclass
class Build:
    """What the stages share: the settings, the model in training, its token facts and scene codes, the cache
    beside the build, the clock and whether progress bars show; the judge once its stage has run."""

    spec: dict
    tokenizer: object
    model: torch.nn.Module
    ids: Ids
    code_of: SceneCodes
    trained: torch.Tensor  # the token ids the world uses: the rows that train
    cache: Path
    show_progress: bool
    started: float
    judge: torch.nn.Module | None = None

    @classmethod
    def start(cls, out_dir: str | Path, spec: dict | None, show_progress: bool) -> Build:
        """Seed everything, then the tokenizer and the freshly initialised model, in the order the seed fixes."""
        from yochameleon.tiny import chameleon as tiny
        from yochameleon.model.backbone import YoChameleonForConditionalGeneration

        spec = {**TOY_SPEC, **(SHIPPED_BUILD if spec is None else spec)}
        torch.manual_seed(spec["seed"])
        random.seed(spec["seed"])
        started = time.perf_counter()
        tokenizer, vocab = toy_tokenizer(spec)
        model = YoChameleonForConditionalGeneration(tiny.build_config(spec, vocab))
        model.requires_grad_(False)
        ids = Ids(tokenizer, vocab["<s>"], vocab["<reserved08706>"], vocab["<racm3:break>"], vocab["<eoss>"],
                  tiny.FIRST_IMAGE_ID, list(range(*NAME_POOL)))
        trained = trained_token_ids(tokenizer, vocab, spec["vq_num_codes"], tiny.FIRST_IMAGE_ID)
        return cls(spec, tokenizer, model, ids, SceneCodes(model), trained, Path(out_dir).parent, show_progress,
                   started)

    def seconds(self, since: float | None = None) -> float:
        return round(time.perf_counter() - (self.started if since is None else since), 1)

    @contextmanager
    def progress(self, total: int, desc: str, digits: int = 3):
        """A progress bar over `total` steps; yields the `progress(step, loss)` callback the trainers call."""
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"toy world: {desc}", disable=not self.show_progress)
        yield lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.{digits}f}"))
        bar.close()


def vq_stage(build: Build) -> dict:
    spec = build.spec
    with build.progress(spec["vq_steps"], "VQ tokenizer", digits=4) as progress:
        return train_vq(build.model, spec["seed"], spec["vq_steps"], spec["vq_batch"], spec["vq_object_weight"],
                        spec["vq_attribute_weight"], progress)


def lm_stage(build: Build) -> dict:
    spec, started = build.spec, time.perf_counter()
    rows = RowTrainer(build.model, build.trained)
    with build.progress(spec["lm_steps"], "language model") as progress:
        report = train_lm(build.model, build.ids, rows, spec["seed"], spec["lm_steps"], spec["lm_batch"],
                          spec["lm_lr"], build.code_of, progress)
    rows.write_back(build.model)
    return {**{f"lm_{k}": v for k, v in report.items()}, "lm_stage_seconds": build.seconds(started)}


def curriculum_stage(build: Build) -> dict:
    spec = build.spec
    rows = RowTrainer(build.model, build.trained)
    phases = tuple(zip(FOCUS, spec["focus_steps"], strict=True))
    with build.progress(sum(spec["focus_steps"]), "yes/no curriculum") as progress:
        report = train_lm(build.model, build.ids, rows, spec["seed"], 0, spec["lm_batch"], spec["focus_lr"],
                          build.code_of, progress, phases=phases, stream=3)
    rows.write_back(build.model)
    return {f"focus_{k}": v for k, v in report.items()}


def drawing_stage(build: Build) -> dict:
    spec, started = build.spec, time.perf_counter()
    if not spec["draw_chunks"]:
        return {}
    with build.progress(spec["draw_chunks"] * spec["draw_chunk_steps"], "drawing") as progress:
        report = train_drawing(build.model, build.ids, build.trained, spec, build.code_of, progress)
    return {f"draw_{k}": v for k, v in report.items()} | {"draw_seconds": build.seconds(started)}


def judge_stage(build: Build) -> dict:
    with build.progress(build.spec["judge_steps"], "attribute judge") as progress:
        build.judge, report = train_judge(build.spec["seed"], build.spec["judge_steps"], progress=progress)
    return report


@dataclass(frozen=True)
class Stage:
    """One stage of the build; with a `cache`, the weights of `module` after it and its report are kept beside the
    build as toyworld-<cache>-<key(spec)>.safetensors (+ .json) and read back instead of training again."""

    name: str
    run: Callable[[Build], dict]
    cache: str | None = None
    key: Callable[[dict], str] | None = None
    module: Callable[[torch.nn.Module], torch.nn.Module] = lambda model: model


STAGES = (
    Stage("vq", vq_stage, "vq", vq_key, lambda model: model.model.vqmodel),
    Stage("language model", lm_stage, "lm", lm_key),
    Stage("curriculum", curriculum_stage),
    Stage("drawing", drawing_stage),
    Stage("judge", judge_stage),
)


def run_stage(build: Build, stage: Stage) -> dict:
    """The stage's report: run, or read back from its cache (which a run writes)."""
    if stage.cache is None:
        return stage.run(build)
    file = build.cache / f"toyworld-{stage.cache}-{stage.key(build.spec)}.safetensors"
    return _cached_stage(file, stage.module(build.model), partial(stage.run, build))


def understanding(build: Build) -> dict:
    """Stages 1-3 and their clocks: `vq_seconds` from the build's start, `focus_seconds` for stages 2 and 3."""
    vq, language_model, curriculum = STAGES[:3]
    report = run_stage(build, vq) | {"vq_seconds": build.seconds()}
    lm_started = time.perf_counter()
    report |= run_stage(build, language_model)
    report |= run_stage(build, curriculum)
    return report | {"focus_seconds": build.seconds(lm_started)}


# Stages 1-3 are kept together too (the model after the curriculum), so changing the drawing stage re-runs only it.
UNDERSTANDING = Stage("vq, language model, curriculum", understanding, "focus", focus_key)


def build_toyworld_checkpoint(out_dir: str | Path, spec: dict | None = None, show_progress: bool = True) -> dict:
    """Pretrain the toy backbone and write it in HF format; returns the build report."""
    from safetensors.torch import save

    from yochameleon.tiny import chameleon as tiny

    build = Build.start(out_dir, spec, show_progress)
    report = run_stage(build, UNDERSTANDING)
    for stage in STAGES[3:]:
        report |= run_stage(build, stage)
    report |= {"total_seconds": build.seconds(), "seed": build.spec["seed"], "torch_threads": torch.get_num_threads()}
    judge = save({k: v.contiguous() for k, v in build.judge.state_dict().items()})
    tiny.write_checkpoint(build.model, build.tokenizer, build.spec, spec_key(build.spec), out_dir,
                          extra_files={"toyworld_build.json": json.dumps(report, indent=2), JUDGE_FILE: judge})
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
