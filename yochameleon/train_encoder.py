"""Train a concept encoder across many concepts: `python -m yochameleon.train_encoder`.

The encoder turns 1-5 photos of a new subject into its concept rows with no training (docs/encoder.md).
    python -m yochameleon.train_encoder                                  # the toy world's identities
    python -m yochameleon.train_encoder data.root=/data/concepts model=anole-7b model.path=/data/Anole-7b
    python -m yochameleon.train_encoder trainer.resume=true              # continue a stopped run exactly
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from yochameleon.config import hydra_command, register_resolvers, write_run_record
from yochameleon.errors import YoChameleonError
from yochameleon.schema import EncoderTrainConfig

log = logging.getLogger("yochameleon.train_encoder")
register_resolvers()


def _print_summary(summary: dict) -> None:
    lines = ["", f"done: {summary['steps']} steps in {summary['wall_seconds']} s",
             f"  encoder       {summary['encoder']}", f"  chosen        {summary['chosen']}"
             + (f"  (validation concepts' mean AUROC {summary['best']['score']:.3f} at step {summary['best']['step']})"
                if summary.get("best") else "  (no validation concepts: the last step)"),
             f"  metrics       {summary['metrics']}"]
    for key, scores in summary["test"].items():
        qa = (f"  text QA {scores['text_qa']:.3f} / held-out wordings {scores['text_qa_heldout']:.3f}"
              if "text_qa_heldout" in scores else "")
        lines.append(f"  test concepts ({scores['concepts']}, {key.replace('_', ' ')}): AUROC {scores['auroc']:.3f}  "
                     f"weighted {scores['weighted']:.3f}{qa}  {scores['seconds']:.3f} s to add a concept")
    print("\n".join(lines))


@hydra_command("train_encoder", EncoderTrainConfig)
def main(cfg: DictConfig) -> dict | None:
    """Hydra entry point."""
    from yochameleon.training.encoder_recipe import train_encoder

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = train_encoder(cfg, run_dir)
    except YoChameleonError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if "rank" in summary:
        return summary
    write_run_record(run_dir, cfg, summary)
    _print_summary(summary)
    return summary


if __name__ == "__main__":
    main()
