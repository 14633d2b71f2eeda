"""Zero-shot concepts against the other ways to introduce a subject, on the toy concepts' own splits.

    python benchmarks/encoder_zero_shot.py --encoder yochameleon/assets/toyworld/encoder \\
        [--adapters outputs] [--concepts bo mam pip zuzu kiki] [--out DIR]

For each toy concept (whose identity the shipped encoder never trained on: they are test identities,
`toyworld/identities.py`), the same images and questions as per-concept training's test split: its 40
`test_many` renders against 80 `test_negatives_many` (a third look-alikes sharing two of its three
attributes), and its text checks in the training and held-out wordings. Methods:

- `encoder-1`, `encoder-5`: the concept encoded from its first 1 / 5 training renders (no training);
- `reference_photos-1`, `reference_photos-5`: the same renders shown in the prompt ("Photos of bo: ...");
- `adapter`: the per-concept trained adapter (the upper bound), when `--adapters` holds
  `<root>/<concept>/<run>/best` or `adapter` (the runs of `python -m yochameleon.train +concept=toy-<name>`);
- `description`: the concept's written definition ("bo is an orange striped heart."): privileged text;
- `plain`: the bare name.

Per method: mean recognition AUROC and weighted accuracy, text QA in both wordings, seconds to add the
concept (encoding; 0 for prompting), the prompt tokens its introduction costs, and "A photo of <sks>." drawn
`--images` times (seed 0, the backbone's recorded sampling) and read by the world's judge: the share with
shape, colour and pattern all right (`drawn`; not for reference_photos, whose prompt holds the photos). Printed as a table and
written to `<out>/zero_shot.json`. An application of the library: it stops with a one-line error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `evaluation` beside the package, as `python -m evaluation.run` finds it
    sys.path.insert(0, str(REPO))

TOY_CONCEPTS = ("bo", "mam", "pip", "zuzu", "kiki")
COLUMNS = ("auroc", "weighted", "text_qa", "text_qa_heldout", "drawn", "seconds", "prompt_tokens")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/encoder_zero_shot.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", required=True, help="a trained concept encoder directory")
    parser.add_argument("--adapters", default=None, help="runs root holding <concept>/<run>/best (trained upper bound)")
    parser.add_argument("--concepts", nargs="+", default=list(TOY_CONCEPTS))
    parser.add_argument("--out", default=None, help="folder for zero_shot.json (default: print only)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=8, help="drawings per concept and method, judged (0: none)")
    return parser.parse_args(argv)


def trained_adapter(root: Path, name: str) -> Path | None:
    """The newest `best/` (else `adapter/`) under <root>/<name>/<run>/."""
    runs = sorted((root / name).glob("*/best/adapter_config.json")) or sorted(
        (root / name).glob("*/adapter/adapter_config.json"))
    return max(runs, key=lambda p: p.stat().st_mtime).parent if runs else None


def methods_for(name: str, backbone, zero_shot, cache, train: list[str], adapter_dir):
    """(method, introduce) pairs for one concept: introduce() -> (model, builder, seconds)."""
    from evaluation.methods import baseline_method
    from yochameleon.concept.adapter import load_adapter, read_adapter_config
    from yochameleon.data.samples import SampleBuilder
    from yochameleon.model.personalized import PersonalizedChameleon
    from yochameleon.toyworld.concepts import CONCEPTS

    def encoded(n):
        def introduce():
            started = time.perf_counter()
            tokens = zero_shot.encode(name, train[:n])
            seconds = time.perf_counter() - started
            builder = SampleBuilder(backbone, tokens, cache, bool((zero_shot.config.recipe or {}).get(
                "self_prompting", True)))
            return PersonalizedChameleon(backbone.model, [tokens]).eval(), builder, seconds
        return introduce

    def baseline(kind, photos=()):
        def introduce():
            method = baseline_method(kind, backbone, {name: name}, {name: CONCEPTS[name].short()}, {name: photos})
            return method.model, method.builder(name), 0.0
        return introduce

    def adapter():
        config = read_adapter_config(adapter_dir)
        tokens = load_adapter(config, backbone)
        return (PersonalizedChameleon(backbone.model, [tokens]).eval(),
                SampleBuilder(backbone, tokens, cache, config.self_prompting), 0.0)

    out = [("encoder-1", encoded(1)), ("encoder-5", encoded(5)),
           ("reference_photos-1", baseline("reference_photos", train[:1])),
           ("reference_photos-5", baseline("reference_photos", train[:5])),
           ("description", baseline("description")), ("plain", baseline("plain"))]
    return out + ([("adapter", adapter)] if adapter_dir else [])


def drawn_right(model, builder, name: str, count: int) -> float:
    """The share of `count` drawings of "A photo of <sks>." the toy world's judge reads all three right."""
    from yochameleon.training.drawing import draw_images, judge_figures, judge_toy_samples

    backbone = builder.backbone
    images = draw_images(model, builder, backbone.sampling(), 0, count)
    concept = SimpleNamespace(name=name, category="toy")  # what a toy concept's config says of it
    return judge_figures(judge_toy_samples(backbone.path, concept, images))["all_right"]


