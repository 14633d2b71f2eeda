"""The training recipe: only the concept's rows learn; everything else is frozen and cached.

    setup()            validate the concept, load the backbone, prepare data, build the optimizer and its
                       learning-rate schedule; each `_setup_*` step returns what it builds
    train_step(step)   one optimizer step over the global batch (this process's share of it)
    evaluate(done)     `_score` the validation split, `_draw_sample`, `_keep_best` (best/)
    save_checkpoint()  rows + optimizer + state, atomically, for an exact resume
    finish()           the last adapter; best/ scored on validation and (once) on the test split, its final
                       samples and their contact sheet; the summary

`train(cfg, run_dir)` runs them in order. What differs between one process, DDP and ZeRO lives
in `training/distributed.py`; preparation in `data/preparation.py`; decoding in `model/decoding.py`;
what the run draws (and the judge of toy concepts' drawings) in `training/drawing.py`; the optimizer
and the schedule (trainer.optimizer, trainer.lr_schedule) in `training/optimization.py`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from omegaconf import DictConfig
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
from yochameleon.data.samples import EpochPlan, SampleBuilder, check_self_prompt_settings, collate
from yochameleon.data.vq_cache import VQCodeCache
from yochameleon.errors import YoChameleonError
from yochameleon.io import write_json
from yochameleon.metrics.generation import generation_metrics
from yochameleon.metrics.options import score_text_checks
from yochameleon.metrics.recognition import recognition_metrics
from yochameleon.model.decoding import generate_answer
from yochameleon.model.personalized import PersonalizedChameleon
from yochameleon.sources import load_configured_backbone, source_record
from yochameleon.training.checkpoint import (check_run_facts, has_checkpoint, load_checkpoint, optimizer_shards,
                                             read_state, save_checkpoint)
from yochameleon.training.distributed import Distributed, barrier
from yochameleon.training.drawing import (contact_sheet, draw_images, judge_figures, judge_toy_samples, sample_image,
                                          sample_settings)
from yochameleon.training.interrupt import StopRequests, TrainingInterrupted
from yochameleon.training.logging import NullLogger, RunLogger
from yochameleon.training.optimization import build_lr_scheduler, build_optimizer, scaled_rows_step, schedule_fact

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


@dataclass
class Selection:
    """What chooses best/ and what it holds so far. The understanding side (trainer.select_best_by) always;
    the generation side (`GENERATION_METRIC`) when g-tokens of their own learn to draw."""

    select_by: str
    selected_on: str | None  # "val" when a validation split chooses; None: nothing is chosen (never on test)
    sides: list[str]
    side_metric: dict
    best: dict = field(default_factory=lambda: {"understanding": -math.inf, "generation": math.inf})
    best_steps: dict = field(default_factory=dict)
    best_rows: dict = field(default_factory=dict)

    def improved(self, metrics: dict) -> list[str]:
        """The sides whose metric in `metrics` beats what best/ holds (NaN never does)."""
        return [side for side in self.sides
                if _better(side, metrics.get(self.side_metric[side], math.nan), self.best[side])]

    def keep(self, sides: list[str], metrics: dict, step: int, rows: tuple) -> None:
        for side in sides:
            self.best[side], self.best_steps[side], self.best_rows[side] = metrics[self.side_metric[side]], step, rows

    def record(self) -> dict:
        """Each side's metric, score and step (best/'s adapter_config.json "selection", the summary's "best")."""
        return {side: {"metric": self.side_metric[side], "score": self.best[side], "step": self.best_steps[side]}
                for side in self.sides}


