"""One place for what differs between one process, DDP and DeepSpeed ZeRO: world size, rank,
the ZeRO-3 rules, and each process's share of the global batch.

The recipe asks this helper instead of testing the launcher itself, so a rule such as
"under ZeRO-3 every rank runs every forward" is written once.
"""

from __future__ import annotations

import contextlib

import torch

from yochameleon.errors import YoChameleonError


def torch_world() -> tuple[int, int]:
    """(world size, rank) of torch.distributed, or (1, 0) when it is not up."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


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


class Distributed:
    """The process layout of one run, read once from accelerate (and torch.distributed when it is up:
    accelerate reports a single process for DeepSpeed on CPU although DeepSpeed runs on every rank)."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.plugin = accelerator.state.deepspeed_plugin
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            self.world, self.rank = dist.get_world_size(), dist.get_rank()
        else:
            self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.zero_stage = int(self.plugin.zero_stage) if self.plugin is not None else None
        # ZeRO-3 partitions the parameters: every module call gathers weights from all ranks, so
        # every rank must make the same calls, evaluation and sampling included.
        self.zero3 = self.zero_stage == 3

    @property
    def main(self) -> bool:
        """Whether this process logs and writes files."""
        return self.rank == 0

    @property
    def evaluates(self) -> bool:
        """Whether this process runs the evaluation forwards (all of them under ZeRO-3; only the main one logs)."""
        return self.main or self.zero3

    @property
    def launcher(self) -> str:
        """For the summary: `MULTI_GPU x2`, `DEEPSPEED x2`, `NO x1` ..."""
        return f"{self.accelerator.distributed_type.value} x{self.world}"

    def check(self, batch_size: int, resuming: bool, run_dir) -> None:
        """Refuse what this layout cannot do, before any model is loaded."""
        if batch_size < self.world:
            raise YoChameleonError(f"trainer.batch_size={batch_size} is the global batch and must be at least the "
                                   f"number of processes ({self.world})")

    @contextlib.contextmanager
    def main_process_first(self):
        """Rank 0 runs the block first (it fills the caches); the others follow and read them."""
        if not self.main:
            barrier()
        yield
        if self.main:
            barrier()

    @contextlib.contextmanager
    def whole_weights(self):
        """Under ZeRO-3, hide the DeepSpeed config from transformers while the block runs, so
        `from_pretrained` loads whole weights instead of partitioning them in `deepspeed.zero.Init`
        (VQ encoding and token set-up read them before the engine partitions them at `prepare`)."""
        if not self.zero3:
            yield
            return
        from transformers.integrations import unset_hf_deepspeed_config

        unset_hf_deepspeed_config()
        try:
            yield
        finally:
            self.plugin.set_deepspeed_weakref()

    def whole_rows(self, tokens, keep_changes: bool = False):
        """A context with the concept's rows whole on this rank (all ranks must enter it under ZeRO-3);
        `keep_changes`: what rank 0 writes into them is kept (partitioned again to every rank) at its end."""
        if not self.zero3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(tokens.parameters()), modifier_rank=0 if keep_changes else None)

    def length_group_ratio(self, requested: float) -> float:
        """Length groups make a rank's module calls depend on its samples: off under ZeRO-3."""
        return 0.0 if self.zero3 else requested

    def set_micro_batch(self, batch_size: int) -> None:
        """No DataLoader here, so DeepSpeed's "auto" micro-batch size is ours to fill."""
        if self.plugin is not None:
            self.plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = max(1, batch_size // self.world)

    def share(self, global_specs: list) -> tuple[list, float]:
        """`rank_share` for this process."""
        return rank_share(global_specs, self.rank, self.world)

    def agree(self, value):
        """Rank 0's `value` on every rank: a decision every rank must act on alike (under ZeRO-3 each rank
        enters the gathered-parameters block only if all do; deciding on each rank's own floats can hang)."""
        import torch.distributed as dist

        if torch_world()[0] == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, tasks: list[str], losses: torch.Tensor) -> list[tuple[str, float]]:
        """(task, loss) for every sample of the global batch, gathered from all processes."""
        import torch.distributed as dist

        mine = list(zip(tasks, losses.tolist()))
        if torch_world()[0] == 1:
            return mine
        everyone: list = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
        return [pair for part in everyone for pair in part]
