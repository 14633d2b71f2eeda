"""Turn evaluation metrics into a markdown table, PNG charts and a W&B table."""

from __future__ import annotations

import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)

# (column title, path into a method's metrics)
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


def _get(metrics: dict, path: tuple):
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return None
        metrics = metrics[key]
    return metrics


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def rows_of(results: dict, label: str | None = None) -> list[dict]:
    """One row per method: {"run", "concept", "method", column: value}."""
    rows = []
    for method, metrics in results.get("methods", {}).items():
        row = {"run": label or "", "concept": results.get("concept", ""), "method": method}
        row.update({title: _get(metrics, path) for title, path in COLUMNS})
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Columns that have at least one value; '-' where a method has none."""
    keys = [k for k in rows[0] if k in ("run", "concept", "method") and any(r[k] for r in rows)]
    keys += [title for title, _ in COLUMNS if any(r.get(title) is not None for r in rows)]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


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
    keys = ["source", "concept", "method", *PUBLISHED_COLUMNS]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in out]
    return "\n".join(lines)


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


def write_report(results: dict, out_dir: Path, logger_cfg=None) -> str:
    """report.md, charts/methods.png and the W&B table; returns the markdown."""
    rows = rows_of(results)
    if not rows:
        text = "# Evaluation\n\nNo method could be evaluated:\n" + "\n".join(
            f"- {k}: {v}" for k, v in results.get("skipped", {}).items())
        (out_dir / "report.md").write_text(text + "\n")
        return text
    chart = bar_chart(rows, out_dir / "charts" / "methods.png", f"<{results['concept']}>")
    lines = [f"# Evaluation of <{results['concept']}> (eval-set subject `{results['subject']}`)", "",
             markdown_table(rows), ""]
    if "throughput" in results:
        t = results["throughput"]
        lines.append(f"Recognition throughput ({t['method']}): logits {t['logit_images_per_second']:.2f} images/s, "
                     f"generate-and-parse {t['generate_images_per_second']:.2f} images/s -> logit scoring is "
                     f"{t['logit_vs_generate_speedup']:.2f}x faster.")
    if "forgetting" in results:
        f = results["forgetting"]
        lines.append(f"Forgetting: {f['prompts']} prompts that name no concept. Asked as inference asks them (the "
                     f"soft prompts in context, inference's banned ids), along the plain model's own answers "
                     f"({f['answer_positions']} positions): greedy next token changed at "
                     f"{f['greedy_changed_share']:.1%}, mean KL(plain || adapter) {f['mean_kl']:.3f} nats, a concept "
                     f"token won at {f['concept_token_share']:.1%}. Invariant: with only the rows loaded, max "
                     f"|logit difference| outside the adapters' own tokens = {f['max_abs_logit_diff']:.3g} "
                     f"({'identical' if f['identical'] else 'DIFFERENT'}) over {f['positions']} positions; a loaded "
                     f"identifier won the greedy token at {f['rows_only_concept_wins']} of them.")
    eval_set = results.get("eval_set") or {}
    if eval_set.get("kind") == "yollava":
        lines += ["", "## Against the published table (Yo'LLaVA data)", "",
                  f"Yo'LLaVA set {eval_set.get('root')}: {eval_set.get('subjects')} subjects; "
                  f"{eval_set.get('visual_qa_loaded')} visual questions loaded "
                  f"({eval_set.get('visual_qa_missing_images')} images not found), "
                  f"{eval_set.get('text_qa_loaded')} text questions. Subject `{results['subject']}`: "
                  f"{eval_set.get('subject_test_photos')} test photos vs {eval_set.get('subject_negatives')} "
                  f"other subjects' test photos, {eval_set.get('subject_visual_qa')} visual and "
                  f"{eval_set.get('subject_text_qa')} text questions. The paper's rows are means over its 40 "
                  "subjects; `python -m evaluation.compare` over one run per subject gives the mean to set "
                  "beside them.", "", published_table(rows, "this run"), ""]
    for name, reason in results.get("skipped", {}).items():
        lines.append(f"Skipped {name}: {reason}")
    if chart:
        lines += ["", f"![methods]({chart.relative_to(out_dir)})"]
    wandb_dir = log_wandb_table(rows, logger_cfg, out_dir, f"eval-{results['concept']}")
    if wandb_dir:
        lines.append(f"\nW&B table: {wandb_dir}")
    text = "\n".join(lines) + "\n"
    (out_dir / "report.md").write_text(text)
    return text
