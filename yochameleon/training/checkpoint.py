"""Resumable training state, written atomically next to the run.

    checkpoint/adapter.safetensors + adapter_config.json   the trainable rows
    checkpoint/optimizer.pt                                 AdamW state (loaded with weights_only=True)
    checkpoint/optimizer_rank<r>.pt                         ... or, under DeepSpeed ZeRO-1/2/3, one shard per rank
    checkpoint/lr_scheduler.pt                              the learning-rate schedule's state (trainer.lr_schedule)
    checkpoint/state.json                                   step, W&B id, run facts (best/'s scores live in best/)
    checkpoint/rng.pt                                       torch RNG state

The data order is a pure function of (seed, step), so step + optimizer + rows
are enough to continue exactly where an interrupted run stopped. ZeRO-1/2/3 split
the optimizer state (ZeRO-3 the rows too) between ranks, so each rank's partition
(its AdamW state and fp32 master partition, DeepSpeed's own `state_dict`) is gathered
and saved, and a resume must use the same ZeRO stage and number of processes.
"""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path

import torch

from yochameleon.concept.adapter import check_backbone_match, load_adapter, read_adapter_config, save_adapter
from yochameleon.errors import YoChameleonError
from yochameleon.io import atomic_dir
from yochameleon.training.distributed import torch_world

CHECKPOINT_DIR = "checkpoint"
SHARD_FILE = "optimizer_rank{rank}.pt"
SCHEDULER_FILE = "lr_scheduler.pt"
# Run facts added after checkpoints were first written, with the value every older checkpoint was trained with.
_FACTS_BEFORE_RECORDED = {"optimizer": "adamw", "lr_schedule": "constant"}
# Kept out of a saved ZeRO shard: the loss scaler is an object (its numbers are kept instead), and
# the parameter-name maps only serve DeepSpeed's universal-checkpoint conversion, not a resume.
_LOSS_SCALER, _DROPPED = "loss_scaler", ("param_slice_mappings", "universal_checkpoint_info")


class ResumeError(YoChameleonError):
    """The checkpoint cannot continue this run (different backbone, tokens or recipe)."""


def zero_partitioned_optimizer(optimizer):
    """DeepSpeed's ZeRO-1/2/3 optimizer behind accelerate's wrapper (each rank then holds only its
    partition of the AdamW state), or None for an optimizer that is whole on every rank."""
    if "deepspeed" not in sys.modules:
        return None
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    inner = getattr(optimizer, "optimizer", optimizer)
    return inner if isinstance(inner, (DeepSpeedZeroOptimizer, DeepSpeedZeroOptimizer_Stage3)) else None


def _is_zero3(zero) -> bool:
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3

    return isinstance(zero, DeepSpeedZeroOptimizer_Stage3)


def optimizer_kind(optimizer) -> str:
    """How the optimizer state is laid out: "whole" (one process, DDP), "zero1/2" or "zero3" (per-rank shards)."""
    zero = zero_partitioned_optimizer(optimizer)
    return "whole" if zero is None else ("zero3" if _is_zero3(zero) else "zero1/2")


def _plain(value, where: str):
    """Tensors (on the CPU, detached), numbers, strings and containers of them: what weights_only loads."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save {where} of the ZeRO optimizer state ({type(value).__name__}) safely")


def optimizer_shards(optimizer) -> list[dict] | None:
    """Every rank's ZeRO-1/2/3 optimizer partition, in rank order, on every rank; None when the optimizer
    is whole on each rank (one process, DDP). Collective: all ranks call it."""
    zero = zero_partitioned_optimizer(optimizer)
    if zero is None:
        return None
    state = zero.state_dict()
    scaler = state.pop(_LOSS_SCALER, None)
    for key in _DROPPED:
        state.pop(key, None)
    mine = _plain(state, "state")
    mine[_LOSS_SCALER] = {k: v for k, v in vars(scaler).items() if isinstance(v, (bool, int, float))} if scaler else {}
    world, _ = torch_world()
    if world == 1:
        return [mine]
    import torch.distributed as dist

    everyone: list = [None] * world
    dist.all_gather_object(everyone, mine)  # in memory between our own processes; files stay weights_only
    return everyone


def save_checkpoint(run_dir: Path, tokens, optimizer, state: dict, fingerprint: dict, run_facts: dict,
                    shards: list[dict] | None = None, lr_scheduler=None) -> None:
    """Write the full training state into run_dir/checkpoint (replacing the previous one atomically).

    `shards` (from `optimizer_shards`, ZeRO-1/2/3) replace the one optimizer state of this rank; under ZeRO-3
    call it inside `Distributed.whole_rows` so the adapter holds the whole rows."""
    with atomic_dir(run_dir / CHECKPOINT_DIR) as staging:
        save_adapter(staging / "adapter", tokens, fingerprint, run_facts)
        if shards:
            for rank, shard in enumerate(shards):
                torch.save(shard, staging / SHARD_FILE.format(rank=rank))
        else:
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        if lr_scheduler is not None:
            torch.save(lr_scheduler.state_dict(), staging / SCHEDULER_FILE)
        torch.save({"torch": torch.get_rng_state()}, staging / "rng.pt")
        record = {**state, "optimizer_shards": len(shards) if shards else 0, "optimizer_kind": optimizer_kind(optimizer),
                  "run": run_facts}
        (staging / "state.json").write_text(json.dumps(record, indent=2) + "\n")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether run_dir holds a complete checkpoint."""
    return (run_dir / CHECKPOINT_DIR / "state.json").exists()


def read_state(run_dir: Path) -> dict:
    """The checkpoint's state.json."""
    return json.loads((run_dir / CHECKPOINT_DIR / "state.json").read_text())


