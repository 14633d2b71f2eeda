"""Resumable training state, written atomically next to the run.

    checkpoint/adapter.safetensors + adapter_config.json   the trainable rows
    checkpoint/optimizer.pt                                 AdamW state (loaded with weights_only=True)
    checkpoint/optimizer_rank<r>.pt                         ... or, under DeepSpeed ZeRO-1/2, one shard per rank
    checkpoint/state.json                                   step, best metric, W&B id, run facts
    checkpoint/rng.pt                                       torch RNG state

The data order is a pure function of (seed, step), so step + optimizer + rows
are enough to continue exactly where an interrupted run stopped. ZeRO-1/2 split
the optimizer state between ranks, so each rank's partition is gathered and
saved, and a resume must use the same number of processes.
"""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path

import torch

from yochameleon.concept.adapter import load_adapter, read_adapter_config, save_adapter
from yochameleon.errors import YoChameleonError
from yochameleon.io import atomic_dir
from yochameleon.training.distributed import torch_world

CHECKPOINT_DIR = "checkpoint"
SHARD_FILE = "optimizer_rank{rank}.pt"
# Kept out of a saved ZeRO shard: the loss scaler is an object (its numbers are kept instead), and
# the parameter-name maps only serve DeepSpeed's universal-checkpoint conversion, not a resume.
_LOSS_SCALER, _DROPPED = "loss_scaler", ("param_slice_mappings", "universal_checkpoint_info")


class ResumeError(YoChameleonError):
    """The checkpoint cannot continue this run (different backbone, tokens or recipe)."""


def zero_partitioned_optimizer(optimizer):
    """DeepSpeed's ZeRO-1/2 optimizer behind accelerate's wrapper (each rank then holds only its
    partition of the AdamW state), or None for an optimizer that is whole on every rank."""
    if "deepspeed" not in sys.modules:
        return None
    from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer

    inner = getattr(optimizer, "optimizer", optimizer)
    return inner if isinstance(inner, DeepSpeedZeroOptimizer) else None


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
    """Every rank's ZeRO-1/2 optimizer partition, in rank order, on every rank; None when the optimizer
    is whole on each rank (one process, DDP; ZeRO-3 resumes are refused). Collective: all ranks call it."""
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
                    shards: list[dict] | None = None) -> None:
    """Write the full training state into run_dir/checkpoint (replacing the previous one atomically).

    `shards` (from `optimizer_shards`, ZeRO-1/2) replace the one optimizer state of this rank."""
    with atomic_dir(run_dir / CHECKPOINT_DIR) as staging:
        save_adapter(staging / "adapter", tokens, fingerprint, run_facts)
        if shards:
            for rank, shard in enumerate(shards):
                torch.save(shard, staging / SHARD_FILE.format(rank=rank))
        else:
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save({"torch": torch.get_rng_state()}, staging / "rng.pt")
        record = {**state, "optimizer_shards": len(shards) if shards else 0, "run": run_facts}
        (staging / "state.json").write_text(json.dumps(record, indent=2) + "\n")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether run_dir holds a complete checkpoint."""
    return (run_dir / CHECKPOINT_DIR / "state.json").exists()


def read_state(run_dir: Path) -> dict:
    """The checkpoint's state.json."""
    return json.loads((run_dir / CHECKPOINT_DIR / "state.json").read_text())


def _check_optimizer_layout(ckpt: Path, saved_shards: int, zero, world: int) -> None:
    """Refuse, before anything is restored, an optimizer state this launcher cannot continue exactly."""
    if saved_shards and zero is None:
        raise ResumeError(
            f"{ckpt} holds a DeepSpeed ZeRO-1/2 optimizer split into {saved_shards} per-rank shards, but this run "
            f"keeps the optimizer whole (one process or DDP). Resume it with the same DeepSpeed config and "
            f"{saved_shards} processes (torchrun --nproc_per_node {saved_shards}), or start a new run with "
            "run_name=<new name>. Nothing was changed.")
    if zero is not None and not saved_shards:
        raise ResumeError(
            f"{ckpt} holds one whole optimizer state (written by one process or DDP), but this run splits the "
            "optimizer between ranks with DeepSpeed ZeRO-1/2. Resume it with the launcher that wrote it, or start "
            "a new run with run_name=<new name>. Nothing was changed.")
    if zero is not None and saved_shards != world:
        raise ResumeError(
            f"{ckpt} holds the DeepSpeed ZeRO-1/2 optimizer of {saved_shards} processes, but this run has {world}. "
            f"Resume it with {saved_shards} processes (torchrun --nproc_per_node {saved_shards}), or start a new "
            "run with run_name=<new name>. Nothing was changed.")


def check_run_facts(run_dir: Path, run_facts: dict) -> dict:
    """Refuse a resume whose settings differ from the checkpoint's (cheap: before any data is prepared)."""
    ckpt = run_dir / CHECKPOINT_DIR
    state = read_state(run_dir)
    saved = state.get("run", {})
    for key, value in run_facts.items():
        if saved.get(key) != value:
            raise ResumeError(
                f"{ckpt} was written with {key}={saved.get(key)!r} but this run has {key}={value!r}. Resume with the "
                "same settings, or start a new run with run_name=<new name>.")
    return state


def load_checkpoint(run_dir: Path, backbone, tokens, optimizer, run_facts: dict) -> dict:
    """Restore rows, optimizer and RNG into the live objects; returns the saved state."""
    ckpt = run_dir / CHECKPOINT_DIR
    state = check_run_facts(run_dir, run_facts)
    zero = zero_partitioned_optimizer(optimizer)
    world, rank = torch_world()
    _check_optimizer_layout(ckpt, int(state.get("optimizer_shards", 0)), zero, world)
    config = read_adapter_config(ckpt / "adapter")
    from yochameleon.concept.adapter import check_backbone_match

    try:
        check_backbone_match(config, backbone.fingerprint(), f"checkpoint {ckpt}")
    except YoChameleonError as err:
        raise ResumeError(f"{err} Resume with the original model=..., or start a new run with run_name=<new>.") from err
    restored = load_adapter(ckpt / "adapter", backbone)
    if restored.token_names != tokens.token_names:
        raise ResumeError(f"{ckpt} uses tokens {restored.token_names[0]}..(x{len(restored.token_names)}) but this run "
                          f"asks for {tokens.token_names[0]}..(x{len(tokens.token_names)}); resume with the same "
                          "recipe (k_g, k_u, first_token) or use run_name=<new name>.")
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
        # Each rank takes its own shard; the fp32 master partition is restored as saved (exact).
        zero.load_state_dict(shards, load_optimizer_states=True, load_from_fp32_weights=True)
        vars(zero.loss_scaler).update(scaler)
    torch.set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True)["torch"])
    return state
