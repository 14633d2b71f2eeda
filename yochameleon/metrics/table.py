"""The run table: runs side by side as markdown (and a bar chart, and a W&B table).

Rows are dicts of column -> value. Training runs give one row each (`yochameleon.compare`);
an evaluation (`evaluation.run`'s metrics.json) gives one row per method (`evaluation_rows`).
The published rows are the Yo'Chameleon paper's figures, to set measured means beside.
"""

from __future__ import annotations

import math
from pathlib import Path

# (column title, path into a method's metrics in an evaluation's metrics.json)
COLUMNS = (
    ("tokens", ("tokens",)),
    ("recognition", ("recognition", "weighted")),
    ("rec. positive", ("recognition", "positive")),
    ("rec. negative", ("recognition", "negative")),
    ("rec. AUROC", ("recognition", "auroc")),
    ("rec. free answer", ("recognition", "free_answer", "weighted")),
    ("visual QA", ("vqa", "accuracy")),
    ("text QA", ("text_qa", "accuracy")),
    ("multi-concept QA", ("multi_concept", "accuracy")),
    ("CLIP-I", ("generation", "clip_i")),
    ("CLIP-T", ("generation", "clip_t")),
    ("DINO", ("generation", "dino")),
)
CHARTED = ("recognition", "visual QA", "text QA", "multi-concept QA", "CLIP-I", "DINO")

# The Yo'Chameleon paper's table on the Yo'LLaVA data (mean over its 40 subjects): figures AS THE PAPER
# REPORTS THEM, for comparison; this project did not measure them. Our `adapter` is the Yo'Chameleon row,
# our `plain` the Chameleon row; recognition is the weighted (0.5/0.5) accuracy of the Yo'LLaVA protocol.
PUBLISHED_COLUMNS = ("recognition", "visual QA", "text QA", "CLIP-I")
PUBLISHED_SOURCE = "Yo'Chameleon paper, reported (not measured here)"
PUBLISHED_ROWS = (
    {"method": "Yo'Chameleon", "recognition": 0.845, "visual QA": 0.604, "text QA": 0.721, "CLIP-I": 0.783},
    {"method": "Chameleon", "recognition": 0.500, "visual QA": 0.474, "text QA": 0.405, "CLIP-I": 0.425},
)


def cell(value) -> str:
    """A table cell: '-' for a missing value (None, NaN), three decimals for a float."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict], keys: list[str] | None = None) -> str:
    """Markdown table of `keys` (default: the first row's) for every row."""
    keys = list(rows[0]) if keys is None else keys
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _get(metrics: dict, path: tuple):
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def evaluation_rows(results: dict, label: str | None = None) -> list[dict]:
    """One row per method of an evaluation's metrics: {"run", "concept", "method", column: value}."""
    rows = []
    for method, metrics in results.get("methods", {}).items():
        row = {"run": label or "", "concept": results.get("concept", ""), "method": method}
        row.update({title: _get(metrics, path) for title, path in COLUMNS})
        rows.append(row)
    return rows


def evaluation_table(rows: list[dict]) -> str:
    """Evaluation rows: the columns that have at least one value; '-' where a method has none."""
    keys = [k for k in rows[0] if k in ("run", "concept", "method") and any(r[k] for r in rows)]
    keys += [title for title, _ in COLUMNS if any(r.get(title) is not None for r in rows)]
    return markdown_table(rows, keys)


def published_table(rows: list[dict], source: str = "measured") -> str:
    """Our rows in the published table's columns, with a mean per method over concepts, then the paper's rows."""
    rows = [r for r in rows if any(r.get(c) is not None for c in PUBLISHED_COLUMNS)]
    out = [{"source": source, "concept": r.get("concept", ""), "method": r["method"],
            **{c: r.get(c) for c in PUBLISHED_COLUMNS}} for r in rows]
    concepts = {r.get("concept") for r in rows}
    if len(concepts) > 1:
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["method"] == method]
            mean = {}
            for column in PUBLISHED_COLUMNS:
                values = [r[column] for r in mine if isinstance(r.get(column), (int, float))
                          and not math.isnan(r[column])]
                mean[column] = sum(values) / len(values) if values else None
            out.append({"source": f"{source}, mean", "concept": f"{len({r.get('concept') for r in mine})} concepts",
                        "method": method, **mean})
    out += [{"source": PUBLISHED_SOURCE, "concept": "40 Yo'LLaVA subjects", **r} for r in PUBLISHED_ROWS]
    return markdown_table(out, ["source", "concept", "method", *PUBLISHED_COLUMNS])


def bar_chart(rows: list[dict], path: Path, title: str) -> Path | None:
    """Grouped bars: one group per metric, one bar per row (method or run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in CHARTED if any(isinstance(r.get(m), (int, float)) for r in rows)]
    if not metrics:
        return None
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(metrics), 3.6))
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        values = [row.get(m) if isinstance(row.get(m), (int, float)) else 0.0 for m in metrics]
        label = " / ".join(str(row[k]) for k in ("run", "method") if row.get(k))
        ax.bar([j + i * width for j in range(len(metrics))], values, width, label=label)
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set_ylim(0, 1.05)
    ax.axhline(0.5, color="grey", linewidth=0.6, linestyle=":")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_wandb_table(rows: list[dict], logger_cfg, out_dir: Path, run_name: str, key: str = "evaluation") -> str | None:
    """The table as a W&B run (offline into out_dir unless logger.mode=online); returns the run dir."""
    if logger_cfg is None or logger_cfg.get("name") != "wandb":
        return None
    import wandb

    run = wandb.init(project=logger_cfg.get("project", "yochameleon"), entity=logger_cfg.get("entity"),
                     name=run_name, job_type="evaluation", dir=str(out_dir), mode=logger_cfg.get("mode", "offline"),
                     settings=wandb.Settings(console="off", silent=True, disable_git=True))
    columns = list(rows[0])
    run.log({key: wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})
    directory = str(Path(run.dir).parent)
    run.finish()
    return directory
