"""The 3S recipes on toy concepts, on a CPU: which recipe learns best, with confidence intervals?

    python -m yochameleon.toyworld.benchmark [--concepts bo mam pip zuzu kiki] [--recipes yochameleon ...]
        [--seeds 0 1 2] [--images 8] --out DIR [hydra overrides ...]
    python -m yochameleon.toyworld.benchmark --out DIR --table-only

For each concept and seed it runs every recipe through the normal training (`yochameleon.train`'s
code with `+concept=toy-<name> recipe=<recipe> seed=<seed>`) and two prompting baselines on the
plain backbone (`evaluation.methods.baseline_method`): `baseline-description`, the concept's literal
definition as the prompt prefix ("<reserved16200> is an orange striped heart.", the form the toy
backbone was pretrained on), and `baseline-plain`, the bare name token. Each run is measured the same way:

- test recognition, weighted accuracy (the concept's 40 test renders vs 80 test negatives, a
  third of them look-alikes), and the AUROC of P(Yes) over the same images, by the training's own
  `recognition_metrics` (a recipe's: its final adapter, scored once at the end of the run);
- text-only QA: "What colour / pattern / shape is <name>?" with no image, scored against the
  concept's true attributes (the highest logit among the attribute's values), in the training
  wordings and in held-out ones (`checks.HELDOUT_QUESTIONS`);
- generation: `--images` images for "A photo of <sks>." drawn by `PersonalizedModel.generate_images`
  with its default sampling (`Backbone.sampling`, what `make demo` draws with; never set here),
  seeded by the run's seed, read by the world's attribute judge: all three of shape, colour and
  pattern right, and each one.

Every run writes `<out>/<concept>/seed-<seed>/<method>/benchmark.json`; running the same command
again skips the runs that have one (an interrupted benchmark resumes; `<out>/settings.json` refuses
other settings). The table gives mean and 95% t-interval over the (concept, seed) runs, and marks
where a method differs from the default recipe over the same runs (paired t-test, two-sided,
alpha 0.05); under it, a verdict on each of the paper's claims and the two controls. It is printed
and written to `<out>/table.md`, with every figure in `<out>/results.json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

from scipy import stats

from yochameleon.data import templates
from yochameleon.data.concept import parse_text_checks
from yochameleon.inference import PersonalizedModel
from yochameleon.metrics.options import score_text_checks
from yochameleon.toyworld import world
from yochameleon.toyworld.checks import text_checks
from yochameleon.toyworld.concepts import CONCEPTS

log = logging.getLogger("yochameleon.toyworld.benchmark")

RECIPES = ("yochameleon", "shared-tokens", "understanding-only", "generation-only", "no-soft-positive",
           "no-self-prompting")
DEFAULT_RECIPE = "yochameleon"
BASELINES = {"baseline-description": "description", "baseline-plain": "plain"}  # row -> evaluation.methods kind
GENERATION_PROMPT = templates.GENERATION_PROMPTS[0]  # "A photo of <sks>."
ALPHA = 0.05
METRICS = {  # results key -> column
    "recognition": "recognition (weighted)", "recognition_auroc": "AUROC", "text_qa": "text QA (training)",
    "text_qa_heldout": "text QA (held-out)", "generation": "generation (all 3)", "generation_colour": "colour",
    "generation_shape": "shape", "generation_pattern": "pattern", "steps": "steps", "train_seconds": "train s",
}
# The paper's claims as (claim, default recipe's rival, metric): each says the default recipe scores higher.
CLAIMS = (
    ("(i) separate g/u tokens beat shared ones, recognition AUROC", "shared-tokens", "recognition_auroc"),
    ("(i) separate g/u tokens beat shared ones, recognition weighted", "shared-tokens", "recognition"),
    ("(i) separate g/u tokens beat shared ones, generation all 3 right", "shared-tokens", "generation"),
    ("(ii) soft positives improve generation (all 3 right)", "no-soft-positive", "generation"),
    ("(iii) self-prompting helps, recognition AUROC", "no-self-prompting", "recognition_auroc"),
    ("(iii) self-prompting helps, recognition weighted", "no-self-prompting", "recognition"),
    ("(iii) self-prompting helps, generation all 3 right", "no-self-prompting", "generation"),
)
# Controls: a recipe that never trains a task must score lower on it than the default recipe.
CONTROLS = (
    ("understanding-only never trains generation: generation all 3 right", "understanding-only", "generation"),
    ("generation-only never trains recognition: recognition AUROC", "generation-only", "recognition_auroc"),
)
SETTINGS = ("concepts", "recipes", "seeds", "images", "overrides", "backbone")  # must match to add runs to an --out


# ---- statistics (pure) -----------------------------------------------------------------------------
def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its t confidence interval (n - 1 degrees of freedom); nan where undefined."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)


def paired_test(a: list[float], b: list[float]) -> dict:
    """Paired two-sided t-test of a - b over matched runs: mean difference, its 95% CI half-width, p, n.

    p is nan below two pairs; with no spread in the differences t is 0/0 or infinite, so p is 1
    (no difference) or 0 (the same difference in every run).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b)]
    mean, half = mean_ci(differences)
    if len(differences) < 2:
        p = math.nan
    elif max(differences) - min(differences) < 1e-12:
        p = 1.0 if abs(mean) < 1e-12 else 0.0
    else:
        p = float(stats.ttest_rel(a, b).pvalue)
    return {"difference": mean, "ci95": half, "p": p, "n": len(differences)}


