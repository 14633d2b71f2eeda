"""The training recipe: only the concept's rows learn; everything else is frozen and cached.

    setup()            validate the concept, load the backbone, prepare data, build the optimizer
    train_step(step)   one optimizer step over the global batch (this process's share of it)
    evaluate(done)     recognition on the validation split, a sample image, keep best/
    save_checkpoint()  rows + optimizer + state, atomically, for an exact resume
    finish()           the last adapter, the test split scored once, the final samples and
                       their contact sheet, the summary

`train(cfg, run_dir)` runs them in order. What differs between one process, DDP and ZeRO lives
in `training/distributed.py`; preparation in `data/preparation.py`; decoding in `model/decoding.py`;
what the run draws (and the judge of toy concepts' drawings) in `training/drawing.py`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections import defaultdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm.auto import tqdm

from yochameleon.concept.adapter import read_adapter_config, read_adapter_rows, save_adapter
from yochameleon.concept.init import chosen_description, describe_photos, init_from_description
from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.config import plain_config
from yochameleon.data import templates
from yochameleon.data.concept import ConceptData
from yochameleon.data.images import load_image
from yochameleon.data.preparation import prepare_concept
from yochameleon.data.samples import EpochPlan, SampleBuilder, collate
from yochameleon.data.vq_cache import VQCodeCache
from yochameleon.errors import YoChameleonError
from yochameleon.io import write_json
from yochameleon.metrics.generation import generation_metrics
from yochameleon.metrics.options import score_text_checks
from yochameleon.metrics.recognition import recognition_metrics
from yochameleon.model.decoding import generate_answer
from yochameleon.model.personalized import PersonalizedChameleon
from yochameleon.sources import configured_source, load_configured_backbone
from yochameleon.training.checkpoint import (check_run_facts, has_checkpoint, load_checkpoint, optimizer_shards,
                                             read_state, save_checkpoint)
from yochameleon.training.distributed import Distributed, barrier
from yochameleon.training.drawing import (contact_sheet, draw_images, judge_figures, judge_toy_samples, sample_image,
                                          sample_settings)
from yochameleon.training.interrupt import StopRequests, TrainingInterrupted
from yochameleon.training.logging import NullLogger, RunLogger

log = logging.getLogger(__name__)


GENERATION_METRIC = "eval/generation/nll"  # chooses best/'s g-token rows (lower is better)


def _better(side: str, score: float, best: float) -> bool:
    """Whether `score` beats `best` on a side (generation NLL: lower; understanding: higher); NaN never does."""
    if math.isnan(score):
        return False
    return score < best if side == "generation" else score > best


def _unwrapped(accelerator, model):
    """The model inside accelerate's wrapper. `unwrap_model` imports DeepSpeed whenever it is installed (its
    "Setting accelerator to CPU" warning on every run): only a DeepSpeed run asks it; DDP's is `.module`."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return accelerator.unwrap_model(model)
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class RunDirError(YoChameleonError):
    """The run directory already holds a run that this command would overwrite."""


def _unprefixed(metrics: dict, prefix: str) -> dict:
    """`test/recognition/auroc` -> `eval/recognition/auroc`: the summary's `final` reads like any evaluation."""
    return {"eval/" + k.removeprefix(prefix + "/"): v for k, v in metrics.items()}


class RunFinished(YoChameleonError):
    """trainer.resume=true on a run that has finished: nothing is changed (raise trainer.max_steps to continue)."""


FINISHED = "finished.json"  # written last by `finish`: the step the run finished at


def _check_run_dir(run_dir: Path, resume: bool, max_steps=None) -> bool:
    """True when we continue a checkpoint; refuses to clobber an existing run otherwise, and to redo a finished one."""
    if has_checkpoint(run_dir):
        if resume:
            step = int(read_state(run_dir)["step"])
            marker = run_dir / FINISHED
            finished = marker.exists() and int(json.loads(marker.read_text()).get("step", -1)) == step
            if finished and not (max_steps and int(max_steps) > step):
                raise RunFinished(
                    f"{run_dir} is finished (step {step} of {step}); nothing was changed. Its adapter, scores and "
                    f"summary are in that folder. To train it further, raise trainer.max_steps above {step} "
                    f"(e.g. trainer.resume=true trainer.max_steps={2 * step}): the new steps and scores are "
                    "appended to metrics.jsonl.")
            return True
        state = read_state(run_dir)
        raise RunDirError(
            f"{run_dir} already holds a run (step {state['step']} of {state['total_steps']}). Continue it with "
            "trainer.resume=true, or start another with run_name=<new name>. Nothing was changed.")
    if resume:
        log.warning("trainer.resume=true but %s has no checkpoint: starting from step 0", run_dir)
    return False