class PersonalizationRecipe:
    """One concept's training run on a frozen backbone (see the module docstring for the stages)."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.tcfg, self.recipe = cfg.trainer, cfg.recipe
        self.batch_size, self.accum = int(self.tcfg.batch_size), int(self.tcfg.grad_accum)
        self.last_eval: dict | None = None  # the latest evaluation's metrics
        self.final_val: dict | None = None  # the scored adapter's validation figures (`_final_scores`)
        self.losses: list[float] = []  # this process's steps' training losses

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        """Everything before the first step, in the order that fails fastest on bad input; each step returns
        what it builds."""
        self.started = time.time()
        self.resuming = _check_run_dir(self.run_dir, bool(self.tcfg.resume), self.tcfg.max_steps)
        check_self_prompt_settings(self.recipe)
        if self.recipe.max_row_norm is not None and float(self.recipe.max_row_norm) <= 0:
            raise YoChameleonError(f"recipe.max_row_norm={self.recipe.max_row_norm} must be a positive number (a "
                                   "multiple of the backbone's median input-row norm) or null")
        self.concept = ConceptData.from_config(self.cfg.concept)  # validate data before loading a large model
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.accelerator, self.dist = self._setup_launcher()
        self.backbone, self.tokens = self._setup_backbone()
        self.row_norm_limit = self._row_norm_limit()
        # Evaluations during training score the validation split (or the training photos); only a
        # validation split chooses best/. The test split is scored once, at the end, to report.
        self.select_split, self.test_split = self.concept.selection_split(), self.concept.test_split()
        self.cache, self.builder, self.preparation = self._setup_data()
        self.plan, self.micro_per_epoch, self.total_steps = self._setup_plan()
        self.init_record = self._setup_init()
        self.facts, self.fingerprint, self.adapter_extra = self._setup_records()
        self.model, self.optimizer, self.lr_scheduler = self._setup_optimization()
        self.inner = _unwrapped(self.accelerator, self.model)  # evaluation and sampling bypass any DDP wrapper
        self.selection, self.scores_generation = self._setup_selection()
        self.start_step, wandb_id = self._setup_resume()
        self.logger = self._setup_logger(wandb_id)
        self.draw_samples = (bool(self.tcfg.sample_images) and self.backbone.has_decoder
                             and bool(self.recipe.tasks.generation))

    def _setup_launcher(self) -> tuple[Accelerator, Distributed]:
        precision = str(self.tcfg.precision)
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() and self.tcfg.device != "cpu" else "no"
        accelerator = Accelerator(mixed_precision=precision, cpu=self.tcfg.device == "cpu",
                                  gradient_accumulation_steps=self.accum)
        torch.manual_seed(int(self.cfg.seed))
        dist = Distributed(accelerator)
        if dist.main:
            log.info("launcher: %s, %d process(es), device %s, precision %s",
                     accelerator.distributed_type.value, dist.world, accelerator.device, precision)
        dist.check(self.batch_size, self.resuming, self.run_dir)
        # Settings that edit the rows after the optimizer's step (the g rows' blend, the norm cap): DeepSpeed steps
        # its own (partitioned, fp32 master) copy of the rows, so an edit here would be lost.
        after_step = (("generation_lr_scale", float(self.recipe.generation_lr_scale) != 1.0, "1"),
                      ("max_row_norm", self.recipe.max_row_norm is not None, "null"))
        for key, used, off in after_step:
            if dist.zero_stage is not None and used:
                raise YoChameleonError(f"recipe.{key}={self.recipe[key]} is not available under DeepSpeed "
                                       f"(ZeRO-{dist.zero_stage}); set recipe.{key}={off} or train with one process "
                                       "or DDP")
        return accelerator, dist

    def _setup_backbone(self):
        """The backbone and the concept's tokens on it; a resume with other settings is refused here, before the
        data is prepared."""
        # Rank 0 builds/caches the tiny model first; a rank-0-first load under ZeRO-3 would deadlock
        # zero.Init's collectives, hence whole weights (partitioned later, at `prepare`).
        with self.dist.main_process_first(), self.dist.whole_weights():
            backbone = load_configured_backbone(self.cfg.model, self.cfg.cache_dir, device=self.accelerator.device)
        recipe = self.recipe
        first = str(recipe.first_token)  # `auto`: the backbone family's own first free row
        tokens = PersonalizedTokens.from_backbone(
            backbone.model, backbone.vocabulary_map, self.concept.name, int(recipe.k_g), int(recipe.k_u),
            backbone.default_first_token if first == "auto" else first, bool(recipe.shared_tokens))
        tokens.generation_group = str(recipe.generation_group)  # saved with the recipe; loading sets it back
        tokens.to(self.accelerator.device)
        if self.resuming:
            check_run_facts(self.run_dir, self._run_facts(tokens))
        return backbone, tokens

    def _row_norm_limit(self) -> float | None:
        """recipe.max_row_norm x the median norm of the backbone's non-zero input rows (None: no cap)."""
        factor = self.recipe.max_row_norm
        if factor is None:
            return None
        norms = self.backbone.model.get_input_embeddings().weight.detach().float().norm(dim=-1)
        limit = float(factor) * float(norms[norms > 0].median())
        if self.dist.main:
            log.info("recipe.max_row_norm=%s: input rows kept within norm %.4f", factor, limit)
        return limit

    def _setup_data(self) -> tuple[VQCodeCache, SampleBuilder, object]:
        """The VQ code cache (warmed with every image the run reads), the sample builder and the preparation."""
        cfg, concept, select, test = self.cfg, self.concept, self.select_split, self.test_split
        cache = VQCodeCache(self.backbone, Path(cfg.cache_dir) / "vq")
        all_images = [*concept.photos, *select.positives, *select.negatives,
                      *(test.positives + test.negatives if test else [])]
        builder = SampleBuilder.from_recipe(self.backbone, self.tokens, cache, self.recipe)
        progress = bool(self.tcfg.progress and self.dist.main)
        with self.dist.main_process_first():
            with tqdm(total=len(all_images), desc="VQ-encode images (cached)", disable=not progress) as bar:
                cache.warm(all_images, bar)
            prep = prepare_concept(cfg, concept, self.backbone, cfg.cache_dir, progress=progress)
            cache.warm([*prep.hard_negatives, *prep.easy_negatives, *(p for p, _ in prep.soft_positives)])
        return cache, builder, prep

    def _setup_plan(self) -> tuple[EpochPlan, int, int]:
        """The epochs' samples, micro-batches per epoch, and the run's optimizer steps."""
        plan = EpochPlan.from_recipe(self.concept, self.recipe, self.cfg.seed, self.preparation)
        micro_per_epoch = plan.steps_per_epoch(self.batch_size)
        total = (int(self.tcfg.max_steps) if self.tcfg.max_steps
                 else math.ceil(self.tcfg.epochs * micro_per_epoch / self.accum))
        return plan, micro_per_epoch, total

    def _setup_init(self) -> dict:
        """recipe.init: where the rows start (a resume reads them from its checkpoint instead)."""
        kind = str(self.recipe.init)
        if kind == "encoder" and not self.resuming:
            return self._init_from_encoder()
        if kind in ("reserved", "encoder") or self.resuming or not self.tokens.g_token_ids():
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

    def _init_from_encoder(self) -> dict:
        """recipe.init=encoder: every row starts as the concept encoder makes it from the training photos."""
        from yochameleon.concept.encoder import ZeroShot, load_encoder

        if self.recipe.get("encoder") is None:
            raise YoChameleonError("recipe.init=encoder needs recipe.encoder=<a concept encoder directory> "
                                   "(python -m yochameleon.train_encoder; the toy world ships ${asset:toyworld/encoder})")
        zero_shot = ZeroShot(load_encoder(self.recipe.encoder, self.backbone), self.backbone, self.cache)
        config, tokens = zero_shot.config, self.tokens
        if (config.k_g, config.k_u) != (tokens.k_g, tokens.k_u) or tokens.shared:
            raise YoChameleonError(f"recipe.encoder {self.recipe.encoder} makes k_g={config.k_g}, k_u={config.k_u} "
                                   f"separate tokens; this recipe has k_g={tokens.k_g}, k_u={tokens.k_u}"
                                   f"{' shared' if tokens.shared else ''}: set the same")
        photos = [str(p) for p in self.concept.photos[:config.max_photos]]
        encoded = zero_shot.encode(self.concept.name, photos, tokens.token_names, tokens.token_ids.tolist())
        with torch.no_grad():
            tokens.input_rows.copy_(encoded.input_rows.to(tokens.input_rows.device))
            tokens.output_rows.copy_(encoded.output_rows.to(tokens.output_rows.device))
        return {"kind": "encoder", "encoder": str(self.recipe.encoder), "photos": len(photos),
                "seconds": round(encoded.encoded_seconds, 4)}

    def _setup_records(self) -> tuple[dict, dict, dict]:
        """What the checkpoint and the adapters record: the run facts a resume must share, the backbone's
        fingerprint (read from the whole weights, before ZeRO-3 may partition them in `prepare`), the adapter's
        other fields."""
        facts = self._run_facts(self.tokens)
        fingerprint = source_record(self.backbone, self.cfg.model)
        extra = {**facts, "system_prefix": self.tokens.system_prefix(),
                 "recipe": plain_config(self.recipe), "init": self.init_record}
        return facts, fingerprint, extra

    def _setup_optimization(self):
        """The model over the backbone and rows, the optimizer (trainer.optimizer) and its learning-rate schedule
        (trainer.lr_schedule), prepared by accelerate (the schedule is stepped here, once per optimizer step)."""
        tcfg, dist = self.tcfg, self.dist
        self.backbone.model.lockstep = dist.zero3  # Janus: every rank calls every submodule (Chameleon: no-op)
        model = PersonalizedChameleon(self.backbone.model, [self.tokens],
                                      dist.length_group_ratio(float(tcfg.length_group_ratio)),
                                      gradient_checkpointing=bool(tcfg.gradient_checkpointing))
        dist.set_micro_batch(self.batch_size)
        # Rows started by a concept encoder are near the answer already: a smaller step keeps them there.
        scale = float(self.recipe.encoder_lr_scale) if str(self.recipe.init) == "encoder" else 1.0
        optimizer = build_optimizer(self.tokens.parameters(), tcfg, scale)
        scheduler = build_lr_scheduler(optimizer, tcfg, self.total_steps)
        model, optimizer = self.accelerator.prepare(model, optimizer)
        return model, optimizer, scheduler

    def _run_facts(self, tokens: PersonalizedTokens) -> dict:
        """Settings a checkpoint must share with the run that resumes it."""
        cfg = self.cfg
        return {
            "concept": tokens.name, "model": cfg.model.name, "k_g": tokens.k_g, "k_u": tokens.k_u,
            "first_token": tokens.token_names[0], "self_prompting": bool(cfg.recipe.self_prompting),
            "shared_tokens": tokens.shared, "batch_size": int(cfg.trainer.batch_size),
            "grad_accum": int(cfg.trainer.grad_accum), "seed": int(cfg.seed),
            "optimizer": str(cfg.trainer.optimizer), "lr_schedule": schedule_fact(cfg.trainer),
        }

    def _setup_selection(self) -> tuple[Selection, bool]:
        """What chooses best/ (see `Selection`; with shared tokens one step must serve both sides, so the
        understanding score decides), and whether evaluations score generation."""
        scores_generation = bool(self.recipe.tasks.generation) and bool(self.tokens.g_token_ids())
        sides = ["understanding"] + (["generation"] if scores_generation and not self.tokens.shared else [])
        select_by = str(self.tcfg.select_best_by)
        selection = Selection(select_by, "val" if self.select_split.name == "val" else None, sides,
                              {"understanding": select_by, "generation": GENERATION_METRIC},
                              best_steps={side: None for side in sides}, best_rows={side: None for side in sides})
        return selection, scores_generation

    def _setup_resume(self) -> tuple[int, str | None]:
        """A resume's rows, optimizer, schedule, RNG and best/ scores; the step to start from and the W&B run id."""
        if not self.resuming:
            return 0, None
        state = load_checkpoint(self.run_dir, self.backbone, self.tokens, self.optimizer, self.facts,
                                self.fingerprint, self.lr_scheduler)
        self._resume_selection()
        log.info("resuming %s from step %d", self.run_dir, state["step"])
        return state["step"], state.get("wandb_id")

    def _resume_selection(self) -> None:
        """The scores best/ holds are read from best/ itself (a checkpoint can be older than best/ on disk)."""
        chosen, best_dir = self.selection, self.run_dir / "best"
        if not (chosen.selected_on and (best_dir / "adapter_config.json").is_file()):
            return
        config = read_adapter_config(best_dir)
        rows = read_adapter_rows(config, self.backbone.hidden_size)
        rows = tuple(r.detach().float().cpu().clone() for r in rows)
        selection = config.selection or {"understanding": {  # best/ written before "selection" was
            "score": config.get(chosen.select_by, -math.inf), "step": config.step}}
        for side, kept in selection.items():
            if side in chosen.sides and kept.get("score") is not None:
                chosen.best[side], chosen.best_steps[side], chosen.best_rows[side] = (float(kept["score"]),
                                                                                      kept["step"], rows)

    def _setup_logger(self, wandb_id: str | None):
        """The run's W&B logger on rank 0 (continuing the run's W&B run on a resume), a null one elsewhere."""
        if not self.dist.main:
            return NullLogger()
        run_config = plain_config(self.cfg) | {"run_dir": str(self.run_dir)}  # paths, choices as strings
        return RunLogger(self.cfg.logger, self.run_dir, run_config, wandb_id,
                         self.start_step if self.resuming else None)

    # ---------------------------------------------------------------- the steps
    def train_step(self, step: int) -> dict:
        """One optimizer step (grad_accum micro-batches); returns the step's log record."""
        accelerator, model, dist = self.accelerator, self.model, self.dist
        device, pad_id = accelerator.device, self.backbone.tokenizer.pad_token_id
        task_losses = defaultdict(list)
        lr = self.lr_scheduler.get_last_lr()[0]  # this step's learning rate
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
                if accelerator.sync_gradients:  # the g-token rows' own rate (recipe.generation_lr_scale)
                    scaled_rows_step(self.optimizer, [self.tokens.input_rows, self.tokens.output_rows],
                                     self.tokens.g_positions(), float(self.recipe.generation_lr_scale))
                else:
                    self.optimizer.step()  # accumulating: accelerate's wrapper does not step
                if accelerator.sync_gradients:  # once per optimizer step, whatever grad_accum
                    self.lr_scheduler.step()
                    if self.row_norm_limit is not None:  # recipe.max_row_norm
                        self.tokens.cap_input_norms(self.row_norm_limit)
                self.optimizer.zero_grad(set_to_none=True)
            counted = batch["tasks"] if loss_factor else []  # a stand-in sample is not part of the batch
            for task, value in dist.gather(counted, out["per_sample"].detach()):
                task_losses[task].append(value)
        step_loss = sum(sum(v) for v in task_losses.values()) / sum(len(v) for v in task_losses.values())
        self.losses.append(step_loss)
        record = {"train/loss": step_loss, "train/epoch": (step * self.accum) / self.micro_per_epoch, "train/lr": lr}
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
        if not self.selection.selected_on:
            return
        improved = self.dist.agree(self.selection.improved(metrics))
        if not improved:
            return
        with self.dist.whole_rows(self.tokens):
            rows = (self.tokens.input_rows.detach().float().cpu().clone(),
                    self.tokens.output_rows.detach().float().cpu().clone())
        self.selection.keep(improved, metrics, done, rows)
        if self.dist.main:
            self._write_best()

    def _write_best(self) -> None:
        """best/ from the kept rows of each side (see `_keep_best`); its config says which step each side is from."""
        kept = self.selection
        inputs, outputs = (r.clone() for r in kept.best_rows["understanding"])
        if kept.best_rows.get("generation") is not None:
            g = torch.tensor(self.tokens.g_positions(), dtype=torch.long)
            inputs[g], outputs[g] = kept.best_rows["generation"][0][g], kept.best_rows["generation"][1][g]
        chosen = PersonalizedTokens(self.tokens.name, self.tokens.token_names, self.tokens.token_ids.tolist(),
                                    self.tokens.k_g, self.tokens.k_u, inputs, outputs, self.tokens.shared)
        save_adapter(self.run_dir / "best", chosen, self.fingerprint, self.adapter_extra | {
            "step": kept.best_steps["understanding"], "selected_on": kept.selected_on,
            "selection_metric": kept.select_by, kept.select_by: kept.best["understanding"],
            "selection": kept.record()})

    def save_checkpoint(self, done: int) -> None:
        """Rows, optimizer (every rank's ZeRO-1/2/3 partition) and state; all ranks must call it."""
        shards = optimizer_shards(self.optimizer)
        if self.dist.evaluates:
            with self.dist.whole_rows(self.tokens):
                if self.dist.main:
                    save_checkpoint(self.run_dir, self.tokens, self.optimizer,
                                    {"step": done, "total_steps": self.total_steps,
                                     "wandb_id": self.logger.wandb_id}, self.fingerprint, self.facts, shards,
                                    self.lr_scheduler)

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
        """The last step's adapter/; best/ (what the run tells a user to use) scored on validation, on the test
        split once and on text QA; its final samples; the run's summary."""
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
        """The adapter the run tells a user to use (best/ when the validation split chose one, else the last
        step's rows), scored: its validation figures (`self.final_val`), the test split once, the text checks and
        a sample answer. best/ joins rows of two steps (understanding and g-token rows), so its validation figures
        are scored here, not read from either step's evaluation."""
        chosen = self._chosen_adapter()
        if chosen is None and (self.last_eval is None or self.start_step == self.total_steps):
            self.last_eval = self._score(self.select_split)  # nothing evaluated the last step here
        with self._rows_of(chosen):
            self.final_val = self._score(self.select_split) if chosen is not None else self.last_eval
            # The test split, once, for reporting: nothing above read it.
            test = self._score(self.test_split, prefix="test") if self.test_split else None
            self.model.eval()
            final = _unprefixed(test, "test") if test else self.final_val
            # The concept's multiple-choice text checks (the toy concepts carry theirs), in both wordings.
            checks = self.concept.text_checks
            text_qa = score_text_checks(self.inner, self.builder, checks) if checks else None
            # Forced token group: shows what the rows learnt, whatever the inference setting.
            answer = generate_answer(self.inner, self.builder, templates.FALLBACK_TEXT_QA[0][0], max_new_tokens=24)
        return final, test, text_qa, answer

    def _chosen_adapter(self) -> Path | None:
        """best/ when the validation split chose one (what the summary tells a user to use); None: the last rows."""
        return self.run_dir / "best" if self.selection.selected_on and self.selection.best_steps["understanding"] is not None else None

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
                saved = read_adapter_rows(read_adapter_config(adapter), self.backbone.hidden_size)
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
        run_dir, selected_on = self.run_dir, self.selection.selected_on
        summary = {
            "run_dir": str(run_dir), "adapter": str(run_dir / "adapter"),
            "best_adapter": str(run_dir / "best") if self._chosen_adapter() and (run_dir / "best").is_dir() else None,
            "selected_on": selected_on, "final_split": final["eval/split"],
            "scored_adapter": str(self._chosen_adapter() or run_dir / "adapter"),  # what final, val and text_qa score
            "val": self.final_val if selected_on else None, "text_qa": text_qa,
            "metrics": str(run_dir / "metrics.jsonl"), "wandb": self.logger.wandb_dir,
            "samples": str(run_dir / "samples") if self.draw_samples else None, "steps": self.total_steps,
            "resumed_from": self.start_step if self.resuming else None,
            "wall_seconds": round(time.time() - self.started, 1),
            "final": final,
            "best": {"selected_on": selected_on} | self.selection.record() if selected_on else None,
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
