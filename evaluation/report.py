"""An evaluation's report: report.md, charts/methods.png and a W&B table (written by `yochameleon.metrics.table`)."""

from __future__ import annotations

from pathlib import Path

from yochameleon.metrics.table import bar_chart, evaluation_rows, evaluation_table, log_wandb_table, published_table


def speed_words(ratio: float) -> str:
    """A speed ratio (how many times faster) as people say it: '2.50x faster', or for 0.81 '1.23x slower'."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def write_report(results: dict, out_dir: Path, logger_cfg=None) -> str:
    """report.md, charts/methods.png and the W&B table; returns the markdown."""
    rows = evaluation_rows(results)
    if not rows:
        text = "# Evaluation\n\nNo method could be evaluated:\n" + "\n".join(
            f"- {k}: {v}" for k, v in results.get("skipped", {}).items())
        (out_dir / "report.md").write_text(text + "\n")
        return text
    chart = bar_chart(rows, out_dir / "charts" / "methods.png", f"<{results['concept']}>")
    lines = [f"# Evaluation of <{results['concept']}> (eval-set subject `{results['subject']}`)", "",
             evaluation_table(rows), ""]
    if "throughput" in results:
        t = results["throughput"]
        lines.append(f"Recognition throughput ({t['method']}): logits {t['logit_images_per_second']:.2f} images/s, "
                     f"generate-and-parse {t['generate_images_per_second']:.2f} images/s -> logit scoring is "
                     f"{speed_words(t['logit_vs_generate_speedup'])}.")
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
