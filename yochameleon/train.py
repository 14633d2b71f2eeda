"""Train a concept adapter: `python -m yochameleon.train +concept=bo`.

Every option has a default that runs; see yochameleon/conf/ and the README. Examples:
    python -m yochameleon.train +concept=demo
    python -m yochameleon.train +concept=bo model=anole-7b model.path=/data/Anole-7b-v0.1-hf
    python -m yochameleon.train +concept=demo trainer.resume=true
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from yochameleon.config import CONFIG_DIR, hydra_command, register_resolvers, write_run_record
from yochameleon.errors import YoChameleonError
from yochameleon.schema import TrainConfig

log = logging.getLogger("yochameleon.train")
register_resolvers()


_SPLIT_WORDS = {"test": "test photos, scored once at the end", "val": "validation photos",
               "train": "TRAINING photos: no held-out split"}


def _recognition_line(label: str, metrics: dict, adapter: str) -> str:
    split = metrics.get("eval/split", "train")
    words = _SPLIT_WORDS.get(split, split) if metrics.get("eval/split_is_heldout") or split == "train" else (
        "held-out positives vs TRAINING negatives")
    words += f"; {adapter}/"
    return (f"  {label:<13} positive {metrics['eval/recognition/positive']:.3f}  negative "
            f"{metrics['eval/recognition/negative']:.3f}  weighted {metrics['eval/recognition/weighted']:.3f}"
            f"  AUROC {metrics.get('eval/recognition/auroc', float('nan')):.3f}  ({words})")


def _print_summary(summary: dict) -> None:
    final = summary["final"]
    best = summary.get("best") or {}
    chosen = (f"{summary['best_adapter']}  (chosen on the validation split: "
              + "; ".join(f"{side} by {kept['metric']} {kept['score']:.3f} at step {kept['step']}"
                          for side, kept in best.items() if side != "selected_on") + ")"
              if summary.get("best_adapter") else
              "none: no validation split (concept.val_photos / val_negatives), so nothing was chosen; "
              "use the adapter above (the last step)")
    lines = [
        "",
        f"done: {summary['steps']} steps in {summary['wall_seconds']} s",
        f"  adapter       {summary['adapter']}",
        f"  best adapter  {chosen}",
        f"  metrics       {summary['metrics']}",
        f"  W&B run       {summary['wandb'] or 'off (logger=none)'}",
        f"  image samples {summary['samples'] or 'off'}",
        f"  loss          {summary.get('loss_first_10pct', float('nan')):.4f} (first 10% of steps) -> "
        f"{summary.get('loss_last_10pct', float('nan')):.4f} (last 10%)",
    ]
    scored = Path(summary["scored_adapter"]).name  # best/ when one was chosen: what the lines below score
    if summary.get("val"):
        lines.append(_recognition_line("validation", summary["val"], scored))
    lines.append(_recognition_line("recognition", final, scored))
    if "eval/generation/nll" in final:
        lines.append(f"  generation    NLL {final['eval/generation/nll']:.3f} nats per image token of the "
                     f"{_SPLIT_WORDS.get(final['eval/split'], final['eval/split'])} under \"A photo of <name>.\" "
                     f"(uniform {final['eval/generation/nll_uniform']:.3f}; {scored}/)")
    if summary.get("text_qa"):
        qa = summary["text_qa"]
        lines.append(f"  text QA       {qa['text_qa']:.3f} (training wordings)  {qa['text_qa_heldout']:.3f} "
                     f"(held-out wordings; {scored}/)")
    lines.append(f"  sample answer {summary['sample_answer']!r}")
    if summary.get("contact_sheet"):
        lines.append(_generation_line(summary))
    print("\n".join(lines))


def _generation_line(summary: dict) -> str:
    """The final samples: the judge's count where one ran (toy concepts), and the contact sheet."""
    drawn, judged = len(summary["final_samples"]), summary.get("generation")
    if not judged:
        return f"  generation    {drawn} final samples  contact sheet: {summary['contact_sheet']}"
    n = judged["judged"]
    attributes = [k for k in judged if k not in ("judged", "right", "all_right")]
    return (f"  generation    {judged['right']} of {n} final samples judged right ({', '.join(attributes)} all right; "
            + ", ".join(f"{a} {round(judged[a] * n)}/{n}" for a in attributes)
            + f")  contact sheet: {summary['contact_sheet']}")


@hydra_command("train", TrainConfig)
def main(cfg: DictConfig) -> dict | None:
    """Hydra entry point."""
    if cfg.get("concept") is None:
        print("error: no concept given. Run `python -m yochameleon.train +concept=<name>` with a file from "
              f"{CONFIG_DIR / 'concept'} (for example +concept=demo) or your own conf/concept/<name>.yaml in the "
              "working directory (or under $YOCHAMELEON_CONFIG_PATH).", file=sys.stderr)
        sys.exit(2)
    from yochameleon.training.recipe import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    from yochameleon.training.interrupt import TrainingInterrupted, resume_command
    from yochameleon.training.recipe import RunFinished

    try:
        summary = train(cfg, run_dir)
    except RunFinished as done:  # not an error: the run is complete, and stays as it is
        print(done)
        return None
    except TrainingInterrupted as stop:  # Ctrl-C / SIGTERM: a checkpoint at the step, one line, how to resume
        if stop.run_dir and int(os.environ.get("RANK", "0")) == 0:
            print(f"interrupted at step {stop.step} of {stop.total}, checkpoint saved; resume with: "
                  f"{resume_command(run_dir, list(HydraConfig.get().overrides.task), stop.world)}", flush=True)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:  # outside the steps (loading, preparing, final scoring): nothing new to resume from
        print(f"interrupted outside the training steps; the last checkpoint (if any) in {run_dir} is unchanged",
              file=sys.stderr)
        sys.exit(130)
    except YoChameleonError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if "rank" in summary:  # a non-main process of a distributed run: the main one reports
        return summary
    write_run_record(run_dir, cfg, summary)
    _print_summary(summary)
    return summary


if __name__ == "__main__":
    main()
