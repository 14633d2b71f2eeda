"""One table and one chart across evaluation runs, offline (no W&B account needed).

    python -m evaluation.compare outputs/eval/corgi/* [--out comparison] [--wandb]

Each argument is an evaluation directory (with metrics.json) or a folder holding several;
rows are (run, method). With --wandb the same table is logged as a W&B table
(offline unless `wandb login` was run and WANDB_MODE=online).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evaluation.report import bar_chart, log_wandb_table, markdown_table, published_table, rows_of


def find_metrics(paths: list[Path]) -> list[Path]:
    """metrics.json files in the given directories (or directly under them)."""
    found = []
    for path in paths:
        if (path / "metrics.json").is_file():
            found.append(path / "metrics.json")
        elif path.is_dir():
            found += sorted(path.glob("*/metrics.json")) + sorted(path.glob("*/*/metrics.json"))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Compare evaluation runs.")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("comparison"))
    parser.add_argument("--wandb", action="store_true", help="also log the table to W&B (offline by default)")
    args = parser.parse_args(argv)
    files = find_metrics(args.runs)
    if not files:
        print(f"error: no metrics.json in {', '.join(map(str, args.runs))}; run python -m evaluation.run first",
              file=sys.stderr)
        return 1
    rows, yollava_rows = [], []
    for file in files:
        try:
            results = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            print(f"warning: skipping {file}: not valid JSON ({err})", file=sys.stderr)
            continue
        rows += rows_of(results, label=file.parent.name)
        if (results.get("eval_set") or {}).get("kind") == "yollava":
            yollava_rows += rows_of(results, label=file.parent.name)
    if not rows:
        print("error: none of the metrics files holds a method's results", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    if yollava_rows:  # runs on the Yo'LLaVA data: their mean per method beside the paper's reported rows
        table += "\n\nAgainst the published table (Yo'LLaVA data):\n\n" + published_table(yollava_rows, "these runs")
    (args.out / "comparison.md").write_text(table + "\n")
    chart = bar_chart(rows, args.out / "comparison.png", "comparison")
    print(table)
    print(f"\nwrote {args.out / 'comparison.md'}" + (f" and {chart}" if chart else ""))
    if args.wandb:
        import os

        from omegaconf import OmegaConf

        cfg = OmegaConf.create({"name": "wandb", "project": "yochameleon",
                                "mode": os.environ.get("WANDB_MODE", "offline")})
        print(f"W&B: {log_wandb_table(rows, cfg, args.out, 'comparison', key='comparison')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
