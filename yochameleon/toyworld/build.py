"""The cached toy-world backbone and toy concepts.

    python -m yochameleon.toyworld.build        (= make toyworld; prints the knowledge report)

The backbone is pretrained once per (spec, code) and kept in the cache under
`models/toyworld-<key>`; concepts are rendered into `toyworld/<key>/<concept>/`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from yochameleon.toyworld import world

log = logging.getLogger(__name__)

JUDGE_FILE = "toyworld_judge.safetensors"
KNOWLEDGE_FILE = "toyworld_knowledge.json"

# Toy concepts: a specific thing (shape, colour, pattern) the backbone has never been told about.
CONCEPTS = {
    "bo": world.Thing("heart", "orange", "striped"),
    "mam": world.Thing("star", "blue", "dotted"),
    "pip": world.Thing("circle", "purple", "striped"),
    "zuzu": world.Thing("diamond", "pink", "dotted"),
    "kiki": world.Thing("triangle", "green", "solid"),
}
# The concept configs train on `train` (5 renders), choose (best/, defaults) on `val` x `val_negatives`
# and report on `test_many` x `test_negatives_many` (40 x 80 each: with 10 x 20 an AUROC moved by
# 0.1 between neighbouring evaluations). Every split has its own seed stream (`<name>:<split>`).
# `test`, `test_negatives` and `train_many` stay for quick looks and experiments past 5 photos
# (e.g. concept.photos='${toyworld:bo,train_many}').
CONCEPT_SPLITS = {"train": 5, "train_many": 40, "test": 10, "test_many": 40, "negatives": 120, "test_negatives": 20,
                  "test_negatives_many": 80, "val": 40, "val_negatives": 80}
POSITIVE_SPLITS = ("train", "val", "test")  # (and their *_many versions) show the concept


def _cache_root(cache_dir: str | Path | None) -> Path:
    from yochameleon.model.tiny import default_cache_dir

    return Path(cache_dir or default_cache_dir())


def toyworld_dir(cache_dir: str | Path | None = None, spec: dict | None = None) -> Path:
    from yochameleon.toyworld.pretrain import TOY_SPEC, spec_key

    return _cache_root(cache_dir) / "models" / f"toyworld-{spec_key({**TOY_SPEC, **(spec or {})})}"


def ensure_toyworld_checkpoint(cache_dir: str | Path | None = None, spec: dict | None = None,
                               show_progress: bool = True) -> Path:
    """The cached toy backbone: unpacked from the shipped weights, or pretrained on first use."""
    from yochameleon.toyworld.pretrain import build_toyworld_checkpoint
    from yochameleon.toyworld.ship import packed_key, unpack

    target = toyworld_dir(cache_dir, spec)
    if not (target / "config.json").exists() and packed_key() == target.name.removeprefix("toyworld-"):
        log.info("unpacking the shipped toy-world backbone into %s", target)
        unpack(target)
    if not (target / "config.json").exists():
        log.warning("pretraining the toy-world backbone into %s (once, about 40 minutes on 2 CPU cores; "
                    "cached afterwards)", target)
        build_toyworld_checkpoint(target, spec, show_progress=show_progress)
    return target


def load_judge(path: str | Path):
    """The attribute classifier saved next to a toy backbone."""
    from safetensors.torch import load_file

    from yochameleon.toyworld.judge import AttributeJudge

    judge = AttributeJudge()
    judge.load_state_dict(load_file(str(Path(path) / JUDGE_FILE)))
    return judge.eval()


# ---- toy concepts -----------------------------------------------------------------------------------
def concept_scenes(name: str, split: str) -> list[world.Scene]:
    """The scenes of one split of a toy concept (deterministic).

    train/val/test (and their *_many versions) show the concept (val and test in positions, sizes and backgrounds
    drawn from their own streams, a third of them next to a second thing); negatives, val_negatives and
    test_negatives never do: a third are look-alikes sharing two of its three attributes, the rest are the world.
    """
    if name not in CONCEPTS:
        raise KeyError(f"unknown toy concept {name!r}; known: {', '.join(sorted(CONCEPTS))}")
    thing = CONCEPTS[name]
    rng = random.Random(f"{name}:{split}")
    scenes = []
    while len(scenes) < CONCEPT_SPLITS[split]:
        base = split.removesuffix("_many")
        if base in POSITIVE_SPLITS:
            scenes.append(world.random_scene(rng, two_things=0.0 if base == "train" else 0.3, must_include=thing))
            continue
        if len(scenes) % 3 == 0:
            scene = world.random_scene(rng, two_things=0.0, must_include=world.look_alike(thing, rng))
        else:
            scene = world.random_scene(rng)
        if all(t.identity != thing.identity for t in scene.things):
            scenes.append(scene)
    return scenes


def concept_dir(name: str, split: str, cache_dir: str | Path | None = None) -> Path:
    """Render a toy concept's split into the cache once and return the folder."""
    target = _cache_root(cache_dir) / "toyworld" / "concepts" / world_version() / name / split
    if target.is_dir() and any(target.iterdir()):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{split}-", dir=target.parent))
    try:
        for index, scene in enumerate(concept_scenes(name, split)):
            world.render(scene).save(staging / f"{index:03d}.png")
        (staging / "captions.json").write_text(json.dumps(
            {f"{i:03d}.png": s.caption() for i, s in enumerate(concept_scenes(name, split))}, indent=1))
        os.replace(staging, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def world_version() -> str:
    """A short hash of the world's drawing code: concept renders are redrawn when it changes."""
    import hashlib

    return hashlib.sha256(Path(world.__file__).read_bytes()).hexdigest()[:10]


def concept_thing(name: str) -> world.Thing:
    """The attributes of a toy concept (what its text questions should be answered with)."""
    return replace(CONCEPTS[name])


def main(argv=None) -> None:
    from yochameleon.model.backbone import load_backbone
    from yochameleon.toyworld.knowledge import knowledge_report

    parser = argparse.ArgumentParser(description="Pretrain (once) and report the toy-world backbone.")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--n", type=int, default=60, help="held-out cases per knowledge figure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = ensure_toyworld_checkpoint(args.cache_dir)
    report_file = path / KNOWLEDGE_FILE
    if not report_file.exists():
        backbone = load_backbone(path, name="toyworld")
        report = knowledge_report(backbone, load_judge(path), n=args.n)
        build = json.loads((path / "toyworld_build.json").read_text())
        report_file.write_text(json.dumps({**build, **report}, indent=2))
    print(f"toy-world backbone: {path}")
    print(report_file.read_text())


if __name__ == "__main__":
    main()
