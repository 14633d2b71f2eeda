"""The figures the CI quality gate's bars are set from, on the validation split of the shipped toy backbone.

    python benchmarks/toy_gate_bars.py --out outputs/gate-bars [--seeds 0 1 2] [--draw-seeds 1 2]

It trains the gate's runs on `toy-bo` exactly as `tests/test_toyworld.py::test_quality_gate...` does (the same
overrides, the user's defaults otherwise): the untrained rows (one step at lr 0) on the first seed, understanding-only
on every `--seeds`, and the default recipe with 24 final samples on every `--draw-seeds` (not the gate's seed 0, so
the drawing bar is not set on the run it gates). For each it prints best/'s validation recognition (AUROC, weighted)
and generation NLL, text QA in the training and held-out wordings, and the share of final samples judged all three
right. The test split is printed too, only to be reported: bars are set on validation (docs/toyworld.md, "The CI
quality gate"). Each run writes `<out>/<run>/gate.json`, so an interrupted command resumes.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from toy_recipes import compose_train  # noqa: E402

GATE_RUNS = {  # the gate's own overrides (tests/test_toyworld.py), over trainer.final_samples=0
    "control": ["model.eval_every=100000", "trainer.lr=0", "trainer.max_steps=1", "trainer.sample_images=false"],
    "understanding": ["recipe=understanding-only", "model.eval_every=100000", "trainer.final_samples=8"],
    "default": ["trainer.final_samples=24"],
}


def compose_gate_run(seed: int, extra: list[str], cache_dir: Path):
    """One of the gate's runs on toy-bo: `extra` is one of GATE_RUNS, over the test suite's own settings."""
    return compose_train([f"cache_dir={cache_dir}", "trainer.progress=false", "trainer.final_samples=0",
                          "+concept=toy-bo", "logger=none", f"seed={seed}", *extra])


def run_one(label: str, seed: int, out: Path, cache_dir: Path) -> dict:
    from yochameleon.inference import PersonalizedModel
    from yochameleon.toyworld.checks import text_qa
    from yochameleon.training.recipe import train

    done = out / f"{label}-s{seed}" / "gate.json"
    if done.is_file():
        return json.loads(done.read_text())
    summary = train(compose_gate_run(seed, GATE_RUNS[label], cache_dir), done.parent)
    pm = PersonalizedModel.load([Path(summary["scored_adapter"])], device="cpu", cache_dir=cache_dir)
    figures = {"val": summary["val"], "test": {k: v for k, v in summary["final"].items() if k.startswith("eval/")},
               "generation": summary["generation"], **text_qa(pm, "bo")}
    done.write_text(json.dumps(figures, indent=1))
    return figures


def line(name: str, figures: dict) -> str:
    def split(s: dict) -> str:
        nll = s.get("eval/generation/nll")
        return (f"AUROC {s['eval/recognition/auroc']:.3f} weighted {s['eval/recognition/weighted']:.3f}"
                + (f" NLL {nll:.3f}" if nll is not None else ""))
    drawn = figures["generation"]
    drawn = f"{round(drawn['all_right'] * drawn['judged'])}/{drawn['judged']}" if drawn else "-"
    return (f"| {name} | {split(figures['val'])} | {figures['text_qa']:.3f} / {figures['text_qa_heldout']:.3f} | "
            f"{drawn} | {split(figures['test'])} |")


def main(argv=None) -> None:
    from yochameleon.tiny.chameleon import default_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="understanding-only's seeds; the "
                        "untrained rows use the first")
    parser.add_argument("--draw-seeds", nargs="+", type=int, default=[1, 2], help="the default recipe's seeds")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or default_cache_dir()
    runs = [("control", args.seeds[0]), *[("understanding", s) for s in args.seeds],
            *[("default", s) for s in args.draw_seeds]]
    rows = ["| run | validation (sets the bars) | text QA training / held-out | drawn | test (reported only) |",
            "|---|---|---|---|---|"]
    for label, seed in runs:
        rows.append(line(f"{label}, seed {seed}", run_one(label, seed, args.out, cache_dir)))
        print(rows[-1], flush=True)
    (args.out / "bars.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