class PersonalizationRecipe:
    """One concept's training run on a frozen backbone (see the module docstring for the stages)."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.tcfg, self.recipe = cfg.trainer, cfg.recipe

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        """Everything before the first step, in the order that fails fastest on bad input."""
        self.started = time.time()
        self.resuming = _check_run_dir(self.run_dir, bool(self.tcfg.resume), self.tcfg.max_steps)
        self.concept = ConceptData.from_config(self.cfg.concept)  # validate data before loading a large model
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._setup_launcher()
        self._setup_backbone()
        self._setup_data()
        self._setup_optimization()
        self._setup_state()

    def _setup_launcher(self) -> None:
        precision = str(self.tcfg.precision)
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() and self.tcfg.device != "cpu" else "no"
        self.accelerator = Accelerator(mixed_precision=precision, cpu=self.tcfg.device == "cpu",
                                       gradient_accumulation_steps=int(self.tcfg.grad_accum))
        torch.manual_seed(int(self.cfg.seed))
        self.dist = Distributed(self.accelerator)
        if self.dist.main:
            log.info("launcher: %s, %d process(es), device %s, precision %s",
                     self.accelerator.distributed_type.value, self.dist.world, self.accelerator.device, precision)
        self.dist.check(int(self.tcfg.batch_size), self.resuming, self.run_dir)

    def _setup_backbone(self) -> None:
        # Rank 0 builds/caches the tiny model first; a rank-0-first load under ZeRO-3 would deadlock
        # zero.Init's collectives, hence whole weights (partitioned later, at `prepare`).
        with self.dist.main_process_first(), self.dist.whole_weights():
            self.backbone = load_configured_backbone(self.cfg.model, self.cfg.cache_dir,
                                                     device=self.accelerator.device)
        recipe = self.recipe
        self.tokens = PersonalizedTokens.from_backbone(
            self.backbone.model, self.backbone.vocabulary_map, self.concept.name, int(recipe.k_g),
            int(recipe.k_u), self._first_token(), bool(recipe.shared_tokens))
        self.tokens.to(self.accelerator.device)
        if self.resuming:  # a resume with other settings is refused before the data is prepared
            check_run_facts(self.run_dir, self._run_facts())

    def _first_token(self) -> str:
        """recipe.first_token, or the backbone family's own first free row for `auto`."""
        first = str(self.recipe.first_token)
        return self.backbone.default_first_token if first == "auto" else first

    def _setup_data(self) -> None:
        cfg, recipe, concept = self.cfg, self.recipe, self.concept
        self.cache = VQCodeCache(self.backbone, Path(cfg.cache_dir) / "vq")
        # Evaluations during training score the validation split (or the training photos); only a
        # validation split chooses best/. The test split is scored once, at the end, to report.
        self.select_split, self.test_split = concept.selection_split(), concept.test_split()
        test = self.test_split
        all_images = [*concept.photos, *self.select_split.positives, *self.select_split.negatives,
                      *(test.positives + test.negatives if test else [])]
        self.builder = SampleBuilder.from_recipe(self.backbone, self.tokens, self.cache, recipe)
        progress = bool(self.tcfg.progress and self.dist.main)
        with self.dist.main_process_first():
            with tqdm(total=len(all_images), desc="VQ-encode images (cached)", disable=not progress) as bar:
                self.cache.warm(all_images, bar)
            self.preparation = prepare_concept(cfg, concept, self.backbone, cfg.cache_dir, progress=progress)
            prep = self.preparation
            self.cache.warm([*prep.hard_negatives, *prep.easy_negatives, *(p for p, _ in prep.soft_positives)])
        self.plan = EpochPlan.from_recipe(concept, recipe, cfg.seed, self.preparation)
        self.batch_size, self.accum = int(self.tcfg.batch_size), int(self.tcfg.grad_accum)
        self.micro_per_epoch = self.plan.steps_per_epoch(self.batch_size)
        self.total_steps = (int(self.tcfg.max_steps) if self.tcfg.max_steps
                            else math.ceil(self.tcfg.epochs * self.micro_per_epoch / self.accum))
        self.init_record = self._setup_init()

    def _setup_init(self) -> dict:
        """recipe.init: where the rows start (a resume reads them from its checkpoint instead)."""
        kind = str(self.recipe.init)
        if kind == "reserved" or self.resuming or not self.tokens.g_token_ids():
            return {"kind": kind}
        plain = PersonalizedChameleon(self.backbone.model, [])
        asker = SampleBuilder(self.backbone, None, self.cache, False)
        photos = [str(p) for p in self.concept.photos]
        descriptions = describe_photos(plain, asker, photos)
        description = chosen_description(descriptions)
        init_from_description(self.tokens, self.backbone, description)
        if self.dist.main:
            log.info("recipe.init=description: the g-tokens start as %r (the backbone's description of %d photo(s))",
                     description, len(photos))
        return {"kind": kind, "description": description, "per_photo": descriptions}

    def _setup_optimization(self) -> None:
        tcfg, dist = self.tcfg, self.dist
        self.backbone.model.lockstep = dist.zero3  # Janus: every rank calls every submodule (Chameleon: no-op)
        model = PersonalizedChameleon(self.backbone.model, [self.tokens],
                                      dist.length_group_ratio(float(tcfg.length_group_ratio)),
                                      gradient_checkpointing=bool(tcfg.gradient_checkpointing))
        dist.set_micro_batch(self.batch_size)
        optimizer = torch.optim.AdamW(self.tokens.parameters(), lr=float(tcfg.lr),
                                      weight_decay=float(tcfg.weight_decay))
        # Read from the whole weights, before ZeRO-3 may partition them in `prepare`.
        self.facts = self._run_facts()
        self.fingerprint = self.backbone.fingerprint() | {"path": str(self.backbone.path),
                                                          "model_config": self.cfg.model.name,
                                                          "source": configured_source(self.cfg.model)}
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.inner = _unwrapped(self.accelerator, self.model)  # evaluation and sampling bypass any DDP wrapper
        self.adapter_extra = {**self.facts, "system_prefix": self.tokens.system_prefix(),
                              "recipe": OmegaConf.to_container(self.recipe, resolve=True), "init": self.init_record}

    def _run_facts(self) -> dict:
        """Settings a checkpoint must share with the run that resumes it."""
        cfg, tokens = self.cfg, self.tokens
        return {
            "concept": tokens.name, "model": cfg.model.name, "k_g": tokens.k_g, "k_u": tokens.k_u,
            "first_token": tokens.token_names[0], "self_prompting": bool(cfg.recipe.self_prompting),
            "shared_tokens": tokens.shared, "batch_size": int(cfg.trainer.batch_size),
            "grad_accum": int(cfg.trainer.grad_accum), "seed": int(cfg.seed),
        }

    def _setup_selection(self) -> None:
        """What chooses best/: the understanding side always, the generation side when g-tokens of their own
        learn to draw (with shared tokens one step must serve both, so the understanding score decides)."""
        self.select_by = str(self.tcfg.select_best_by)
        # Never the test split, never the training photos.
        self.selected_on = "val" if self.select_split.name == "val" else None
        self.scores_generation = bool(self.recipe.tasks.generation) and bool(self.tokens.g_token_ids())
        self.sides = ["understanding"] + (["generation"] if self.scores_generation and not self.tokens.shared else [])
        self.side_metric = {"understanding": self.select_by, "generation": GENERATION_METRIC}
        self.best = {"understanding": -math.inf, "generation": math.inf}
        self.best_steps: dict = {side: None for side in self.sides}
        self.best_rows: dict = {side: None for side in self.sides}

    def _resume_selection(self) -> None:
        """The scores best/ holds are read from best/ itself (a checkpoint can be older than best/ on disk)."""
        best_dir = self.run_dir / "best"
        if not (self.selected_on and (best_dir / "adapter_config.json").is_file()):
            return
        config = read_adapter_config(best_dir)
        rows = read_adapter_rows(best_dir, config, self.backbone.hidden_size)
        rows = tuple(r.detach().float().cpu().clone() for r in rows)
        selection = config.get("selection") or {"understanding": {
            "score": config.get(self.select_by, -math.inf), "step": config.get("step")}}
        for side, kept in selection.items():
            if side in self.sides and kept.get("score") is not None:
                self.best[side], self.best_steps[side], self.best_rows[side] = float(kept["score"]), kept["step"], rows

    def _setup_state(self) -> None:
        self.start_step, wandb_id = 0, None
        self._setup_selection()
        if self.resuming:
            state = load_checkpoint(self.run_dir, self.backbone, self.tokens, self.optimizer, self.facts,
                                    self.fingerprint)
            self.start_step, wandb_id = state["step"], state.get("wandb_id")
            self._resume_selection()
            log.info("resuming %s from step %d", self.run_dir, self.start_step)
        run_config = plain_config(self.cfg) | {"run_dir": str(self.run_dir)}  # paths, choices as strings
        self.logger = (RunLogger(self.cfg.logger, self.run_dir, run_config, wandb_id,
                                 self.start_step if self.resuming else None) if self.dist.main else NullLogger())
        self.last_eval: dict | None = None
        self.draw_samples = (bool(self.tcfg.sample_images) and self.backbone.has_decoder
                             and bool(self.recipe.tasks.generation))
        self.losses: list[float] = []

    # ---------------------------------------------------------------- the steps
    def train_step(self, step: int) -> dict:
        """One optimizer step (grad_accum micro-batches); returns the step's log record."""
        accelerator, model, dist = self.accelerator, self.model, self.dist
        device, pad_id = accelerator.device, self.backbone.tokenizer.pad_token_id
        task_losses = defaultdict(list)
        for micro in range(self.accum):
            global_specs = self.plan.batch(step * self.accum + micro, self.batch_size)
            specs, loss_factor = dist.share(global_specs)  # each process takes its share
            batch = collate([self.builder.build(s) for s in specs], pad_id)
            with accelerator.accumulate(model):
                out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                            batch["labels"].to(device),
                            None if batch["weights"] is None else batch["weights"].to(device))
                # Mean over the *global* batch: DDP averages gradients over ranks, hence `world` in the factor.
                weighted = out["per_sample"] * batch["sample_weights"].to(device)  # recipe.generation_weight
                accelerator.backward(weighted.sum() * loss_factor)
                if accelerator.sync_gradients and self.tcfg.grad_clip:
                    accelerator.clip_grad_norm_(self.tokens.parameters(), float(self.tcfg.grad_clip))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            counted = batch["tasks"] if loss_factor else []  # a stand-in sample is not part of the batch
            for task, value in dist.gather(counted, out["per_sample"].detach()):
                task_losses[task].append(value)
        step_loss = sum(sum(v) for v in task_losses.values()) / sum(len(v) for v in task_losses.values())
        self.losses.append(step_loss)
        record = {"train/loss": step_loss, "train/epoch": (step * self.accum) / self.micro_per_epoch}
        return record | {f"train/loss/{task}": sum(v) / len(v) for task, v in task_losses.items()}

    def evaluate(self, done: int) -> dict:
        """Score the selection split, draw a sample, keep best/ (only a validation split chooses)."""
        metrics = self.last_eval = self._score(self.select_split)
        if self.draw_samples:
            self._draw_sample(done)
        self._keep_best(done, metrics)
        return metrics

    def _score(self, split, prefix: str = "eval") -> dict:
        """Recognition on `split`, and the generation NLL of its positives when the recipe trains generation."""
        batch = int(self.tcfg.eval_batch_size)
        self.model.eval()
        metrics = recognition_metrics(self.inner, self.builder, split, batch_size=batch, prefix=prefix)
        if self.scores_generation:
            metrics |= generation_metrics(self.inner, self.builder, split, batch_size=batch, prefix=prefix)
        self.model.train()
        return metrics

    def _draw_sample(self, done: int) -> None:
        image = sample_image(self.inner, self.builder, int(self.cfg.seed), sample_settings(self.backbone, self.tcfg))
        if self.dist.main:
            path = self.run_dir / "samples" / f"step_{done:06d}.png"
            path.parent.mkdir(exist_ok=True)
            image.save(path)
        self.logger.log_image("samples/image", image, f"A photo of <{self.concept.name}>. (step {done})", step=done)

    def _keep_best(self, done: int, metrics: dict) -> None:
        """best/: the rows of the step with the best understanding score (trainer.select_best_by), with the
        g-token rows of the step with the lowest validation generation NLL (`eval/generation/nll`) when the
        recipe trains generation on separate g-tokens. Rank 0 decides and every rank follows (ZeRO-3 gathers)."""
        if not self.selected_on:
            return
        improved = self.dist.agree([side for side in self.sides
                                    if _better(side, metrics.get(self.side_metric[side], math.nan), self.best[side])])
        if not improved:
            return
        with self.dist.whole_rows(self.tokens):
            rows = (self.tokens.input_rows.detach().float().cpu().clone(),
                    self.tokens.output_rows.detach().float().cpu().clone())
        for side in improved:
            self.best[side] = metrics[self.side_metric[side]]
            self.best_steps[side] = done
            self.best_rows[side] = rows
        if self.dist.main:
            self._write_best()

    def _write_best(self) -> None:
        """best/ from the kept rows of each side (see `_keep_best`); its config says which step each side is from."""
        inputs, outputs = (r.clone() for r in self.best_rows["understanding"])
        if self.best_rows.get("generation") is not None:
            g = torch.tensor([int((self.tokens.token_ids == i).nonzero()) for i in self.tokens.g_token_ids()],
                             dtype=torch.long)
            inputs[g], outputs[g] = self.best_rows["generation"][0][g], self.best_rows["generation"][1][g]
        chosen = PersonalizedTokens(self.tokens.name, self.tokens.token_names, self.tokens.token_ids.tolist(),
                                    self.tokens.k_g, self.tokens.k_u, inputs, outputs, self.tokens.shared)
        selection = {side: {"metric": self.side_metric[side], "score": self.best[side], "step": self.best_steps[side]}
                     for side in self.sides}
        save_adapter(self.run_dir / "best", chosen, self.fingerprint, self.adapter_extra | {
            "step": self.best_steps["understanding"], "selected_on": self.selected_on,
            "selection_metric": self.select_by, self.select_by: self.best["understanding"], "selection": selection})

    def save_checkpoint(self, done: int) -> None:
        """Rows, optimizer (every rank's ZeRO-1/2/3 partition) and state; all ranks must call it."""
        shards = optimizer_shards(self.optimizer)
        if self.dist.evaluates:
            with self.dist.whole_rows(self.tokens):
                if self.dist.main:
                    save_checkpoint(self.run_dir, self.tokens, self.optimizer,
                                    {"step": done, "total_steps": self.total_steps, "best": self.best,
                                     "wandb_id": self.logger.wandb_id}, self.fingerprint, self.facts, shards)

    def run(self) -> dict:
        """setup, the steps with evaluations and checkpoints, finish."""
        self.setup()
        tcfg, total = self.tcfg, self.total_steps
        bar = tqdm(total=total, initial=self.start_step, desc=f"train <{self.concept.name}>",
                   disable=not (tcfg.progress and self.dist.main))
        self.model.train()
        # SIGINT / SIGTERM: the step finishes, a checkpoint is written there, TrainingInterrupted says so.
        with StopRequests() as stop:
            for step in range(self.start_step, total):
                record = self.train_step(step)
                done = step + 1
                if (done % int(tcfg.eval_every) == 0 or done == total) and self.dist.evaluates:
                    metrics = self.evaluate(done)
                    record |= metrics
                    bar.set_postfix(loss=f"{record['train/loss']:.3f}",
                                    acc=f"{metrics['eval/recognition/weighted']:.2f}")
                self.logger.log(record, step=done)
                bar.update(1)
                signum = stop.agreed(self.accelerator.device)
                if done % int(tcfg.checkpoint_every) == 0 or done == total or signum:
                    self.save_checkpoint(done)
                if signum:
                    bar.close()
                    barrier()
                    self.logger.finish()
                    raise TrainingInterrupted(self.run_dir, done, total, signum, self.dist.world)
        bar.close()
        return self.finish()

    # ---------------------------------------------------------------- finish
    def finish(self) -> dict:
        """The last step's adapter, the test split once, text QA, and the run's summary."""
        barrier()
        dist, run_dir, total = self.dist, self.run_dir, self.total_steps
        with dist.whole_rows(self.tokens):
            if dist.main:
                save_adapter(run_dir / "adapter", self.tokens, self.fingerprint,
                             self.adapter_extra | {"step": total, "selected_on": None})  # the last step, not a choice
        if dist.evaluates:
            final, test, text_qa, answer = self._final_scores()
            images = self._draw_final_samples()
        if not dist.main:
            return {"run_dir": str(run_dir), "rank": dist.rank, "steps": total}
        question = templates.FALLBACK_TEXT_QA[0][0]
        self.logger.log_text("samples/answers", ["question", "answer"], [[question, answer]], step=total)
        drawn = self._show_final_samples(images)
        record = {**(test or {}), **{f"test/{k}": v for k, v in (text_qa or {}).items()},
                  **{f"final/generation/{k}": v for k, v in (drawn["generation"] or {}).items()}}
        if record:
            self.logger.log(record, step=total)
        summary = self._summary(final, text_qa, answer) | drawn
        self.logger.finish()
        write_json(run_dir / FINISHED, {"step": total})  # last: a resume of this run now changes nothing
        return summary

    def _final_scores(self) -> tuple[dict, dict | None, dict | None, str]:
        if self.last_eval is None or self.start_step == self.total_steps:  # nothing evaluated the last step here
            self.last_eval = self._score(self.select_split)
        # The test split, once, for reporting: nothing above read it.
        test = self._score(self.test_split, prefix="test") if self.test_split else None
        self.model.eval()
        final = _unprefixed(test, "test") if test else self.last_eval
        # The concept's multiple-choice text checks (the toy concepts carry theirs), in both wordings.
        checks = self.concept.text_checks
        text_qa = score_text_checks(self.inner, self.builder, checks) if checks else None
        # Forced token group: shows what the rows learnt, whatever the inference setting.
        answer = generate_answer(self.inner, self.builder, templates.FALLBACK_TEXT_QA[0][0], max_new_tokens=24)
        return final, test, text_qa, answer

    def _chosen_adapter(self) -> Path | None:
        """best/ when the validation split chose one (what the summary tells a user to use); None: the last rows."""
        return self.run_dir / "best" if self.selected_on and self.best_steps["understanding"] is not None else None

    def _draw_final_samples(self) -> list[Image.Image]:
        """trainer.final_samples images of "A photo of <sks>." by the adapter a user is told to use, seeded."""
        count = int(self.tcfg.final_samples)
        if count <= 0 or not (self.tcfg.sample_images and self.backbone.has_decoder):
            return []
        self.model.eval()
        with self._rows_of(self._chosen_adapter()):
            return draw_images(self.inner, self.builder, sample_settings(self.backbone, self.tcfg),
                               int(self.cfg.seed), count, int(self.tcfg.eval_batch_size))

    @contextlib.contextmanager
    def _rows_of(self, adapter: Path | None):
        """The block runs with the rows saved in `adapter` (None: the current rows); the current ones come back after."""
        if adapter is None:
            yield
            return
        rows = (self.tokens.input_rows, self.tokens.output_rows)
        with torch.no_grad(), self.dist.whole_rows(self.tokens, keep_changes=True):  # rank 0's values, under ZeRO-3
            current = [row.detach().clone() for row in rows]
            if self.dist.main:
                saved = read_adapter_rows(adapter, read_adapter_config(adapter), self.backbone.hidden_size)
                for row, value in zip(rows, saved):
                    row.copy_(value)
        try:
            yield
        finally:
            with torch.no_grad(), self.dist.whole_rows(self.tokens, keep_changes=True):
                for row, value in zip(rows, current):
                    row.copy_(value)

    def _show_final_samples(self, images: list[Image.Image]) -> dict:
        """samples/final_XX.png, the judge's verdicts (toy concepts) and contact_sheet.png: the summary's part."""
        drawn = {"final_samples": [], "final_samples_adapter": None, "contact_sheet": None, "generation": None}
        if not images:
            return drawn
        samples = self.run_dir / "samples"
        samples.mkdir(exist_ok=True)
        for stale in samples.glob("final_*.png"):  # a resumed run may draw fewer
            stale.unlink()
        for index, image in enumerate(images):
            image.save(samples / f"final_{index:02d}.png")
            drawn["final_samples"].append(str(samples / f"final_{index:02d}.png"))
        verdicts = judge_toy_samples(self.backbone.path, self.concept, images)
        sheet = contact_sheet(self.concept.name, [load_image(p) for p in self.concept.photos], images, verdicts)
        sheet.save(self.run_dir / "contact_sheet.png")
        adapter = self._chosen_adapter() or self.run_dir / "adapter"
        self.logger.log_image("samples/contact_sheet", sheet, f"training photos and final samples of "
                              f"<{self.concept.name}> ({adapter.name}/)", step=self.total_steps)
        return drawn | {"samples": str(samples), "final_samples_adapter": str(adapter),
                        "contact_sheet": str(self.run_dir / "contact_sheet.png"),
                        "generation": judge_figures(verdicts) if verdicts else None}

    def _run_losses(self) -> list[float]:
        """Every step's training loss of the whole run: from metrics.jsonl when resumed (this process saw only
        the resumed steps; a step logged twice, before and after an interruption, counts once, its last record)."""
        path = self.run_dir / "metrics.jsonl"
        if not (self.resuming and path.is_file()):
            return self.losses
        by_step = {}
        for line in path.read_text().splitlines():
            record = json.loads(line) if line.strip() else {}
            if "train/loss" in record and "step" in record:
                by_step[int(record["step"])] = float(record["train/loss"])
        return [by_step[step] for step in sorted(by_step)] or self.losses

    def _summary(self, final: dict, text_qa: dict | None, answer: str) -> dict:
        run_dir, selected_on = self.run_dir, self.selected_on
        summary = {
            "run_dir": str(run_dir), "adapter": str(run_dir / "adapter"),
            "best_adapter": str(run_dir / "best") if self._chosen_adapter() and (run_dir / "best").is_dir() else None,
            "selected_on": selected_on, "final_split": final["eval/split"],
            "val": self.last_eval if selected_on else None, "text_qa": text_qa,
            "metrics": str(run_dir / "metrics.jsonl"), "wandb": self.logger.wandb_dir,
            "samples": str(run_dir / "samples") if self.draw_samples else None, "steps": self.total_steps,
            "resumed_from": self.start_step if self.resuming else None,
            "wall_seconds": round(time.time() - self.started, 1),
            "final": final,
            "best": ({"selected_on": selected_on} | {
                side: {"metric": self.side_metric[side], "score": self.best[side], "step": self.best_steps[side]}
                for side in self.sides} if selected_on else None),
            "sample_answer": answer,
            "vq_images_encoded_this_run": self.cache.encoded, "preparation": str(self.preparation.directory),
            "launcher": self.dist.launcher, "deepspeed_zero_stage": self.dist.zero_stage,
            "samples_per_epoch": self.plan.size,
        }
        losses = self._run_losses()
        if losses:
            tenth = max(1, len(losses) // 10)
            summary["loss_first_10pct"] = sum(losses[:tenth]) / tenth
            summary["loss_last_10pct"] = sum(losses[-tenth:]) / tenth
        return summary


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Personalize one concept; returns a summary (paths, steps, losses, accuracies)."""
    previous = torch.are_deterministic_algorithms_enabled()
    if cfg.trainer.deterministic:
        # Bit-exact reruns and resumes: multi-threaded index backward otherwise differs at ~1e-7.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return PersonalizationRecipe(cfg, run_dir).run()
    finally:
        torch.use_deterministic_algorithms(previous)
