"""Toy concepts: a specific thing the backbone has never been told about, rendered into splits.

`${toyworld:bo,train}` in a concept config (see `yochameleon.config`) is `concept_dir("bo", "train")`.
The renders are cached under `toyworld/concepts/<world version>/<concept>/<split>/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from yochameleon.toyworld import world
from yochameleon.toyworld.spec import cache_root

CONCEPTS = {
    "bo": world.Thing("heart", "orange", "striped"),
    "mam": world.Thing("star", "blue", "dotted"),
    "pip": world.Thing("circle", "purple", "striped"),
    "zuzu": world.Thing("diamond", "pink", "dotted"),
    "kiki": world.Thing("triangle", "green", "solid"),
}
# Validation concepts: five more, made the same way from identities of the concept encoder's validation split
# (`identities.identity_splits()["val"]`; never a test identity), one of each other shape and the test concepts'
# mix of patterns. What is chosen on concepts (a recipe default, a setting, a stopping rule) is chosen on these;
# CONCEPTS above are the test concepts, read once for reporting (benchmarks/toy_recipes.py --concepts).
VALIDATION_CONCEPTS = {
    "dax": world.Thing("circle", "orange", "striped"),
    "blick": world.Thing("triangle", "yellow", "striped"),
    "wug": world.Thing("heart", "red", "dotted"),
    "fep": world.Thing("square", "pink", "dotted"),
    "tupa": world.Thing("star", "orange", "solid"),
}


def thing_of(name: str) -> world.Thing:
    """The thing toy concept <name> is, test concept or validation concept; KeyError naming the known ones."""
    if name in CONCEPTS:
        return CONCEPTS[name]
    if name in VALIDATION_CONCEPTS:
        return VALIDATION_CONCEPTS[name]
    raise KeyError(f"unknown toy concept {name!r}; known: {', '.join(sorted(CONCEPTS))} (test), "
                   f"{', '.join(sorted(VALIDATION_CONCEPTS))} (validation)")

# The concept configs train on `train` (5 renders), choose (best/, defaults) on `val` x `val_negatives`
# and report on `test_many` x `test_negatives_many` (40 x 80 each: with 10 x 20 an AUROC moved by
# 0.1 between neighbouring evaluations). Every split has its own seed stream (`<name>:<split>`).
# `test`, `test_negatives` and `train_many` stay for quick looks and experiments past 5 photos
# (e.g. concept.photos='${toyworld:bo,train_many}').
CONCEPT_SPLITS = {"train": 5, "train_many": 40, "test": 10, "test_many": 40, "negatives": 120, "test_negatives": 20,
                  "test_negatives_many": 80, "val": 40, "val_negatives": 80}
POSITIVE_SPLITS = ("train", "val", "test")  # (and their *_many versions) show the concept


def concept_scenes(name: str, split: str) -> list[world.Scene]:
    """The scenes of one split of a toy concept (deterministic).

    train/val/test (and their *_many versions) show the concept (val and test in positions, sizes and backgrounds
    drawn from their own streams, a third of them next to a second thing); negatives, val_negatives and
    test_negatives never do: a third are look-alikes sharing two of its three attributes, the rest are the world.
    """
    thing = thing_of(name)
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
    target = cache_root(cache_dir) / "toyworld" / "concepts" / render_key(name, split) / name / split
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
    """A short hash of the world's drawing code."""
    return hashlib.sha256(Path(world.__file__).read_bytes()).hexdigest()[:10]


def render_key(name: str, split: str) -> str:
    """Everything that decides a split's renders: the world's drawing code, this module's code (which scenes
    a split holds), the concept's thing and the split's size. Change any one and the split is redrawn."""
    blob = json.dumps({"world": world_version(), "scenes": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
                       "thing": repr(thing_of(name)), "size": CONCEPT_SPLITS[split], "positive": POSITIVE_SPLITS},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]