def verdict(difference: float, p: float, alpha: float = ALPHA) -> str:
    """On a claim that the first of a pair scores higher: agrees / disagrees (significant that way / the other way),
    else cannot tell."""
    if not p < alpha:  # also nan: too few pairs
        return "cannot tell"
    return "agrees" if difference > 0 else "disagrees"


def paired_values(rows: list[dict], a: str, b: str, metric: str) -> tuple[list[float], list[float]]:
    """`metric` of methods `a` and `b` over the (concept, seed) runs both have, in one order."""
    def by_run(method: str) -> dict:
        return {(r["concept"], r["seed"]): r[metric] for r in rows
                if r["method"] == method and r.get(metric) is not None}

    x, y = by_run(a), by_run(b)
    common = sorted(x.keys() & y.keys())
    return [x[k] for k in common], [y[k] for k in common]


def summarize(rows: list[dict], methods: list[str]) -> dict:
    """Per method and metric: n, mean, CI half-width, and the paired test against the default recipe."""
    out = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        figures = {}
        for metric in METRICS:
            values = [r[metric] for r in mine if r.get(metric) is not None]
            mean, half = mean_ci(values)
            figures[metric] = {"n": len(values), "mean": mean, "ci95": half}
            if method != DEFAULT_RECIPE and values:
                figures[metric]["vs_default"] = paired_test(*paired_values(rows, DEFAULT_RECIPE, method, metric))
        out[method] = {"n": len(mine), "metrics": figures}
    return out


def judged_claims(rows: list[dict], claims=CLAIMS) -> list[dict]:
    """Each (claim, rival, metric) tested as default recipe > rival over the same runs, with its verdict."""
    out = []
    for claim, rival, metric in claims:
        test = paired_test(*paired_values(rows, DEFAULT_RECIPE, rival, metric))
        out.append({"claim": claim, "rival": rival, "metric": metric, **test,
                    "verdict": verdict(test["difference"], test["p"])})
    return out


# ---- the table ------------------------------------------------------------------------------------
def _number(value: float, metric: str) -> str:
    return f"{value:.0f}" if metric in ("steps", "train_seconds") else f"{value:.3f}"


def _cell(figure: dict, metric: str) -> str:
    if not figure["n"]:
        return "–"
    text = _number(figure["mean"], metric)
    if not math.isnan(figure["ci95"]):
        text += f" ± {_number(figure['ci95'], metric)}"
    test = figure.get("vs_default")
    return text + (" *" if test and test["p"] < ALPHA else "")


def _claim_line(c: dict) -> str:
    if not c["n"]:
        return f"- {c['claim']}: no runs of both {DEFAULT_RECIPE} and {c['rival']}: **cannot tell**"
    ci = "" if math.isnan(c["ci95"]) else f" ± {c['ci95']:.3f}"
    return (f"- {c['claim']}: {DEFAULT_RECIPE} − {c['rival']} = {c['difference']:+.3f}{ci}, p = {c['p']:.3g}, "
            f"n = {c['n']}: **{c['verdict']}**")


def command_line(settings: dict, out: Path) -> str:
    """The command that runs (or resumes) the benchmark these settings describe."""
    parts = ["python", "-m", "yochameleon.toyworld.benchmark", "--concepts", *settings["concepts"],
             "--recipes", *settings["recipes"], "--seeds", *map(str, settings["seeds"]),
             "--images", str(settings["images"]), "--out", str(out), *settings["overrides"]]
    return shlex.join(parts)


