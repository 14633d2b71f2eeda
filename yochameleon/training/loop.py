"""The training loop: only the concept's rows learn; everything else is frozen and cached.

    compose config -> load backbone -> validate concept -> cache VQ codes ->
    plan samples -> AdamW on the rows (accelerate) -> evaluate, keep best -> write adapter
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections import defaultdict
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm.auto import tqdm

from yochameleon.concept.adapter import save_adapter
from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.data import templates
from yochameleon.data.concept import ConceptData, EvalSplit
from yochameleon.data.samples import EpochPlan, SampleBuilder, collate
from yochameleon.data.vq_cache import VQCodeCache
from yochameleon.errors import YoChameleonError
from yochameleon.model.decoding import generate_answer
from yochameleon.metrics.recognition import recognition_accuracy, yes_probabilities
from yochameleon.model.image_generation import SamplingConfig, decode_image_tokens, sample_image_tokens, to_pil
from yochameleon.model.loading import load_configured_backbone
from yochameleon.model.personalized import PersonalizedChameleon
from yochameleon.training.checkpoint import (has_checkpoint, load_checkpoint, optimizer_shards, read_state,
                                             save_checkpoint)
from yochameleon.training.logging import NullLogger, RunLogger

log = logging.getLogger(__name__)


class RunDirError(YoChameleonError):
    """The run directory already holds a run that this command would overwrite."""


def evaluate(model, builder, split: EvalSplit, batch_size: int, prefix: str = "eval") -> dict:
    """Recognition accuracy on one split (logits of Yes vs No, one forward pass each), keys `<prefix>/...`.

    During training `split` is the validation split (or the training photos); the test split is
    scored once, at the end, with prefix "test".
    """
    metrics = {f"{prefix}/split": split.name, f"{prefix}/split_is_heldout": float(split.heldout)}
    # Under self-prompting, report both the forced token group and the one the model emits itself.
    for mode, name in (("forced", f"{prefix}/recognition"), ("emitted", f"{prefix}/recognition_emitted")):
        if mode == "emitted" and not builder.answer_prefix("recognition"):
            break  # no token group to emit: the emitted score would repeat the forced one
        p_pos = yes_probabilities(model, builder, split.positives, batch_size=batch_size, self_prompt=mode)
        p_neg = yes_probabilities(model, builder, split.negatives, batch_size=batch_size, self_prompt=mode)
        metrics |= {f"{name}/{k}": v for k, v in recognition_accuracy(p_pos, p_neg).items()}
        metrics |= {f"{name}/mean_p_yes_positive": float(p_pos.mean()),
                    f"{name}/mean_p_yes_negative": float(p_neg.mean())}
    return metrics


def _unprefixed(metrics: dict, prefix: str) -> dict:
    """`test/recognition/auroc` -> `eval/recognition/auroc`: the summary's `final` reads like any evaluation."""
    return {"eval/" + k.removeprefix(prefix + "/"): v for k, v in metrics.items()}


def sample_image(model, builder, seed: int, guidance_scale: float) -> Image.Image:
    """One image for "A photo of <sks>." (seeded), to watch generation improve during training."""
    backbone = builder.backbone
    generator = torch.Generator(device=backbone.device).manual_seed(seed)
    tokens = sample_image_tokens(model, backbone, [builder.image_prompt_ids(templates.GENERATION_PROMPTS[0])],
                                 SamplingConfig(guidance_scale=guidance_scale),
                                 [builder.unconditional_image_prompt_ids()], generator)
    return to_pil(decode_image_tokens(backbone, tokens), backbone.processor.image_processor.rescale_factor)[0]


