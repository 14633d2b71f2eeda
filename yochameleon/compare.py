"""Side-by-side table of the runs under a directory (e.g. after a multirun over recipes).

    python -m yochameleon.compare outputs/corgi

Reads each run's summary.json and metrics.jsonl; prints a markdown table of the
final held-out recognition accuracy (forced and emitted self-prompt) and the mean
per-task training loss over the last 10% of steps. The same numbers are in each
run's W&B run (grouped by concept, tagged by recipe).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

TASKS = ("recognition", "vqa", "text_qa", "generation")


def run_row(run_dir: Path) -> dict:
    """One run's figures."""
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    tail = records[-max(1, len(records) // 10):]
    losses = defaultdict(list)
    for record in tail:
        for task in TASKS:
            if f"train/loss/{task}" in record:
                losses[task].append(record[f"train/loss/{task}"])
    final = summary["final"]
    return {
        "run": run_dir.name, "steps": summary["steps"], "seconds": summary["wall_seconds"],
        "recognition": final.get("eval/recognition/weighted"),
        "recognition (emitted)": final.get("eval/recognition_emitted/weighted"),
        **{f"loss {t}": (sum(v) / len(v) if v else None) for t, v in ((t, losses.get(t)) for t in TASKS)},
    }


def table(rows: list[dict]) -> str:
    """Markdown table; missing values shown as '-'."""
    columns = list(rows[0])
    cell = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Entry point."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[0])
    runs = sorted(p.parent for p in root.glob("*/summary.json"))
    if not runs:
        print(f"error: no finished runs (summary.json) under {root}", file=sys.stderr)
        return 1
    print(table([run_row(r) for r in runs]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