def table(rows: list[dict], settings: dict, out: Path) -> str:
    """Markdown: the command, then mean ± CI per method, then the claims' and controls' verdicts."""
    methods = [*settings["recipes"], *BASELINES]
    expected = len(settings["concepts"]) * len(settings["seeds"])
    summary = summarize(rows, methods)
    facts = (f"Seeds {' '.join(map(str, settings['seeds']))}; concepts {', '.join(settings['concepts'])}; "
             f"{settings['images']} images per method and run; backbone {settings['backbone']}; "
             f"{len(rows)} of {expected * len(methods)} runs done.")
    reading = ("Mean ± 95% CI half-width (t, n − 1 dof) over the (concept, seed) runs. `*`: differs from "
               f"{DEFAULT_RECIPE} over the same runs (paired t-test, two-sided, p < {ALPHA}). The baselines' "
               "recognition and text QA do not depend on the seed (nothing is sampled), so their interval "
               "counts each concept once per seed.")
    claims = (f"Claims (the paper's: {DEFAULT_RECIPE} scores higher; mean paired difference ± 95% CI, paired "
              f"t-test, two-sided, alpha {ALPHA}; agrees / disagrees: significant in the claimed / the other "
              "direction; cannot tell: not significant):")
    controls = f"Controls ({DEFAULT_RECIPE} must score higher: agrees = the control is low, as it must be):"
    lines = ["# Toy recipe benchmark", "", f"Command: `{command_line(settings, out)}`", "", facts, "", reading, "",
             "| method | n | " + " | ".join(METRICS.values()) + " |", "|---" * (len(METRICS) + 2) + "|"]
    for method in methods:
        n = summary[method]["n"]
        if not n:
            continue
        count = str(n) if n == expected else f"{n} of {expected}"
        lines.append(f"| {method} | {count} | "
                     + " | ".join(_cell(summary[method]["metrics"][m], m) for m in METRICS) + " |")
    lines += ["", claims, "", *map(_claim_line, judged_claims(rows))]
    lines += ["", controls, "", *map(_claim_line, judged_claims(rows, CONTROLS))]
    return "\n".join(lines)


# ---- measuring one run ----------------------------------------------------------------------------
def toy_text_qa(model, builder, name: str) -> dict:
    """Text-only attribute questions about toy concept <name>, scored among the attribute's values.

    The concept's text checks (`toyworld.checks`, what `concept.text_checks` of `toy-<name>` holds)
    scored by `metrics.options.score_text_checks`: `text_qa` in the training wordings ("What
    colour is <sks>?"), `text_qa_heldout` in wordings the adapter never saw
    (`toyworld.checks.HELDOUT_QUESTIONS`).
    """
    return score_text_checks(model, builder, parse_text_checks(name, text_checks(name)))


def text_qa(pm, name: str) -> dict:
    """`toy_text_qa` for a loaded PersonalizedModel."""
    return toy_text_qa(pm.model, pm.builder(name), name)


class PromptedBackbone(PersonalizedModel):
    """A prompting baseline behind `PersonalizedModel.generate_images`: its images are drawn by the same
    code, with the same default sampling, as an adapter's; only the prompt ids are the baseline's."""

    def __init__(self, backbone, builder):
        super().__init__(backbone, [], {}, {})
        self.baseline_builder = builder

    def image_prompts(self, prompt: str, concept: str | None = None, concepts=None) -> tuple[list[int], list[int]]:
        cond = self.baseline_builder.image_prompt_ids(prompt)
        return cond, self.baseline_builder.unconditional_image_prompt_ids(cond)


def generation(pm, name: str, judge, n: int, seed: int) -> tuple[dict, list]:
    """Images for "A photo of <sks>." at `pm.generate_images`' default sampling; fractions the judge reads right."""
    images = pm.generate_images(GENERATION_PROMPT, n=n, seed=seed)
    verdicts = judge.predict(images)
    thing = CONCEPTS[name]
    right = [{a: v[a] == getattr(thing, a) for a in world.ATTRIBUTES} for v in verdicts]
    out = {"generation": sum(all(r.values()) for r in right) / n}
    out.update({f"generation_{a}": sum(r[a] for r in right) / n for a in world.ATTRIBUTES})
    return out, images