def process_layout(accelerator) -> tuple[int, int]:
    """(world size, rank). Read from torch.distributed when it is up: accelerate reports a single
    process for DeepSpeed on CPU although DeepSpeed itself runs on every rank."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return accelerator.num_processes, accelerator.process_index


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_process_first(rank: int):
    """Rank 0 runs the block first (it fills the caches); the others follow and read them."""
    if rank != 0:
        barrier()
    yield
    if rank == 0:
        barrier()


def zero3_enabled(accelerator) -> bool:
    """Whether DeepSpeed ZeRO-3 partitions the parameters (every rank must then take part in
    every forward, evaluation included, since each one gathers its weights from all ranks)."""
    plugin = accelerator.state.deepspeed_plugin
    return plugin is not None and int(plugin.zero_stage) == 3


@contextlib.contextmanager
def _without_zero_init(accelerator, zero3: bool):
    """Hide the DeepSpeed config from transformers while the block runs, so `from_pretrained`
    loads whole weights instead of partitioning them in `deepspeed.zero.Init`."""
    if not zero3:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        accelerator.state.deepspeed_plugin.set_deepspeed_weakref()


def whole_rows(tokens, zero3: bool):
    """A context with the concept's rows whole on this rank (all ranks must enter it under ZeRO-3)."""
    if not zero3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(tokens.parameters()), modifier_rank=None)


def rank_share(global_specs: list, rank: int, world: int) -> tuple[list, float]:
    """This process's samples of a global batch, and the factor on their summed loss that makes the
    loss the mean over the global batch once DDP / DeepSpeed average the gradients over ranks.

    A short last batch can leave a rank without samples; it must still run a forward and backward
    (DDP and ZeRO synchronise gradients there), so it runs the batch's first sample with factor 0.
    """
    mine = global_specs[rank::world]
    if mine:
        return mine, world / len(global_specs)
    return global_specs[:1], 0.0


def _gather_task_losses(tasks: list[str], losses: torch.Tensor) -> list[tuple[str, float]]:
    """(task, loss) for every sample of the global batch, gathered from all processes."""
    import torch.distributed as dist

    mine = list(zip(tasks, losses.tolist()))
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mine
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return [pair for part in everyone for pair in part]


def _run_facts(cfg: DictConfig, backbone, tokens) -> dict:
    """Settings a checkpoint must share with the run that resumes it."""
    return {
        "concept": tokens.name, "model": cfg.model.name, "k_g": tokens.k_g, "k_u": tokens.k_u,
        "first_token": tokens.token_names[0], "self_prompting": bool(cfg.recipe.self_prompting),
        "shared_tokens": tokens.shared,
        "batch_size": int(cfg.trainer.batch_size), "grad_accum": int(cfg.trainer.grad_accum), "seed": int(cfg.seed),
    }


