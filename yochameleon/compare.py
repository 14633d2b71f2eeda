"""Runs side by side: training runs, evaluations, or both, in one markdown table each.

    python -m yochameleon.compare outputs/corgi                          # training runs under a folder
    python -m yochameleon.compare outputs/eval/corgi/* [--out comparison] [--wandb]   # evaluations

A training run is a folder with summary.json and metrics.jsonl (`yochameleon.train`): one row
with its model and recipe (from its config.yaml), steps and wall time, the validation split's and
the test split's recognition AUROC and weighted accuracy, text QA, the judged final samples (toy
concepts) and the mean training loss over the last 10% of steps; the table is printed (the same
numbers are in each run's W&B run, grouped by concept, tagged by recipe). An evaluation is a folder with
metrics.json (`evaluation.run`): one row per method; the table and a chart are written to
--out, beside the paper's published rows for runs on the Yo'LLaVA data, and with --wandb also
logged as a W&B table (offline unless `wandb login` was run and WANDB_MODE=online).
`python -m evaluation.compare` is this same command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from yochameleon.metrics.table import (bar_chart, evaluation_rows, evaluation_table, log_wandb_table, markdown_table,
                                       published_table)


def find_runs(paths: list[Path]) -> list[Path]:
    """Training run folders (with summary.json): the given folders themselves, or directly under them."""
    found = []
    for path in paths:
        if (path / "summary.json").is_file():
            found.append(path)
        else:
            found += sorted(p.parent for p in path.glob("*/summary.json"))
    return found


def find_metrics(paths: list[Path]) -> list[Path]:
    """Evaluation metrics.json files in the given directories (or directly under them)."""
    found = []
    for path in paths:
        if (path / "metrics.json").is_file():
            found.append(path / "metrics.json")
        elif path.is_dir():
            found += sorted(path.glob("*/metrics.json")) + sorted(path.glob("*/*/metrics.json"))
    return found


def _run_config(run_dir: Path) -> dict:
    """The run's resolved config (config.yaml, written by yochameleon.train), or {} when it is not there."""
    try:
        import yaml

        return yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, ValueError, ImportError):
        return {}


def run_row(run_dir: Path) -> dict:
    """One training run's figures: what it ran (model, recipe, steps, time) and how it scored, split by split."""
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    losses = [r["train/loss"] for r in records if isinstance(r.get("train/loss"), (int, float))]
    losses = losses[-max(1, len(losses) // 10):]
    config = _run_config(run_dir)
    final, val = summary.get("final") or {}, summary.get("val") or {}
    on_test = summary.get("final_split", final.get("eval/split", "test")) == "test"
    qa, judged = summary.get("text_qa") or {}, summary.get("generation") or {}
    return {
        "run": run_dir.name, "model": (config.get("model") or {}).get("name"),
        "recipe": (config.get("recipe") or {}).get("name"), "steps": summary.get("steps"),
        "seconds": summary.get("wall_seconds"),
        "val AUROC": val.get("eval/recognition/auroc"), "val weighted": val.get("eval/recognition/weighted"),
        "test AUROC": final.get("eval/recognition/auroc") if on_test else None,
        "test weighted": final.get("eval/recognition/weighted") if on_test else None,
        "text QA": qa.get("text_qa"), "text QA held-out": qa.get("text_qa_heldout"),
        "generation judged": f"{judged['right']}/{judged['judged']}" if judged.get("judged") else None,
        "loss (last 10%)": sum(losses) / len(losses) if losses else None,
    }


def compare_evaluations(files: list[Path], out: Path, wandb: bool) -> int:
    """The evaluations' table and chart into `out` (and W&B); 1 when none holds a method's results."""
    rows, yollava_rows = [], []
    for file in files:
        try:
            results = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            print(f"warning: skipping {file}: not valid JSON ({err})", file=sys.stderr)
            continue
        rows += evaluation_rows(results, label=file.parent.name)
        if (results.get("eval_set") or {}).get("kind") == "yollava":
            yollava_rows += evaluation_rows(results, label=file.parent.name)
    if not rows:
        print("error: none of the metrics files holds a method's results", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    table = evaluation_table(rows)
    if yollava_rows:  # runs on the Yo'LLaVA data: their mean per method beside the paper's reported rows
        table += "\n\nAgainst the published table (Yo'LLaVA data):\n\n" + published_table(yollava_rows, "these runs")
    (out / "comparison.md").write_text(table + "\n")
    chart = bar_chart(rows, out / "comparison.png", "comparison")
    print(table)
    print(f"\nwrote {out / 'comparison.md'}" + (f" and {chart}" if chart else ""))
    if wandb:
        import os

        from omegaconf import OmegaConf

        cfg = OmegaConf.create({"name": "wandb", "project": "yochameleon",
                                "mode": os.environ.get("WANDB_MODE", "offline")})
        print(f"W&B: {log_wandb_table(rows, cfg, out, 'comparison', key='comparison')}")
    return 0


def main(argv=None) -> int:
    """Entry point (`yochameleon-compare`, `yochameleon-eval-compare`)."""
    parser = argparse.ArgumentParser(prog="python -m yochameleon.compare",
                                     description="Compare training runs (summary.json) and evaluations "
                                                 "(metrics.json) side by side.")
    parser.add_argument("runs", nargs="+", type=Path, help="run or evaluation folders, or folders holding several")
    parser.add_argument("--out", type=Path, default=Path("comparison"),
                        help="where the evaluations' comparison.md and comparison.png go")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the evaluations' table to W&B (offline by default)")
    args = parser.parse_args(argv)
    runs, files = find_runs(args.runs), find_metrics(args.runs)
    if not runs and not files:
        print(f"error: nothing to compare in {', '.join(map(str, args.runs))}: no finished training run "
              "(summary.json) and no evaluation (metrics.json); train with python -m yochameleon.train, or "
              "run python -m evaluation.run first", file=sys.stderr)
        return 1
    if runs:
        print(markdown_table([run_row(r) for r in runs]))
    if files:
        if runs:
            print()
        return compare_evaluations(files, args.out, args.wandb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