def baseline(kind: str, backbone, concept: str, description: str | None):
    """`evaluation.methods.baseline_method` of `kind` for a toy concept, named the way the toy pretraining names.

    The toy backbone learnt definitions as "<reservedNNNNN> is an orange striped heart.\\n" before the
    question (`toyworld.pretrain.make_example`, the define_* kinds), the name one reserved token it knows
    nothing else about. The harness names a subject by its concept name, which the toy BPE splits into
    letters ("bo" -> b, o); here the name is the token an adapter's identifier takes
    (`backbone.default_first_token`, `<reserved16200>`) with its untrained row.
    """
    from evaluation.methods import baseline_method

    method = baseline_method(kind, backbone, {concept: backbone.default_first_token},
                             {concept: description} if description else {}, {})
    if concept not in method.subjects:
        raise SystemExit(f"error: concept <{concept}> has no concept.description: the {kind} baseline needs one")
    return method


def compose_run(concept: str, recipe: str, seed: int, cache_dir: Path, extra: list[str]):
    """The training config of one run (the baselines read the same concept, model and splits from it)."""
    from hydra import compose, initialize_config_dir

    from yochameleon.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"+concept=toy-{concept}", f"recipe={recipe}", f"seed={seed}",
                                           "logger=none", f"cache_dir={cache_dir}", "trainer.progress=false",
                                           "trainer.sample_images=false", *extra])


def run_recipe(concept: str, recipe: str, seed: int, run_dir: Path, cache_dir: Path, n_images: int,
               extra: list[str]) -> tuple[dict, list]:
    """Train one adapter and measure its final rows."""
    from yochameleon.toyworld.judge import load_judge
    from yochameleon.training.recipe import train

    cfg = compose_run(concept, recipe, seed, cache_dir, extra)
    started = time.perf_counter()
    summary = train(cfg, run_dir)
    final = summary["final"]
    figures = {"steps": summary["steps"], "train_seconds": round(time.perf_counter() - started, 1),
               "recognition": final["eval/recognition/weighted"], "recognition_auroc": final["eval/recognition/auroc"],
               "recognition_positive": final["eval/recognition/positive"],
               "recognition_negative": final["eval/recognition/negative"]}
    pm = PersonalizedModel.load(run_dir / "adapter", device="cpu", cache_dir=cache_dir)
    figures.update(text_qa(pm, concept))
    # Measured for every recipe, also those that never train generation (their g-tokens are untrained).
    scores, images = generation(pm, concept, load_judge(pm.backbone.path), n_images, seed)
    return figures | scores, images


def run_baseline(concept: str, kind: str, seed: int, cache_dir: Path, n_images: int, extra: list[str]
                 ) -> tuple[dict, list]:
    """Measure a prompting baseline on the plain backbone, on the recipes' splits, with the recipes' code."""
    from yochameleon.data.concept import ConceptData
    from yochameleon.metrics.recognition import recognition_metrics
    from yochameleon.sources import load_configured_backbone
    from yochameleon.toyworld.judge import load_judge

    cfg = compose_run(concept, DEFAULT_RECIPE, seed, cache_dir, extra)
    data = ConceptData.from_config(cfg.concept)
    backbone = load_configured_backbone(cfg.model, cfg.cache_dir, "cpu")
    method = baseline(kind, backbone, concept, data.description)
    builder = method.builder(concept)
    test = recognition_metrics(method.model, builder, data.test_split(), int(cfg.trainer.eval_batch_size), "test")
    figures = {"steps": None, "train_seconds": None, "recognition": test["test/recognition/weighted"],
               "recognition_auroc": test["test/recognition/auroc"],
               "recognition_positive": test["test/recognition/positive"],
               "recognition_negative": test["test/recognition/negative"],
               "prefix": backbone.tokenizer.decode(builder.prefix_ids())}
    figures.update(toy_text_qa(method.model, builder, concept))
    scores, images = generation(PromptedBackbone(backbone, builder), concept, load_judge(backbone.path), n_images, seed)
    return figures | scores, images


def run_one(concept: str, method: str, seed: int, out: Path, cache_dir: Path, n_images: int,
            extra: list[str]) -> dict:
    """One recipe or baseline on one (concept, seed): its figures, written to its benchmark.json."""
    run_dir = run_path(out, concept, seed, method)
    if run_dir.exists():  # an interrupted run (no benchmark.json): start it again
        log.warning("%s holds an unfinished run: starting it again", run_dir)
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    if method in BASELINES:
        run_dir.mkdir(parents=True)
        figures, images = run_baseline(concept, BASELINES[method], seed, cache_dir, n_images, extra)
    else:
        figures, images = run_recipe(concept, method, seed, run_dir, cache_dir, n_images, extra)
    for index, image in enumerate(images):
        image.save(run_dir / f"generated_{index}.png")
    figures = {"concept": concept, "method": method, "kind": "baseline" if method in BASELINES else "recipe",
               "seed": seed, **figures, "run_seconds": round(time.perf_counter() - started, 1)}
    _write(run_dir / "benchmark.json", json.dumps(figures, indent=2))  # last: its presence marks the run done
    return figures