def _check_optimizer_layout(ckpt: Path, saved_shards: int, zero, world: int, saved_kind: str | None = None) -> None:
    """Refuse, before anything is restored, an optimizer state this launcher cannot continue exactly."""
    kind = "whole" if zero is None else ("zero3" if _is_zero3(zero) else "zero1/2")
    saved_kind = saved_kind or ("zero1/2" if saved_shards else "whole")  # checkpoints written before ZeRO-3 resumes
    if saved_shards and zero is not None and saved_kind != kind:
        raise ResumeError(
            f"{ckpt} holds a DeepSpeed {saved_kind.upper()} optimizer, but this run uses {kind.upper()}. Resume it "
            "with the DeepSpeed config that wrote it, or start a new run with run_name=<new name>. Nothing was changed.")
    if saved_shards and zero is None:
        raise ResumeError(
            f"{ckpt} holds a DeepSpeed {saved_kind.upper()} optimizer split into {saved_shards} per-rank shards, but this run "
            f"keeps the optimizer whole (one process or DDP). Resume it with the same DeepSpeed config and "
            f"{saved_shards} processes (torchrun --nproc_per_node {saved_shards}), or start a new run with "
            "run_name=<new name>. Nothing was changed.")
    if zero is not None and not saved_shards:
        raise ResumeError(
            f"{ckpt} holds one whole optimizer state (written by one process or DDP), but this run splits the "
            f"optimizer between ranks with DeepSpeed {kind.upper()}. Resume it with the launcher that wrote it, or start "
            "a new run with run_name=<new name>. Nothing was changed.")
    if zero is not None and saved_shards != world:
        raise ResumeError(
            f"{ckpt} holds the DeepSpeed {kind.upper()} optimizer of {saved_shards} processes, but this run has {world}. "
            f"Resume it with {saved_shards} processes (torchrun --nproc_per_node {saved_shards}), or start a new "
            "run with run_name=<new name>. Nothing was changed.")


def check_run_facts(run_dir: Path, run_facts: dict) -> dict:
    """Refuse a resume whose settings differ from the checkpoint's (cheap: before any data is prepared)."""
    ckpt = run_dir / CHECKPOINT_DIR
    state = read_state(run_dir)
    saved = state.get("run", {})
    for key, value in run_facts.items():
        was = saved.get(key, _FACTS_BEFORE_RECORDED.get(key))
        if was != value:
            raise ResumeError(
                f"{ckpt} was written with {key}={was!r} but this run has {key}={value!r}. Resume with the "
                "same settings, or start a new run with run_name=<new name>.")
    return state


def load_checkpoint(run_dir: Path, backbone, tokens, optimizer, run_facts: dict, fingerprint: dict | None = None,
                    lr_scheduler=None) -> dict:
    """Restore rows, optimizer, learning-rate schedule and RNG into the live objects; returns the saved state.

    `fingerprint`: the backbone's, read while its weights were whole (ZeRO-3 partitions them at `prepare`)."""
    fingerprint = fingerprint or backbone.fingerprint()
    ckpt = run_dir / CHECKPOINT_DIR
    state = check_run_facts(run_dir, run_facts)
    zero = zero_partitioned_optimizer(optimizer)
    world, rank = torch_world()
    _check_optimizer_layout(ckpt, int(state.get("optimizer_shards", 0)), zero, world, state.get("optimizer_kind"))
    config = read_adapter_config(ckpt / "adapter")
    try:
        check_backbone_match(config, fingerprint, f"checkpoint {ckpt}")
    except YoChameleonError as err:
        raise ResumeError(f"{err} Resume with the original model=..., or start a new run with run_name=<new>.") from err
    restored = load_adapter(config, backbone, fingerprint=fingerprint)
    if restored.token_names != tokens.token_names:
        raise ResumeError(f"{ckpt} uses tokens {restored.token_names[0]}..(x{len(restored.token_names)}) but this run "
                          f"asks for {tokens.token_names[0]}..(x{len(tokens.token_names)}); resume with the same "
                          "recipe (k_g, k_u, first_token) or use run_name=<new name>.")
    zero3 = zero is not None and _is_zero3(zero)
    if not zero3:  # under ZeRO-3 the rows are partitioned: DeepSpeed restores them from the fp32 master partition
        with torch.no_grad():
            tokens.input_rows.copy_(restored.input_rows)
            tokens.output_rows.copy_(restored.output_rows)
    if zero is None:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    else:
        shards = [torch.load(ckpt / SHARD_FILE.format(rank=r), weights_only=True) for r in range(world)]
        scaler = shards[rank].get(_LOSS_SCALER, {})
        for shard in shards:
            shard.pop(_LOSS_SCALER, None)  # absent: DeepSpeed keeps its live scaler, whose numbers we restore
        # Each rank takes its own shard; the fp32 master partition is restored as saved (exact), and under
        # ZeRO-3 each rank's partition of the rows from it.
        if zero3:
            shards[rank][_LOSS_SCALER] = zero.loss_scaler  # stage 3 assigns it: keep the live object
            zero.load_state_dict(shards, load_optimizer_states=True)
        else:
            zero.load_state_dict(shards, load_optimizer_states=True, load_from_fp32_weights=True)
        vars(zero.loss_scaler).update(scaler)
    if lr_scheduler is not None and (ckpt / SCHEDULER_FILE).is_file():  # older checkpoints: constant, nothing to restore
        lr_scheduler.load_state_dict(torch.load(ckpt / SCHEDULER_FILE, weights_only=True))
    torch.set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True)["torch"])
    return state
