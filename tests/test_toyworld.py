"""The toy world: deterministic scenes, exact pretraining loss, the shipped backbone, and the quality gate."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from yochameleon.toyworld import world
from yochameleon.toyworld.build import CONCEPTS, concept_scenes


def test_scenes_are_deterministic_and_described_by_their_captions():
    a, b = world.scene(3, 17), world.scene(3, 17)
    assert a == b and world.render(a).tobytes() == world.render(b).tobytes()
    assert world.scene(3, 18) != a
    for index in range(30):
        scene = world.scene(0, index)
        caption = scene.caption()
        assert all(f"{t.colour} {t.pattern} {t.shape}" in caption for t in scene.things)
        assert world.render(scene).size == (64, 64)
        answers = dict(world.attribute_questions(scene, random.Random(index)))
        thing = scene.things[0]
        assert answers[f"What colour is the {thing.shape}?"] in (t.colour for t in scene.things)


def test_look_alikes_share_exactly_two_attributes():
    rng = random.Random(0)
    for _ in range(50):
        thing = world.random_thing(rng)
        other = world.look_alike(thing, rng)
        assert sum(a == b for a, b in zip(thing.identity, other.identity)) == 2


def test_toy_concept_splits_hold_the_concept_only_where_they_should():
    for name, thing in CONCEPTS.items():
        assert all(any(t.identity == thing.identity for t in s.things) for s in concept_scenes(name, "test"))
        negatives = concept_scenes(name, "test_negatives")
        assert all(all(t.identity != thing.identity for t in s.things) for s in negatives)
        near = [s for s in negatives if sum(a == b for a, b in zip(s.things[0].identity, thing.identity)) == 2]
        assert len(near) >= len(negatives) // 3  # hard negatives: look-alikes
    assert concept_scenes("bo", "train") != concept_scenes("bo", "test")


def test_row_trainer_loss_is_the_exact_full_vocabulary_cross_entropy(backbone):
    from yochameleon.toyworld.pretrain import RowTrainer

    model = backbone.model
    trained = torch.arange(4, 4 + 300)
    rows = RowTrainer(model, trained)
    with torch.no_grad():
        rows.output_rows.normal_(0, 0.5)
    hidden = torch.randn(2, 6, model.config.hidden_size)
    labels = torch.full((2, 6), -100)
    labels[0, 2:] = trained[torch.tensor([5, 17, 250, 3])]
    labels[1, 4:] = trained[torch.tensor([9, 120])]
    full_head = torch.zeros(model.config.vocab_size, model.config.hidden_size)
    full_head[trained] = rows.output_rows.detach()
    logits = hidden[:, :-1] @ full_head.T
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="none",
                                ignore_index=-100).view(2, 5)
    expected = (per_token.sum(1) / (labels[:, 1:] != -100).sum(1)).mean()
    assert torch.allclose(rows.loss(hidden, labels), expected, atol=1e-5)


def test_the_shipped_backbone_matches_the_current_build_recipe():
    from yochameleon.toyworld.build import toyworld_dir
    from yochameleon.toyworld.ship import PACK, packed_key

    assert PACK.is_file(), f"{PACK} is missing: run `make toyworld-pack`"
    assert packed_key() == toyworld_dir().name.removeprefix("toyworld-"), (
        "the shipped toy backbone was built with another spec or TOY_BUILD_VERSION; rebuild it with "
        "`make toyworld toyworld-pack` (CI would otherwise pretrain for ~20 minutes)")
    assert PACK.stat().st_size < 8 * 2**20
