"""The optimizer and its learning-rate schedule, from `trainer.*` (conf/trainer/default.yaml).

    trainer.optimizer     adamw: AdamW(lr=trainer.lr, weight_decay=trainer.weight_decay), torch's other defaults
    trainer.lr_schedule   constant: trainer.lr at every step (the default);
                          warmup_cosine: linear from 0 over trainer.warmup_steps, then a half cosine to 0 at
                          the run's last step (torchtune's `get_cosine_schedule_with_warmup`)

The schedule is a `LambdaLR` stepped once per optimizer step; its state is saved with the checkpoint and
restored on resume (training/checkpoint.py), so a resumed run takes the same learning rates as one that
never stopped.
"""

from __future__ import annotations

import functools
import math

import torch


def build_optimizer(parameters, tcfg, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """trainer.optimizer over `parameters` (the concept's rows), at trainer.lr x `lr_scale`."""
    kind = str(tcfg.optimizer)
    if kind == "adamw":
        return torch.optim.AdamW(parameters, lr=float(tcfg.lr) * float(lr_scale), weight_decay=float(tcfg.weight_decay))
    raise ValueError(f"trainer.optimizer={kind!r} is not one of: adamw")  # the schema refuses it first


def constant(step: int) -> float:
    """trainer.lr_schedule=constant: the factor on trainer.lr at every step."""
    return 1.0


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """trainer.lr_schedule=warmup_cosine: step/warmup while warming up, then 0.5 (1 + cos(pi progress))."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def schedule_fact(tcfg) -> str:
    """The schedule as a resume must share it (a checkpoint of another schedule is refused)."""
    kind = str(tcfg.lr_schedule)
    return kind if kind == "constant" else f"{kind} warmup_steps={int(tcfg.warmup_steps)}"


def build_lr_scheduler(optimizer, tcfg, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """trainer.lr_schedule over `total_steps` optimizer steps, on the optimizer as built (before accelerate wraps
    it: accelerate's wrapper would step it once per process)."""
    kind = str(tcfg.lr_schedule)
    if kind == "constant":
        factor = constant
    elif kind == "warmup_cosine":
        factor = functools.partial(warmup_cosine, warmup_steps=int(tcfg.warmup_steps), total_steps=int(total_steps))
    else:
        raise ValueError(f"trainer.lr_schedule={kind!r} is not one of: constant, warmup_cosine")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
