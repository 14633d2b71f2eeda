"""The optimizer and its learning-rate schedule, from `trainer.*` (conf/trainer/default.yaml).

    trainer.optimizer     adamw: AdamW(lr=trainer.lr, weight_decay=trainer.weight_decay), torch's other defaults
    trainer.lr_schedule   constant: trainer.lr at every step (the default);
                          warmup_cosine: linear from 0 over trainer.warmup_steps, then a half cosine to 0 at
                          the run's last step (torchtune's `get_cosine_schedule_with_warmup`)

The schedule is a `LambdaLR` stepped once per optimizer step; its state is saved with the checkpoint and
restored on resume (training/checkpoint.py), so a resumed run takes the same learning rates as one that
never stopped.

`recipe.generation_lr_scale` gives the generation tokens' rows a learning rate of their own. AdamW's step does
not change when a gradient is scaled, so the rows cannot get one through their gradient, and splitting them
into parameter groups would split the adapter's two matrices; instead `scaled_rows_step` blends those rows'
update after the step: `old + scale * (new - old)`, which is exactly AdamW at `lr x scale` for them (weight
decay included, as it is part of the same update).
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


def scaled_rows_step(optimizer, parameters: list[torch.Tensor], rows: list[int], scale: float) -> None:
    """`optimizer.step()`, with the update of `rows` (row indices into every tensor of `parameters`) scaled by
    `scale`; a plain step when `scale` is 1 or there are no such rows."""
    if scale == 1.0 or not rows:
        optimizer.step()
        return
    index = torch.tensor(rows, dtype=torch.long, device=parameters[0].device)
    before = [p.detach().index_select(0, index).clone() for p in parameters]
    optimizer.step()
    with torch.no_grad():
        for p, old in zip(parameters, before):
            new = p.index_select(0, index)
            p.index_copy_(0, index, old + scale * (new - old))
