"""The toy world's identities as a concept-encoder dataset: one folder per (shape, colour, pattern), 144 in all.

`${toyworld_identities:}` in conf/encoder_data/toyworld.yaml is `identities_root()`: rendered into the cache once.
Each folder holds `RENDERS` single-thing renders of one identity (random size, position, background) and
`checks.json`, its attribute questions in held-out wordings (`checks.thing_checks`), and `qa.json`, the world's
answers to them in the training wordings (what the encoder learns text QA from, `data.folder_qa`). `splits.json` holds 24
test identities (the 5 toy concepts' own among them, so the encoder never trains on <bo>'s identity) and 24
validation identities, drawn with a fixed seed; the other 96 train the encoder.
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
from yochameleon.toyworld.concepts import CONCEPTS
from yochameleon.toyworld.spec import cache_root

RENDERS = 12  # per identity: up to 5 to encode from, the rest to recognize and draw
HELD_OUT = 24  # identities in each of the val and test splits
SEED = 0


def identity_name(thing: world.Thing) -> str:
    return f"{thing.shape}-{thing.colour}-{thing.pattern}"


def all_identities() -> list[world.Thing]:
    return [world.Thing(s, c, p) for s in world.SHAPES for c in world.COLOURS for p in world.PATTERNS]


def identity_splits() -> dict[str, list[str]]:
    """val / test identity names: the 5 toy concepts' identities are test identities; the rest drawn with SEED."""
    names = [identity_name(t) for t in all_identities()]
    concepts = sorted(identity_name(t) for t in CONCEPTS.values())
    rest = [n for n in names if n not in concepts]
    random.Random(SEED).shuffle(rest)
    test = sorted(concepts + rest[:HELD_OUT - len(concepts)])
    val = sorted(rest[HELD_OUT - len(concepts):2 * HELD_OUT - len(concepts)])
    return {"val": val, "test": test}


def identity_qa(thing: world.Thing) -> list[dict]:
    """The identity's text QA to learn from: each attribute asked in its training wording, answered with the value
    first (as the backbone answers, and as text QA is scored: the first token among the attribute's values)."""
    return [{"question": question, "answer": f"{getattr(thing, attribute)}."}
            for attribute, (question, _) in world.CONCEPT_QUESTIONS.items()]


def identity_scenes(thing: world.Thing) -> list[world.Scene]:
    rng = random.Random(f"identity:{identity_name(thing)}")
    return [world.random_scene(rng, two_things=0.0, must_include=thing) for _ in range(RENDERS)]


def _key() -> str:
    """Everything that decides the renders: the world's drawing code, this module's code, the sizes."""
    blob = json.dumps({"world": hashlib.sha256(Path(world.__file__).read_bytes()).hexdigest(),
                       "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
                       "renders": RENDERS, "held_out": HELD_OUT, "seed": SEED}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def identities_root(cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Render every identity's folder into the cache once (about 10 s) and return the root."""
    from tqdm.auto import tqdm

    from yochameleon.toyworld.checks import thing_checks

    target = cache_root(cache_dir) / "toyworld" / "identities" / _key()
    if (target / "splits.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".identities-", dir=target.parent))
    try:
        for thing in tqdm(all_identities(), desc="render toy identities", disable=not progress):
            folder = staging / identity_name(thing)
            folder.mkdir()
            for index, scene in enumerate(identity_scenes(thing)):
                world.render(scene).save(folder / f"{index:03d}.png")
            (folder / "checks.json").write_text(json.dumps(thing_checks(thing), indent=1))
            (folder / "qa.json").write_text(json.dumps(identity_qa(thing), indent=1))
        (staging / "splits.json").write_text(json.dumps(identity_splits(), indent=1))
        os.replace(staging, target)
    except OSError:
        if not (target / "splits.json").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