def run(args) -> dict:
    from yochameleon.concept.encoder import ZeroShot, load_encoder
    from yochameleon.data.concept import parse_text_checks
    from yochameleon.data.vq_cache import VQCodeCache
    from yochameleon.metrics.zero_shot import introduced_scores, mean_scores
    from yochameleon.model.load import load_backbone
    from yochameleon.sources import recorded_source, resolve_source
    from yochameleon.tiny.chameleon import default_cache_dir
    from yochameleon.toyworld.checks import text_checks
    from yochameleon.toyworld.concepts import concept_dir
    from yochameleon.concept.encoder import encoder_record

    record = encoder_record(args.encoder).base_model
    backbone = load_backbone(resolve_source(recorded_source(record.record), None, record.get("path")),
                             name=record.name)
    zero_shot = ZeroShot(load_encoder(args.encoder, backbone), backbone, VQCodeCache(backbone, default_cache_dir() / "vq"))
    cache = zero_shot.features.cache
    results: dict[str, dict] = {}
    for name in args.concepts:
        train = [str(p) for p in sorted(concept_dir(name, "train").glob("*.png"))]
        positives = [str(p) for p in sorted(concept_dir(name, "test_many").glob("*.png"))]
        negatives = [str(p) for p in sorted(concept_dir(name, "test_negatives_many").glob("*.png"))]
        checks = parse_text_checks(name, text_checks(name))
        adapter_dir = trained_adapter(Path(args.adapters), name) if args.adapters else None
        for method, introduce in methods_for(name, backbone, zero_shot, cache, train, adapter_dir):
            model, builder, seconds = introduce()
            scores = introduced_scores(model, builder, positives, negatives, checks, args.batch_size)
            if args.images and not method.startswith("reference_photos"):
                scores["drawn"] = drawn_right(model, builder, name, args.images)
            results.setdefault(method, {})[name] = scores | {"seconds": seconds}
            print(f"{name:5s} {method:20s} AUROC {scores['auroc']:.3f} weighted {scores['weighted']:.3f} "
                  f"text QA {scores.get('text_qa', float('nan')):.3f} / {scores.get('text_qa_heldout', float('nan')):.3f}",
                  flush=True)
    return {method: mean_scores(per) for method, per in results.items()}


def table(summary: dict) -> str:
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for method, scores in summary.items():
        lines.append(f"| {method} | " + " | ".join(f"{scores.get(c, float('nan')):.3f}" for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from yochameleon.errors import YoChameleonError

    try:
        summary = run(args)
    except YoChameleonError as err:
        raise SystemExit(f"error: {err}") from err
    print(table(summary))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "zero_shot.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