# ---- the run set on disk --------------------------------------------------------------------------
def run_path(out: Path, concept: str, seed: int, method: str) -> Path:
    return out / concept / f"seed-{seed}" / method


def _write(path: Path, text: str) -> None:
    """Write whole or not at all (an interrupted write leaves the old file or none)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def collected(out: Path, settings: dict) -> list[dict]:
    """The finished runs in `out` that the settings ask for."""
    rows = []
    for concept in settings["concepts"]:
        for seed in settings["seeds"]:
            for method in [*settings["recipes"], *BASELINES]:
                path = run_path(out, concept, seed, method) / "benchmark.json"
                if path.is_file():
                    rows.append(json.loads(path.read_text()))
    return rows


def check_settings(out: Path, settings: dict) -> None:
    """Write `<out>/settings.json` for a new benchmark; refuse to add runs under other settings to an old one."""
    path = out / "settings.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        differ = [f"{key}: {stored.get(key)!r} there, {settings[key]!r} now" for key in SETTINGS
                  if stored.get(key) != settings[key]]
        if differ:
            raise SystemExit(f"error: {path} records other settings ({'; '.join(differ)}). Runs of different "
                             "settings are never mixed: rerun with the arguments it records to resume it, or pass "
                             "another --out")
        return
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} is not empty and has no settings.json, so it is no benchmark of this "
                         "script to resume; pass another --out")
    out.mkdir(parents=True, exist_ok=True)
    _write(path, json.dumps({**settings, "command": shlex.join(sys.argv)}, indent=2))


def write_results(out: Path, settings: dict) -> str:
    """Read every finished run, write results.json and table.md, return the table."""
    rows = collected(out, settings)
    text = table(rows, settings, out)
    results = {"settings": settings, "summary": summarize(rows, [*settings["recipes"], *BASELINES]),
               "claims": judged_claims(rows), "controls": judged_claims(rows, CONTROLS), "runs": rows}
    _write(out / "results.json", json.dumps(results, indent=2))
    _write(out / "table.md", text + "\n")
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS), choices=list(CONCEPTS))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=8, help="images drawn per method and run for the judge")
    parser.add_argument("--out", type=Path, default=Path("outputs/toyworld-benchmark"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--table-only", action="store_true",
                        help="only (re)write table.md and results.json from the runs in --out, finished or not")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. model.epochs=20")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.table_only:
        path = args.out / "settings.json"
        if not path.is_file():
            raise SystemExit(f"error: {path} not found: {args.out} holds no benchmark")
        print(write_results(args.out, json.loads(path.read_text())))
        return
    if DEFAULT_RECIPE not in args.recipes:
        parser.error(f"--recipes must include {DEFAULT_RECIPE}: every comparison is against it")
    if len(set(args.seeds)) != len(args.seeds) or args.images < 1:
        parser.error("--seeds must differ from each other and --images be at least 1")
    from tqdm.auto import tqdm

    from yochameleon.model.tiny import default_cache_dir
    from yochameleon.toyworld.build import ensure_toyworld_checkpoint

    cache_dir = args.cache_dir or default_cache_dir()
    settings = {"concepts": args.concepts, "recipes": args.recipes, "seeds": args.seeds, "images": args.images,
                "overrides": args.overrides, "backbone": ensure_toyworld_checkpoint(cache_dir).name}
    check_settings(args.out, settings)
    runs = [(c, s, m) for c in args.concepts for s in args.seeds for m in [*args.recipes, *BASELINES]]
    todo = [r for r in runs if not (run_path(args.out, *r) / "benchmark.json").is_file()]
    if len(todo) < len(runs):
        print(f"{args.out}: {len(runs) - len(todo)} of {len(runs)} runs already done, running the other {len(todo)}")
    with tqdm(total=len(runs), initial=len(runs) - len(todo), desc="benchmark runs") as bar:
        for concept, seed, method in todo:
            bar.set_postfix_str(f"{concept} seed {seed} {method}")
            run_one(concept, method, seed, args.out, cache_dir, args.images, args.overrides)
            write_results(args.out, settings)  # table.md follows the benchmark as it goes
            bar.update(1)
    print(write_results(args.out, settings))


if __name__ == "__main__":
    main()
