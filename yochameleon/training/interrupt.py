"""Ctrl-C and SIGTERM during training: finish the step, write a checkpoint, say how to resume.

While the steps run, SIGINT and SIGTERM only set a flag (a second one of either stops at once, as
Python does by default). After each step every process learns whether any of them was signalled
(one all-reduce of a flag, so all stop after the same step: the checkpoint is collective under
ZeRO), the recipe writes its checkpoint atomically and raises `TrainingInterrupted`; the command
line prints one line with the step and the exact command that resumes it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import threading
from pathlib import Path

import torch

from yochameleon.errors import YoChameleonError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Environment the resumed run reads as the interrupted one did (caches, user configs, data, launcher).
CARRIED_ENV = ("YOCHAMELEON_CACHE", "YOCHAMELEON_CONFIG_PATH", "YOLLAVA_DATA", "DS_ACCELERATOR",
               "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_CONFIG_FILE")


class TrainingInterrupted(YoChameleonError):
    """The run stopped on a signal after step `step` of `total`, with a checkpoint there."""

    def __init__(self, run_dir: Path, step: int, total: int, signum: int, world: int):
        self.run_dir, self.step, self.total, self.signum, self.world = Path(run_dir), step, total, signum, world
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step} of {total}; checkpoint "
                         f"written to {self.run_dir / 'checkpoint'}; continue with trainer.resume=true")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopRequests:
    """A context in which SIGINT / SIGTERM are recorded instead of raised (main thread only)."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _record(self, signum, frame) -> None:
        if self.signum is not None:  # the second one: stop now, as without this context
            self.__exit__()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            sys.exit(128 + signum)
        self.signum = signum

    def agreed(self, device) -> int | None:
        """The signal to stop on when any process received one (collective: every process calls it each step)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.signum
        flag = torch.tensor([self.signum or 0], dtype=torch.long, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None


def resume_command(run_dir: Path, overrides: list[str], world: int) -> str:
    """The command line that continues `run_dir`: the launcher, the run's own overrides with the run folder
    pinned (absolute, so it works from any directory) and trainer.resume=true."""
    run_dir = Path(run_dir).resolve()
    dropped = ("trainer.resume=", "run_name=", "output_root=", "+trainer.resume=")
    kept = [o for o in overrides if not o.lstrip("+~").startswith(dropped)]
    args = [*kept, f"output_root={run_dir.parent.parent}", f"run_name={run_dir.name}", "trainer.resume=true"]
    python = "python" if shutil.which("python") and Path(shutil.which("python")).resolve() == Path(
        sys.executable).resolve() else sys.executable
    launcher = [python, "-m", "yochameleon.train"] if world == 1 else [
        "torchrun", "--nproc_per_node", str(world), "-m", "yochameleon.train"]
    env = [f"{k}={os.environ[k]}" for k in CARRIED_ENV if os.environ.get(k)]
    return shlex.join([*env, *launcher, *args]) if env else shlex.join([*launcher, *args])
