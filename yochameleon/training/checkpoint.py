"""Resumable training state, written atomically next to the run.

    checkpoint/adapter.safetensors + adapter_config.json   the trainable rows
    checkpoint/optimizer.pt                                 AdamW state (loaded with weights_only=True)
    checkpoint/state.json                                   step, best metric, W&B id, run facts
    checkpoint/rng.pt                                       torch RNG state

The data order is a pure function of (seed, step), so step + optimizer + rows
are enough to continue exactly where an interrupted run stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from yochameleon.concept.adapter import load_adapter, read_adapter_config, save_adapter
from yochameleon.errors import YoChameleonError
from yochameleon.io import atomic_dir

CHECKPOINT_DIR = "checkpoint"


class ResumeError(YoChameleonError):
    """The checkpoint cannot continue this run (different backbone, tokens or recipe)."""


def save_checkpoint(run_dir: Path, tokens, optimizer, state: dict, fingerprint: dict, run_facts: dict) -> None:
    """Write the full training state into run_dir/checkpoint (replacing the previous one atomically)."""
    with atomic_dir(run_dir / CHECKPOINT_DIR) as staging:
        save_adapter(staging / "adapter", tokens, fingerprint, run_facts)
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save({"torch": torch.get_rng_state()}, staging / "rng.pt")
        (staging / "state.json").write_text(json.dumps({**state, "run": run_facts}, indent=2) + "\n")


def has_checkpoint(run_dir: Path) -> bool:
    """Whether run_dir holds a complete checkpoint."""
    return (run_dir / CHECKPOINT_DIR / "state.json").exists()


def read_state(run_dir: Path) -> dict:
    """The checkpoint's state.json."""
    return json.loads((run_dir / CHECKPOINT_DIR / "state.json").read_text())


def load_checkpoint(run_dir: Path, backbone, tokens, optimizer, run_facts: dict) -> dict:
    """Restore rows, optimizer and RNG into the live objects; returns the saved state."""
    ckpt = run_dir / CHECKPOINT_DIR
    state = read_state(run_dir)
    saved = state.get("run", {})
    for key, value in run_facts.items():
        if saved.get(key) != value:
            raise ResumeError(
                f"{ckpt} was written with {key}={saved.get(key)!r} but this run has {key}={value!r}. Resume with the "
                "same settings, or start a new run with run_name=<new name>.")
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
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    torch.set_rng_state(torch.load(ckpt / "rng.pt", weights_only=True)["torch"])
    return state