def _check_run_dir(run_dir: Path, resume: bool) -> bool:
    """True when we continue a checkpoint; refuses to clobber an existing run otherwise."""
    if has_checkpoint(run_dir):
        if resume:
            return True
        state = read_state(run_dir)
        raise RunDirError(
            f"{run_dir} already holds a run (step {state['step']} of {state['total_steps']}). Continue it with "
            "trainer.resume=true, or start another with run_name=<new name>. Nothing was changed.")
    if resume:
        log.warning("trainer.resume=true but %s has no checkpoint: starting from step 0", run_dir)
    return False


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Personalize one concept; returns a summary (paths, steps, losses, accuracies)."""
    previous = torch.are_deterministic_algorithms_enabled()
    if cfg.trainer.get("deterministic"):
        # Bit-exact reruns and resumes: multi-threaded index backward otherwise differs at ~1e-7.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(cfg, run_dir)
    finally:
        torch.use_deterministic_algorithms(previous)


def _train(cfg: DictConfig, run_dir: Path) -> dict:
    started = time.time()
    tcfg = cfg.trainer
    run_dir = Path(run_dir)
    resuming = _check_run_dir(run_dir, bool(tcfg.resume))
    concept = ConceptData.from_config(cfg.concept)  # validate data before loading a large model
    run_dir.mkdir(parents=True, exist_ok=True)

    precision = str(tcfg.precision)
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and tcfg.device != "cpu" else "no"
    accelerator = Accelerator(
        mixed_precision=precision,
        cpu=tcfg.device == "cpu", gradient_accumulation_steps=int(tcfg.grad_accum),
    )
    torch.manual_seed(int(cfg.seed))
    world, rank = process_layout(accelerator)
    main = rank == 0
    ds_plugin = accelerator.state.deepspeed_plugin
    zero3 = zero3_enabled(accelerator)
    evaluates = main or zero3  # under ZeRO-3 every rank runs the evaluation forwards; only the main one logs
    if main:
        log.info("launcher: %s, %d process(es), device %s, precision %s",
                 accelerator.distributed_type.value, world, accelerator.device, precision)
    if resuming and zero3:
        raise YoChameleonError(
            f"trainer.resume=true under DeepSpeed ZeRO-3: the checkpoint in {run_dir} holds the rows and one "
            "optimizer state, not ZeRO-3's per-rank shards, so it cannot continue exactly. Resume with the launcher "
            "that wrote it (one process, DDP), or start a new run with run_name=<new name>. Nothing was changed.")
    if int(tcfg.batch_size) < world:
        raise YoChameleonError(f"trainer.batch_size={tcfg.batch_size} is the global batch and must be at least the "
                               f"number of processes ({world})")
    # Rank 0 builds/caches the tiny model and the preparation first. Under ZeRO-3 the backbone is
    # still loaded whole (no zero.Init): VQ encoding and token set-up read it before the engine
    # partitions it at `prepare`, and a rank-0-first load would deadlock zero.Init's collectives.
    with main_process_first(rank), _without_zero_init(accelerator, zero3):
        backbone = load_configured_backbone(cfg.model, cfg.cache_dir, device=accelerator.device)
    recipe = cfg.recipe
    tokens = PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, concept.name,
                                              int(recipe.k_g), int(recipe.k_u), str(recipe.first_token),
                                              bool(recipe.get("shared_tokens", False)))
    tokens.to(accelerator.device)
    cache = VQCodeCache(backbone, Path(cfg.cache_dir) / "vq")
    # Evaluations during training score the validation split (or the training photos); only a
    # validation split chooses best/. The test split is scored once, at the end, to report.
    select_split, test_split = concept.selection_split(), concept.test_split()
    all_images = [*concept.photos, *select_split.positives, *select_split.negatives,
                  *(test_split.positives + test_split.negatives if test_split else [])]
    builder = SampleBuilder(backbone, tokens, cache, bool(recipe.self_prompting),
                            group_loss=str(recipe.self_prompt_loss))
    from yochameleon.data.preparation import prepare_concept

    with main_process_first(rank):
        with tqdm(total=len(all_images), desc="VQ-encode images (cached)", disable=not (tcfg.progress and main)) as bar:
            cache.warm(all_images, bar)
        preparation = prepare_concept(cfg, concept, backbone, cfg.cache_dir, progress=bool(tcfg.progress and main))
        cache.warm([*preparation.hard_negatives, *preparation.easy_negatives,
                    *(p for p, _ in preparation.soft_positives)])
    plan = EpochPlan(concept, OmegaConf.to_container(recipe.tasks), int(cfg.seed), int(recipe.negatives_per_photo),
                     preparation, int(recipe.soft_positives.per_epoch) if recipe.soft_positives.enabled else 0,
                     balance_recognition=bool(recipe.balance_recognition))

    batch_size, accum = int(tcfg.batch_size), int(tcfg.grad_accum)
    micro_per_epoch = plan.steps_per_epoch(batch_size)
    total_steps = int(tcfg.max_steps) if tcfg.get("max_steps") else math.ceil(tcfg.epochs * micro_per_epoch / accum)

    # Under ZeRO-3 every module call gathers weights collectively, so all ranks must make the same
    # calls: length groups (their number depends on each rank's samples) are off there.
    model = PersonalizedChameleon(backbone.model, [tokens], 0.0 if zero3 else float(tcfg.get("length_group_ratio", 0.5)),
                                  gradient_checkpointing=bool(tcfg.get("gradient_checkpointing", False)))
    if ds_plugin is not None:  # no DataLoader here, so DeepSpeed's "auto" sizes are ours to fill
        ds_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = max(1, batch_size // world)
    optimizer = torch.optim.AdamW(tokens.parameters(), lr=float(tcfg.lr), weight_decay=float(tcfg.weight_decay))
    # Read from the whole weights, before ZeRO-3 may partition them in `prepare`.
    facts = _run_facts(cfg, backbone, tokens)
    fingerprint = backbone.fingerprint() | {"path": str(backbone.path), "model_config": cfg.model.name}
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)  # evaluation and sampling bypass any DDP wrapper
    adapter_extra = {**facts, "system_prefix": tokens.system_prefix(),
                     "recipe": OmegaConf.to_container(recipe, resolve=True)}

    start_step, best, wandb_id = 0, -math.inf, None
    if resuming:
        state = load_checkpoint(run_dir, backbone, tokens, optimizer, facts)
        start_step, best, wandb_id = state["step"], state["best"], state.get("wandb_id")
        log.info("resuming %s from step %d", run_dir, start_step)

    run_config = OmegaConf.to_container(cfg, resolve=True) | {"run_dir": str(run_dir)}
    logger = (RunLogger(cfg.logger, run_dir, run_config, wandb_id, start_step if resuming else None) if main
              else NullLogger())
    select_by = str(tcfg.select_best_by)
    selected_on = "val" if select_split.name == "val" else None  # never the test split, never the training photos
    last_eval: dict | None = None
    draw_samples = bool(tcfg.sample_images) and backbone.has_decoder and bool(recipe.tasks.generation)
    losses: list[float] = []
    bar = tqdm(total=total_steps, initial=start_step, desc=f"train <{concept.name}>",
               disable=not (tcfg.progress and main))
    model.train()
    for step in range(start_step, total_steps):
        task_losses = defaultdict(list)
        for micro in range(accum):
            global_specs = plan.batch(step * accum + micro, batch_size)
            specs, loss_factor = rank_share(global_specs, rank, world)  # each process takes its share
            batch = collate([builder.build(s) for s in specs], backbone.tokenizer.pad_token_id)
            with accelerator.accumulate(model):
                out = model(batch["input_ids"].to(accelerator.device), batch["attention_mask"].to(accelerator.device),
                            batch["labels"].to(accelerator.device),
                            None if batch["weights"] is None else batch["weights"].to(accelerator.device))
                # Mean over the *global* batch: DDP averages gradients over ranks, hence `world` in the factor.
                accelerator.backward(out["per_sample"].sum() * loss_factor)
                if accelerator.sync_gradients and tcfg.grad_clip:
                    accelerator.clip_grad_norm_(tokens.parameters(), float(tcfg.grad_clip))
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            counted = batch["tasks"] if loss_factor else []  # a stand-in sample is not part of the batch
            for task, value in _gather_task_losses(counted, out["per_sample"].detach()):
                task_losses[task].append(value)
        step_loss = sum(sum(v) for v in task_losses.values()) / sum(len(v) for v in task_losses.values())
        losses.append(step_loss)
        record = {"train/loss": step_loss, "train/epoch": (step * accum) / micro_per_epoch}
        record |= {f"train/loss/{task}": sum(v) / len(v) for task, v in task_losses.items()}
        done = step + 1
        if (done % int(tcfg.eval_every) == 0 or done == total_steps) and evaluates:
            model.eval()
            metrics = last_eval = evaluate(inner, builder, select_split, batch_size=int(tcfg.eval_batch_size))
            model.train()
            record |= metrics
            if draw_samples:
                image = sample_image(inner, builder, int(cfg.seed), float(tcfg.sample_guidance))
                if main:
                    path = run_dir / "samples" / f"step_{done:06d}.png"
                    path.parent.mkdir(exist_ok=True)
                    image.save(path)
                logger.log_image("samples/image", image, f"A photo of <{concept.name}>. (step {done})", step=done)
            score = metrics.get(select_by, -math.inf)
            if selected_on and score > best:
                best = score
                with whole_rows(tokens, zero3):
                    if main:
                        save_adapter(run_dir / "best", tokens, fingerprint, adapter_extra | {
                            "step": done, "selected_on": selected_on, "selection_metric": select_by, select_by: score})
            bar.set_postfix(loss=f"{step_loss:.3f}", acc=f"{metrics['eval/recognition/weighted']:.2f}")
        logger.log(record, step=done)
        bar.update(1)
        if done % int(tcfg.checkpoint_every) == 0 or done == total_steps:
            shards = optimizer_shards(optimizer)  # every rank's ZeRO-1/2 partition (all ranks call it); else None
            if evaluates:
                with whole_rows(tokens, zero3):
                    if main:
                        save_checkpoint(run_dir, tokens, optimizer,
                                        {"step": done, "total_steps": total_steps, "best": best,
                                         "wandb_id": logger.wandb_id}, fingerprint, facts, shards)
    bar.close()
    barrier()
    with whole_rows(tokens, zero3):
        if main:
            save_adapter(run_dir / "adapter", tokens, fingerprint,
                         adapter_extra | {"step": total_steps, "selected_on": None})  # the last step, not a choice
    if evaluates:
        model.eval()
        if last_eval is None or start_step == total_steps:  # nothing evaluated the last step in this process
            last_eval = evaluate(inner, builder, select_split, batch_size=int(tcfg.eval_batch_size))
        # The test split, once, for reporting: nothing above read it.
        test = (evaluate(inner, builder, test_split, batch_size=int(tcfg.eval_batch_size), prefix="test")
                if test_split else None)
        final = _unprefixed(test, "test") if test else last_eval
        toy_qa = None
        if cfg.concept.get("toy"):  # the toy world knows the true attributes: text QA in both wordings
            from yochameleon.toyworld.benchmark import toy_text_qa

            toy_qa = toy_text_qa(inner, builder, concept.name)
        # Forced token group: shows what the rows learnt, whatever the inference setting.
        answer = generate_answer(inner, builder, templates.FALLBACK_TEXT_QA[0][0], max_new_tokens=24)
    if not main:
        return {"run_dir": str(run_dir), "rank": rank, "steps": total_steps}
    logger.log_text("samples/answers", ["question", "answer"], [[templates.FALLBACK_TEXT_QA[0][0], answer]],
                    step=total_steps)
    if test or toy_qa:
        logger.log({**(test or {}), **{f"test/{k}": v for k, v in (toy_qa or {}).items()}}, step=total_steps)
    summary = {
        "run_dir": str(run_dir), "adapter": str(run_dir / "adapter"),
        "best_adapter": str(run_dir / "best") if selected_on and (run_dir / "best").is_dir() else None,
        "selected_on": selected_on, "final_split": final["eval/split"], "val": last_eval if selected_on else None,
        "text_qa": toy_qa,
        "metrics": str(run_dir / "metrics.jsonl"), "wandb": logger.wandb_dir,
        "samples": str(run_dir / "samples") if draw_samples else None, "steps": total_steps,
        "resumed_from": start_step if resuming else None, "wall_seconds": round(time.time() - started, 1),
        "final": final, "best": {select_by: best, "selected_on": selected_on} if selected_on else None,
        "sample_answer": answer,
        "vq_images_encoded_this_run": cache.encoded, "preparation": str(preparation.directory),
        "launcher": f"{accelerator.distributed_type.value} x{world}",
        "deepspeed_zero_stage": int(ds_plugin.zero_stage) if ds_plugin is not None else None,
        "samples_per_epoch": plan.size,
    }
    if losses:
        tenth = max(1, len(losses) // 10)
        summary["loss_first_10pct"] = sum(losses[:tenth]) / tenth
        summary["loss_last_10pct"] = sum(losses[-tenth:]) / tenth
    logger.finish()
    return summary
