"""The 3S recipes on toy concepts, on a CPU: which recipe learns best, with confidence intervals?

    python benchmarks/toy_recipes.py [--concepts bo mam pip zuzu kiki] [--recipes yochameleon ...]
        [--seeds 0 1 2] [--images 8] --out DIR [hydra overrides ...]
    python benchmarks/toy_recipes.py --out DIR --table-only

For each concept and seed it runs every recipe through the normal training (`yochameleon.train`'s
code with `+concept=toy-<name> recipe=<recipe> seed=<seed>`) and two prompting baselines on the
plain backbone (`evaluation.methods.baseline_method`): `baseline-description`, the concept's literal
definition as the prompt prefix ("<reserved16200> is an orange striped heart.", the form the toy
backbone was pretrained on), and `baseline-plain`, the bare name token. Each run is measured the same way:

- test recognition, weighted accuracy (the concept's 40 test renders vs 80 test negatives, a
  third of them look-alikes), and the AUROC of P(Yes) over the same images, by the training's own
  `recognition_metrics` (a recipe's: the adapter the run tells a user to use, best/ as the concept's
  validation split chose it, scored once at the end of its run; the last step's adapter/ on the same split is
  kept as `final_*`);
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
and written to `<out>/table.md`, with every figure in `<out>/results.json`. The statistics live in
`paired_statistics.py`, the methods, claims and table in `toy_report.py`, beside this file.

An application of the library, not part of it: it stops with `SystemExit` and a one-line error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from toy_report import BASELINES, CONTROLS, DEFAULT_RECIPE, RECIPES, judged_claims, summarize, table  # noqa: E402

from yochameleon.data import templates  # noqa: E402
from yochameleon.inference import PersonalizedModel  # noqa: E402
from yochameleon.toyworld import world  # noqa: E402
from yochameleon.toyworld.checks import score_text_qa, text_qa  # noqa: E402
from yochameleon.toyworld.concepts import CONCEPTS, VALIDATION_CONCEPTS, thing_of  # noqa: E402

log = logging.getLogger("benchmarks.toy_recipes")

GENERATION_PROMPT = templates.GENERATION_PROMPTS[0]  # "A photo of <sks>."
RECOGNITION = {"recognition": "weighted", "recognition_auroc": "auroc", "recognition_positive": "positive",
               "recognition_negative": "negative"}  # benchmark.json key -> recognition_metrics' name
SETTINGS = ("concepts", "recipes", "seeds", "images", "overrides", "backbone")  # must match to add runs to an --out


# ---- measuring one run ----------------------------------------------------------------------------
class PromptedBackbone(PersonalizedModel):
    """A prompting baseline behind `PersonalizedModel.generate_images`: its images are drawn by the same
    code, with the same default sampling, as an adapter's; only the prompt ids are the baseline's."""

    def __init__(self, backbone, builder):
        super().__init__(backbone, [], {}, {})
        self.baseline_builder = builder

    def image_prompts(self, prompt: str, concept: str | None = None, concepts=None) -> tuple[list[int], list[int]]:
        cond = self.baseline_builder.image_prompt_ids(prompt)
        return cond, self.baseline_builder.unconditional_image_prompt_ids(cond)


def generation(pm, name: str, judge, n: int, seed: int, **sampling) -> tuple[dict, list]:
    """Images for "A photo of <sks>." at `pm.generate_images`' default sampling (or the `sampling` settings given:
    temperature, top_k, top_p, guidance_scale); fractions the judge reads right."""
    images = pm.generate_images(GENERATION_PROMPT, n=n, seed=seed, **sampling)
    verdicts = judge.predict(images)
    thing = thing_of(name)
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


def compose_train(overrides: list[str]):
    """The training config as `python -m yochameleon.train <overrides>` composes it."""
    from hydra import compose, initialize_config_dir

    from yochameleon.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def compose_run(concept: str, recipe: str, seed: int, cache_dir: Path, extra: list[str]):
    """The training config of one run (the baselines read the same concept, model and splits from it)."""
    return compose_train([f"+concept=toy-{concept}", f"recipe={recipe}", f"seed={seed}", "logger=none",
                          f"cache_dir={cache_dir}", "trainer.progress=false", "trainer.sample_images=false", *extra])


def run_recipe(concept: str, recipe: str, seed: int, run_dir: Path, cache_dir: Path, n_images: int,
               extra: list[str]) -> tuple[dict, list]:
    """Train one adapter and measure the one the run tells a user to use: best/ as its validation split chose it
    (understanding rows by recognition, g-token rows by the generation NLL), else the last step's adapter/. Its
    test recognition is the training's own end-of-run score; the last step's adapter/ is scored on the same split
    beside it (`final_*`), to show what choosing on validation changed."""
    from evaluation.methods import adapter_method
    from yochameleon.toyworld.judge import load_judge
    from yochameleon.training.recipe import train

    cfg = compose_run(concept, recipe, seed, cache_dir, extra)
    started = time.perf_counter()
    summary = train(cfg, run_dir)
    train_seconds = round(time.perf_counter() - started, 1)
    chosen = Path(summary["scored_adapter"])  # best/, what the end-of-run scores in summary["final"] are of
    last = PersonalizedModel.load(summary["adapter"], device="cpu", cache_dir=cache_dir)
    last_builder = adapter_method(last, {concept: concept}).builder(concept)  # reads the split's files; no VQ cache
    figures = {"adapter": chosen.name, "steps": summary["steps"], "train_seconds": train_seconds,
               **{key: summary["final"][f"eval/recognition/{part}"] for key, part in RECOGNITION.items()},
               **{f"final_{key}": value for key, value in recognition_on_test(last.model, last_builder, cfg).items()}}
    del last, last_builder
    pm = PersonalizedModel.load(chosen, device="cpu", cache_dir=cache_dir)
    figures.update(validation_figures(run_dir))
    figures.update(text_qa(pm, concept))
    # Measured for every recipe, also those that never train generation (their g-tokens are untrained).
    scores, images = generation(pm, concept, load_judge(pm.backbone.path), n_images, seed)
    return figures | scores, images


def baseline_on_backbone(concept: str, kind: str, seed: int, cache_dir: Path, extra: list[str]):
    """The prompting baseline `kind` on the plain backbone, composed as the recipes' runs are:
    (cfg, backbone, method, builder)."""
    from yochameleon.data.concept import ConceptData
    from yochameleon.sources import load_configured_backbone

    cfg = compose_run(concept, DEFAULT_RECIPE, seed, cache_dir, extra)
    backbone = load_configured_backbone(cfg.model, cfg.cache_dir, "cpu")
    method = baseline(kind, backbone, concept, ConceptData.from_config(cfg.concept).description)
    return cfg, backbone, method, method.builder(concept)


def run_baseline(concept: str, kind: str, seed: int, cache_dir: Path, n_images: int, extra: list[str]
                 ) -> tuple[dict, list]:
    """Measure a prompting baseline on the plain backbone, on the recipes' splits, with the recipes' code."""
    from yochameleon.toyworld.judge import load_judge

    cfg, backbone, method, builder = baseline_on_backbone(concept, kind, seed, cache_dir, extra)
    figures = {"steps": None, "train_seconds": None, **recognition_on_test(method.model, builder, cfg),
               "prefix": backbone.tokenizer.decode(builder.prefix_ids())}
    figures.update(score_text_qa(method.model, builder, concept))
    scores, images = generation(PromptedBackbone(backbone, builder), concept, load_judge(backbone.path), n_images, seed)
    return figures | scores, images


def recognition_on_test(model, builder, cfg) -> dict:
    """Recognition on the concept's test split, under benchmark.json's keys: a recipe's and a baseline's alike."""
    from yochameleon.data.concept import ConceptData
    from yochameleon.metrics.recognition import recognition_metrics

    split = ConceptData.from_config(cfg.concept).test_split()
    test = recognition_metrics(model, builder, split, int(cfg.trainer.eval_batch_size), "test")
    return {key: test[f"test/recognition/{part}"] for key, part in RECOGNITION.items()}


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
    """The finished runs in `out` that the settings ask for (a recipe's validation figures read from its run
    folder where its benchmark.json predates them)."""
    rows = []
    for concept in settings["concepts"]:
        for seed in settings["seeds"]:
            for method in [*settings["recipes"], *BASELINES]:
                path = run_path(out, concept, seed, method) / "benchmark.json"
                if path.is_file():
                    row = json.loads(path.read_text())
                    if row.get("kind") == "recipe" and "val_recognition" not in row:
                        row |= validation_figures(path.parent)
                    rows.append(row)
    return rows


def validation_figures(run_dir: Path) -> dict:
    """What the concept's validation split read of the run's best/: weighted accuracy and AUROC at the step its
    understanding rows come from, the generation NLL of its g-token rows (None where nothing was chosen)."""
    figures = dict.fromkeys(("val_recognition", "val_recognition_auroc", "val_generation_nll"))
    config = run_dir / "best" / "adapter_config.json"
    if not config.is_file():
        return figures
    selection = json.loads(config.read_text()).get("selection") or {}
    understanding, generation = selection.get("understanding") or {}, selection.get("generation") or {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("step") == understanding.get("step") and record.get("eval/split") == "val":
            figures["val_recognition"] = record["eval/recognition/weighted"]
            figures["val_recognition_auroc"] = record["eval/recognition/auroc"]
            # One step's rows for every task (shared tokens): that step's NLL, when the recipe scores generation.
            figures["val_generation_nll"] = record.get("eval/generation/nll")
    if generation.get("metric") == "eval/generation/nll":  # g-token rows chosen on their own
        figures["val_generation_nll"] = generation["score"]
    return figures


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


# ---- the command --------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=list(CONCEPTS), choices=[*CONCEPTS, *VALIDATION_CONCEPTS],
                        help="the test concepts (default; read once, for reporting) or validation ones (dax blick wug "
                             "fep tupa: to choose a default on)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=32, help="images drawn per method and run for the judge (8 read the "
                        "default recipe 0.492 where 32 more of the same adapters read 0.406: few images are noise)")
    parser.add_argument("--out", type=Path, default=Path("outputs/toyworld-benchmark"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--table-only", action="store_true",
                        help="only (re)write table.md and results.json from the runs in --out, finished or not")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes running (concept, seed) pairs side by side, one thread each unless "
                             "OMP_NUM_THREADS is set (2 on 2 cores; more where an accelerator holds the work)")
    parser.add_argument("--shard", type=_shard, default=None, help=argparse.SUPPRESS)  # I/N: a worker's share
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. model.epochs=20")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a worker is started with
    if args.table_only:
        return args
    if DEFAULT_RECIPE not in args.recipes:
        parser.error(f"--recipes must include {DEFAULT_RECIPE}: every comparison is against it")
    if len(set(args.seeds)) != len(args.seeds) or args.images < 1 or args.workers < 1:
        parser.error("--seeds must differ from each other, --images and --workers be at least 1")
    if args.shard is not None:
        args.workers = 1
    return args


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r} is no I/N with I < N")
    return int(index), int(count)


def run_all(args: argparse.Namespace) -> str:
    """Every run the arguments ask for that `--out` has not finished (in `--workers` processes side by side),
    the table rewritten as runs finish; the table."""
    from yochameleon.tiny.chameleon import default_cache_dir
    from yochameleon.toyworld.build import ensure_toyworld_checkpoint

    cache_dir = args.cache_dir or default_cache_dir()
    settings = {"concepts": args.concepts, "recipes": args.recipes, "seeds": args.seeds, "images": args.images,
                "overrides": args.overrides, "backbone": ensure_toyworld_checkpoint(cache_dir).name}
    check_settings(args.out, settings)
    # Seed-major: a benchmark stopped early has every concept at its first seed before any at its second.
    pairs = [(c, s) for s in args.seeds for c in args.concepts]
    if args.shard is not None:  # one worker's share: whole (concept, seed) pairs, so no two write one preparation
        index, count = args.shard
        pairs = pairs[index::count]
    # The default recipe and the baselines first (quick, and what every comparison needs), then the controls.
    methods = [DEFAULT_RECIPE, *BASELINES, *(r for r in args.recipes if r != DEFAULT_RECIPE)]
    runs = [(c, s, m) for c, s in pairs for m in methods]
    todo = [r for r in runs if not (run_path(args.out, *r) / "benchmark.json").is_file()]
    if len(todo) < len(runs) and args.shard is None:
        print(f"{args.out}: {len(runs) - len(todo)} of {len(runs)} runs already done, running the other {len(todo)}")
    if args.workers > 1:
        run_workers(args, min(args.workers, len(pairs)), len(runs), len(runs) - len(todo))
    else:
        run_here(args, todo, len(runs), cache_dir, settings)
    if args.shard is not None:  # the table is the starting process's to write, once its workers are done
        return f"{args.out}: worker {args.shard[0]} of {args.shard[1]} done ({len(todo)} runs)"
    return write_results(args.out, settings)


def run_here(args: argparse.Namespace, todo: list, total: int, cache_dir: Path, settings: dict) -> None:
    """The runs of `todo` one after another in this process; a lone process rewrites the table after each."""
    from tqdm.auto import tqdm

    with tqdm(total=total, initial=total - len(todo), desc="benchmark runs", disable=args.shard is not None) as bar:
        for concept, seed, method in todo:
            bar.set_postfix_str(f"{concept} seed {seed} {method}")
            run_one(concept, method, seed, args.out, cache_dir, args.images, args.overrides)
            if args.shard is None:  # workers leave the table to the process that started them
                write_results(args.out, settings)
            bar.update(1)


def run_workers(args: argparse.Namespace, count: int, total: int, done: int) -> None:
    """`count` copies of this command, each given every N-th (concept, seed) pair (`--shard`) and one thread
    unless OMP_NUM_THREADS is set, each logging to `<out>/worker-<i>.log`; a bar counts the finished runs.
    Stopped (Ctrl-C, or an error here), it stops them too: the same command resumes what they left."""
    import subprocess

    from tqdm.auto import tqdm

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    workers = []
    try:
        for index in range(count):
            log_path = args.out / f"worker-{index}.log"
            command = [sys.executable, str(Path(__file__).resolve()), *args.argv, "--shard", f"{index}/{count}"]
            with log_path.open("a") as log_file:
                workers.append((subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env),
                                log_path))
        with tqdm(total=total, initial=done, desc=f"benchmark runs ({count} workers)") as bar:
            while any(w.poll() is None for w, _ in workers):
                time.sleep(5)
                bar.update(len(list(args.out.glob("*/seed-*/*/benchmark.json"))) - bar.n)
    finally:
        for worker, _ in workers:
            if worker.poll() is None:
                worker.terminate()
        for worker, _ in workers:
            worker.wait()
    failed = [str(path) for worker, path in workers if worker.returncode]
    if failed:
        raise SystemExit(f"error: {len(failed)} of {count} workers failed; see {', '.join(failed)}. The same "
                         "command resumes the runs they left")


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.table_only:
        path = args.out / "settings.json"
        if not path.is_file():
            raise SystemExit(f"error: {path} not found: {args.out} holds no benchmark")
        print(write_results(args.out, json.loads(path.read_text())))
        return
    print(run_all(args))


if __name__ == "__main__":
    main()
