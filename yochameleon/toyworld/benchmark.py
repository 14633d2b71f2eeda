"""The 3S recipes on toy concepts, on a CPU: does personalization learn, and which recipe learns best?

    python -m yochameleon.toyworld.benchmark [--concepts bo mam pip] [--recipes yochameleon shared-tokens ...]

For each (concept, recipe) it runs the normal training (`yochameleon.train`'s code with
`+concept=toy-<name> recipe=<recipe>`), then measures on the trained adapter:

- test recognition, weighted accuracy (the concept's 40 test renders vs 80 test negatives, a
  third of them look-alikes), and the AUROC of P(Yes) over the same images (does the adapter
  rank the concept above the rest, whatever the Yes/No threshold), scored once at the end of the
  run (its validation split chose best/; these figures are the final adapter's);
- text-only QA: "What colour / pattern / shape is <name>?" with no image, scored against the
  concept's true attributes: the highest logit among the attribute's values after the
  understanding tokens, in the training wordings and in held-out ones (checks.HELDOUT_QUESTIONS, two
  per attribute). What the adapter was taught is the backbone's own answers about the 5
  photos (generated conversations, category `toy`), which can be wrong (the shape most often);
- generation faithfulness: images drawn for "A photo of <name>." judged by the world's
  attribute classifier (shape, colour and pattern all right).

Prints a markdown table (means over concepts) and writes it with every figure to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from yochameleon.data.concept import parse_text_checks
from yochameleon.metrics.options import score_text_checks
from yochameleon.toyworld import world
from yochameleon.toyworld.checks import text_checks
from yochameleon.toyworld.concepts import CONCEPTS

RECIPES = ("yochameleon", "shared-tokens", "understanding-only", "generation-only", "no-soft-positive",
           "no-self-prompting")


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


def generation(pm, name: str, judge, n: int, seed: int) -> dict:
    """Fraction of drawn images whose shape, colour and pattern are all the concept's."""
    images = pm.generate_images(f"A photo of <{name}>.", n=n, temperature=0.7, seed=seed, batch_size=n)
    verdicts = judge.predict(images)
    thing = CONCEPTS[name]
    right = [{a: v[a] == getattr(thing, a) for a in world.ATTRIBUTES} for v in verdicts]
    out = {"generation": sum(all(r.values()) for r in right) / n}
    out.update({f"generation_{a}": sum(r[a] for r in right) / n for a in world.ATTRIBUTES})
    return out, images


def run_one(concept: str, recipe: str, seed: int, out: Path, cache_dir: Path, n_images: int,
            extra: list[str]) -> dict:
    """Train one adapter and measure it."""
    from hydra import compose, initialize_config_dir

    from yochameleon.config import CONFIG_DIR, register_resolvers
    from yochameleon.inference import PersonalizedModel
    from yochameleon.toyworld.judge import load_judge
    from yochameleon.training.recipe import train

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"+concept=toy-{concept}", f"recipe={recipe}", f"seed={seed}",
                                          "logger=none", f"cache_dir={cache_dir}", "trainer.progress=false",
                                          "trainer.sample_images=false", *extra])
    run_dir = out / concept / recipe
    started = time.perf_counter()
    summary = train(cfg, run_dir)
    figures = {"concept": concept, "recipe": recipe, "seed": seed, "steps": summary["steps"],
               "train_seconds": round(time.perf_counter() - started, 1),
               "recognition": summary["final"]["eval/recognition/weighted"],
               "recognition_positive": summary["final"]["eval/recognition/positive"],
               "recognition_negative": summary["final"]["eval/recognition/negative"],
               "recognition_auroc": summary["final"]["eval/recognition/auroc"]}
    pm = PersonalizedModel.load(run_dir / "adapter", device="cpu", cache_dir=cache_dir)
    figures.update(text_qa(pm, concept))
    # Measured for every recipe, also those that never train generation (their g-tokens are untrained).
    scores, images = generation(pm, concept, load_judge(pm.backbone.path), n_images, seed)
    figures.update(scores)
    for index, image in enumerate(images):
        image.save(run_dir / f"generated_{index}.png")
    (run_dir / "benchmark.json").write_text(json.dumps(figures, indent=2))
    return figures


def table(rows: list[dict]) -> str:
    """Means over concepts per recipe."""
    columns = ("recognition", "recognition_auroc", "text_qa", "text_qa_heldout", "generation", "generation_colour",
               "generation_shape", "generation_pattern")
    lines = ["| recipe | concepts | test recognition | recognition AUROC | text QA (training wordings) | "
             "text QA (held-out wordings) | generation (all 3 right) | colour | shape | pattern |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == recipe]
        means = [sum(r[c] for r in mine) / len(mine) for c in columns]
        lines.append(f"| {recipe} | {len(mine)} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    from yochameleon.model.tiny import default_cache_dir
    from yochameleon.toyworld.build import ensure_toyworld_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=["bo", "mam", "pip"], choices=sorted(CONCEPTS))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=8, help="images drawn per adapter for the judge")
    parser.add_argument("--out", type=Path, default=Path("outputs/toyworld-benchmark"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run, e.g. model.epochs=20")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    cache_dir = args.cache_dir or default_cache_dir()
    ensure_toyworld_checkpoint(cache_dir)
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"error: {args.out} is not empty; pass another --out (runs are never overwritten)")
    rows = []
    from tqdm.auto import tqdm

    for concept in tqdm(args.concepts, desc="concepts"):
        for recipe in args.recipes:
            rows.append(run_one(concept, recipe, args.seed, args.out, cache_dir, args.images, args.overrides))
    text = table(rows)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    (args.out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
