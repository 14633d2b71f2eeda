"""The toy build's pretraining examples and build keys are pinned: restructuring pretrain.py changes neither."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
import torch

from yochameleon.toyworld import pretrain, spec

# Computed with pretrain.py as it was before it became a table of builders and stages (commit 18bb65e):
# 300 examples of each kind from one seeded stream, in a byte-level stand-in tokenizer, with codes
# derived from the scene. Any change here means the toy build would train on other examples.
EXAMPLES_SHA256 = "f213298c558633feba877ef553d06847d5969b3356d826f4563f20771917bb8f"
KEYS = {  # spec_key, vq_key, lm_key, focus_key of the shipped spec and builds 5-7
    "toy": ("f39713380ee4", "95b65267bbde", "d61f72621cce", "f39713380ee4"),
    "build5": ("1ee9898d41ca", "95b65267bbde", "d61f72621cce", "f39713380ee4"),
    "build6": ("999c8ce2742a", "95b65267bbde", "d61f72621cce", "f39713380ee4"),
    "build7": ("21206e27bfda", "95b65267bbde", "d61f72621cce", "f39713380ee4"),
}


class ByteTokenizer:
    """UTF-8 bytes, offset past the layout's special ids: the examples' texts, exactly, as ids."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [100 + b for b in text.encode()]}


def scene_codes(scene) -> torch.Tensor:
    """Eight codes that only this scene gets (its repr hashed)."""
    return torch.tensor(list(hashlib.sha256(repr(scene).encode()).digest()[:8]), dtype=torch.long)


def every_kind() -> list[str]:
    mixtures = [pretrain.MIXTURE, *pretrain.FOCUS, pretrain.DRAW, spec.BUILD_6["draw_mixture"],
                spec.BUILD_7["draw_mixture"]]
    return sorted({kind for mixture in mixtures for kind in mixture})


def examples_digest(per_kind: int = 300) -> str:
    ids = pretrain.Ids(ByteTokenizer(), 0, 1, 2, 3, 10, [10000, 10001, 10002])
    rng = random.Random(1234)
    digest = hashlib.sha256()
    for kind in every_kind():
        for _ in range(per_kind):
            tokens, labels = pretrain.make_example(kind, rng, ids, scene_codes)
            digest.update(json.dumps([kind, tokens, labels]).encode())
        digest.update(repr(rng.random()).encode())  # each kind draws as many numbers from the stream as before
    return digest.hexdigest()


def test_examples_for_a_seed_are_the_ones_the_build_was_trained_on():
    assert len(every_kind()) == 15
    assert examples_digest() == EXAMPLES_SHA256


def test_an_unknown_kind_is_refused():
    ids = pretrain.Ids(ByteTokenizer(), 0, 1, 2, 3, 10, [10000])
    with pytest.raises(ValueError, match="unknown example kind 'paint'"):
        pretrain.make_example("paint", random.Random(0), ids, scene_codes)


def test_the_shipped_build_is_build_7():
    assert spec.SHIPPED_BUILD is spec.BUILD_7 and spec.spec_key(spec.shipped_spec()) == KEYS["build7"][0]
    assert spec.toyworld_dir().name == f"toyworld-{KEYS['build7'][0]}"
    assert spec.toyworld_dir(spec=spec.BUILD_4).name == f"toyworld-{KEYS['toy'][0]}"  # build 4: TOY_SPEC alone


@pytest.mark.parametrize("name, extra", [("toy", {}), ("build5", spec.BUILD_5), ("build6", spec.BUILD_6),
                                         ("build7", spec.BUILD_7)])
def test_build_keys_are_unchanged(name, extra):
    build = {**spec.TOY_SPEC, **extra}
    assert (spec.spec_key(build), pretrain.vq_key(build), pretrain.lm_key(build), pretrain.focus_key(build)) == KEYS[name]
