"""Which image sampling draws a learnt toy concept best? Read on a finished `toy_recipes.py` run set.

    python benchmarks/toy_sampling.py --runs outputs/val-default [--guidance 1 3 5 8] [--temperature 1 0.7]
        [--top-k 0] [--images 32]

For every (concept, seed) of `--runs` with a finished default-recipe run (its `best/`, what training tells a user
to use) and a finished `baseline-description` run (the definition in words on the plain backbone), it draws
`--images` images of "A photo of <sks>." at each sampling setting of the grid (guidance x temperature x top-k;
`PersonalizedModel.generate_images`, seeded by the run's seed, so every setting draws from the same noise) and
reads them with the world's judge, like `toy_recipes.py` does at the backbone's recorded sampling. The table
gives, per setting, the mean fraction drawn all three right by the learnt name (`best/`, and the last step's `adapter/`) and by
the definition, and the difference best/ - definition (mean and 95% t-interval over the (concept, seed) pairs).

Run it on the validation concepts (`toy_recipes.py --concepts dax blick wug fep tupa`): a sampling default chosen
here is chosen off the 5 test concepts. Each (run, method, setting) writes `<runs>/<concept>/seed-<s>/sampling/
<method>-<setting>.json`, so an interrupted sweep resumes; the table goes to `<runs>/sampling.md`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from paired_statistics import mean_ci  # noqa: E402
from toy_recipes import BASELINES, PromptedBackbone, _write, baseline_on_backbone, generation, run_path  # noqa: E402

from yochameleon.inference import PersonalizedModel  # noqa: E402

METHODS = ("yochameleon", "yochameleon-last", "baseline-description")  # best/, the last step's adapter/, the words


def setting_name(setting: dict) -> str:
    return f"g{setting['guidance_scale']:g}-t{setting['temperature']:g}-k{setting['top_k']}"


def drawers(out: Path, concept: str, seed: int, cache_dir: Path):
    """(method, a loader of its PersonalizedModel) for the learnt concept's best/, its last adapter/ and the
    definition in words."""
    for method, folder in (("yochameleon", "best"), ("yochameleon-last", "adapter")):
        path = run_path(out, concept, seed, "yochameleon") / folder
        yield method, lambda path=path: PersonalizedModel.load(path, device="cpu", cache_dir=cache_dir)

    def definition():
        _, backbone, _, builder = baseline_on_backbone(concept, BASELINES["baseline-description"], seed, cache_dir, [])
        return PromptedBackbone(backbone, builder)

    yield "baseline-description", definition


def sweep(args: argparse.Namespace) -> list[dict]:
    from tqdm.auto import tqdm

    from yochameleon.tiny.chameleon import default_cache_dir
    from yochameleon.toyworld.judge import load_judge

    cache_dir = args.cache_dir or default_cache_dir()
    grid = [{"guidance_scale": g, "temperature": t, "top_k": k}
            for g, t, k in itertools.product(args.guidance, args.temperature, args.top_k)]
    pairs = sorted({(p.parents[2].name, int(p.parents[1].name.removeprefix("seed-")))
                    for p in args.runs.glob("*/seed-*/yochameleon/benchmark.json")
                    if (p.parents[1] / "baseline-description" / "benchmark.json").is_file()})
    if not pairs:
        raise SystemExit(f"error: {args.runs} holds no (concept, seed) with finished yochameleon and "
                         "baseline-description runs; run benchmarks/toy_recipes.py --out there first")
    rows, judge = [], None
    with tqdm(total=len(pairs) * len(METHODS) * len(grid), desc="sampling sweep") as bar:
        for concept, seed in pairs:
            for method, load in drawers(args.runs, concept, seed, cache_dir):
                model = None
                for setting in grid:
                    path = args.runs / concept / f"seed-{seed}" / "sampling" / f"{method}-{setting_name(setting)}.json"
                    record = json.loads(path.read_text()) if path.is_file() else {}
                    if record.get("images") != args.images:  # not drawn yet, or drawn with another --images
                        model = model or load()
                        judge = judge or load_judge(model.backbone.path)
                        scores, _ = generation(model, concept, judge, args.images, seed, **setting)
                        record = {"concept": concept, "seed": seed, "method": method, "images": args.images,
                                  **setting, **scores}
                        path.parent.mkdir(parents=True, exist_ok=True)
                        _write(path, json.dumps(record, indent=2))
                    rows.append(record)
                    bar.update(1)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| guidance | temperature | top-k | n | best/, all three | adapter/ (last step), all three "
             "| definition, all three | best/ - definition | best/ shape / colour / pattern |",
             "|---|---|---|---|---|---|---|---|---|"]
    keyed = {(r["concept"], r["seed"], r["method"], setting_name(r)): r for r in rows}
    settings = sorted({setting_name(r): (r["guidance_scale"], r["temperature"], r["top_k"]) for r in rows}.items(),
                      key=lambda item: item[1])
    def shown(values):
        mean, half = mean_ci(values)
        return f"{mean:.3f} ± {half:.3f}"

    for name, (g, t, k) in settings:
        pairs = sorted({(c, s) for c, s, _, n in keyed if n == name})
        learnt = [keyed[(c, s, "yochameleon", name)] for c, s in pairs]
        last = [keyed[(c, s, "yochameleon-last", name)] for c, s in pairs]
        words = [keyed[(c, s, "baseline-description", name)] for c, s in pairs]
        attributes = " / ".join(f"{sum(r['generation_' + a] for r in learnt) / len(learnt):.3f}"
                                for a in ("shape", "colour", "pattern"))
        lines.append(f"| {g:g} | {t:g} | {k} | {len(pairs)} | {shown([r['generation'] for r in learnt])} | "
                     f"{shown([r['generation'] for r in last])} | {shown([r['generation'] for r in words])} | "
                     f"{shown([a['generation'] - b['generation'] for a, b in zip(learnt, words)])} | {attributes} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="a benchmarks/toy_recipes.py --out folder")
    parser.add_argument("--guidance", nargs="+", type=float, default=[1.0, 3.0, 5.0, 8.0])
    parser.add_argument("--temperature", nargs="+", type=float, default=[1.0, 0.7])
    parser.add_argument("--top-k", nargs="+", type=int, default=[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.images <= 0 or any(g < 0 for g in args.guidance) or any(t <= 0 for t in args.temperature):
        parser.error("--images and --temperature must be positive, --guidance >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    text = table(sweep(args))
    _write(args.runs / "sampling.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
