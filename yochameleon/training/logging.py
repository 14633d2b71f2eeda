"""Run logging: metrics.jsonl always; W&B (offline into the run directory by default) when configured."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)


class NullLogger:
    """What non-main ranks of a distributed run log: nothing."""

    wandb_id = wandb_dir = None

    def log(self, *args, **kwargs) -> None:
        pass

    log_text = log_image = finish = log


class RunLogger:
    """Writes every metric to run_dir/metrics.jsonl and, unless logger.name=none, to W&B."""

    def __init__(self, logger_cfg, run_dir: Path, run_config: dict, resume_id: str | None = None,
                 resume_step: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None:
            self._truncate_after(resume_step)
        self.wandb_run = None
        if logger_cfg.name == "wandb":
            import wandb

            mode = logger_cfg.mode
            if mode == "online" and not (os.environ.get("WANDB_API_KEY") or Path.home().joinpath(".netrc").exists()):
                log.warning("logger.mode=online but no W&B credentials found (run `wandb login`); logging offline")
                mode = "offline"
            self.wandb_run = wandb.init(
                project=logger_cfg.project, entity=logger_cfg.entity, group=logger_cfg.group,
                tags=[str(t) for t in logger_cfg.tags or []], name=run_config.get("run_name"),
                dir=str(run_dir), mode=mode, config=run_config, id=resume_id, resume="allow" if resume_id else None,
                settings=wandb.Settings(console="off", silent=True, disable_git=True),
            )

    @property
    def wandb_id(self) -> str | None:
        return self.wandb_run.id if self.wandb_run is not None else None

    @property
    def wandb_dir(self) -> str | None:
        return str(Path(self.wandb_run.dir).parent) if self.wandb_run is not None else None

    def _truncate_after(self, step: int) -> None:
        """Drop lines logged after the checkpoint we resume from, so no step appears twice."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, metrics: dict, step: int) -> None:
        """Append one record (NaN becomes null) and forward it to W&B."""
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **clean}) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in clean.items() if v is not None}, step=step)

    def log_text(self, key: str, columns: list[str], rows: list[list], step: int) -> None:
        """A small table (e.g. sample answers) for W&B."""
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Table(columns=columns, data=rows)}, step=step)

    def log_image(self, key: str, image, caption: str, step: int) -> None:
        """A generated sample for W&B (the PNG itself is saved by the caller)."""
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Image(image, caption=caption)}, step=step)

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
