"""Samples: prompt masking, self-prompting groups, dynamic padding, deterministic order, VQ cache."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.data.samples import EpochPlan, SampleBuilder, SampleSpec, collate
from yochameleon.data.vq_cache import VQCodeCache


def test_recognition_sample_masks_the_prompt_and_starts_answer_with_u_tokens(backbone, tokens, vq_cache, demo_photos):
    builder = SampleBuilder(backbone, tokens, vq_cache, self_prompting=True, group_loss="token")
    sample = builder.build(SampleSpec("recognition", str(demo_photos[0]), False, "Is <sks> in this photo?",
                                      "Yes, <sks> is here."))
    ids, labels = sample["input_ids"], sample["labels"]
    first = next(i for i, x in enumerate(labels) if x != -100)
    assert ids[first:first + 3] == tokens.u_token_ids()
    assert labels[first:] == ids[first:] and ids[-1] == backbone.end_of_turn_id
    assert ids[first - 1] == backbone.end_of_turn_id  # prompt ends with the end-of-turn token
    assert ids[0] == backbone.bos_id and int(tokens.token_ids[0]) in ids[:3]
    assert ids.count(backbone.boi_id) == 1 and ids.count(backbone.eoi_id) == 1
    no_sp = SampleBuilder(backbone, tokens, vq_cache, self_prompting=False, group_loss="token").build(
        SampleSpec("recognition", str(demo_photos[0]), False, "Is <sks> here?", "Yes."))
    first = next(i for i, x in enumerate(no_sp["labels"]) if x != -100)
    assert no_sp["input_ids"][first] not in tokens.token_ids.tolist()


def test_generation_sample_targets_g_tokens_then_the_image(backbone, tokens, vq_cache, demo_photos):
    builder = SampleBuilder(backbone, tokens, vq_cache, self_prompting=True, group_loss="token")
    sample = builder.build(SampleSpec("generation", str(demo_photos[0]), True, "A photo of <sks>."))
    target = [x for x in sample["labels"] if x != -100]
    assert target[:4] == tokens.g_token_ids()
    assert target[4] == backbone.boi_id and target[5 + 256] == backbone.eoi_id
    assert target[5:5 + 256] == vq_cache.codes(demo_photos[0])[1].tolist()  # the flipped photo's codes
    assert target[-1] == backbone.end_of_turn_id


def test_collate_pads_to_the_longest_sample_only(backbone, tokens, vq_cache, demo_photos):
    builder = SampleBuilder(backbone, tokens, vq_cache, self_prompting=True, group_loss="token")
    samples = [builder.build(SampleSpec("text_qa", None, False, "What is <sks>?", "A dog.")),
               builder.build(SampleSpec("generation", str(demo_photos[0]), False, "A photo of <sks>."))]
    batch = collate(samples, backbone.tokenizer.pad_token_id)
    longest = max(len(s["input_ids"]) for s in samples)
    assert batch["input_ids"].shape == (2, longest) and longest < 1500
    assert int(batch["attention_mask"][0].sum()) == len(samples[0]["input_ids"])
    assert (batch["labels"][0, len(samples[0]["input_ids"]):] == -100).all()


def test_vq_codes_are_computed_once_and_invalidated_when_a_photo_changes(backbone, tmp_path, demo_photos):
    photo = tmp_path / "p.jpg"
    shutil.copy(demo_photos[0], photo)
    first = VQCodeCache(backbone, tmp_path / "vq")
    codes = first.codes(photo)
    first.codes(photo)
    assert first.encoded == 1 and codes.shape == (2, 256)
    second = VQCodeCache(backbone, tmp_path / "vq")
    assert (second.codes(photo) == codes).all() and second.encoded == 0
    shutil.copy(demo_photos[1], photo)
    assert second.codes(photo).tolist() != codes.tolist() and second.encoded == 1


def test_epoch_plan_is_a_pure_function_of_seed_and_step(demo_photos):
    concept = SimpleNamespace(photos=demo_photos, negatives=[f"neg{i}.jpg" for i in range(10)], conversations=[])
    tasks = {"recognition": True, "vqa": True, "text_qa": True, "generation": True}
    plain = dict(negatives_per_photo=2, preparation=None, soft_positives_per_epoch=0, balance_recognition=False)
    a, b = EpochPlan(concept, tasks, seed=3, **plain), EpochPlan(concept, tasks, seed=3, **plain)
    assert [a.batch(s, 4) for s in range(12)] == [b.batch(s, 4) for s in range(12)]
    assert a.epoch(0) != a.epoch(1)
    epoch = a.epoch(0)
    assert sum(s.task == "recognition" and s.positive for s in epoch) == len(demo_photos)
    assert sum(s.task == "recognition" and not s.positive for s in epoch) == 2 * len(demo_photos)
    assert sum(s.task == "generation" for s in epoch) == len(demo_photos)
    only_gen = EpochPlan(concept, {**{k: False for k in tasks}, "generation": True}, seed=0, **plain)
    assert {s.task for s in only_gen.epoch(0)} == {"generation"}


def test_soft_positive_sample_uses_only_the_first_n_g_tokens(backbone, vq_cache, demo_photos):
    tokens = PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, "bo", 16, 16)
    builder = SampleBuilder(backbone, tokens, vq_cache, self_prompting=True, group_loss="token")
    sample = builder.build(SampleSpec("generation", str(demo_photos[0]), False, "A photo of <sks>.", n_tokens=4))
    first = next(i for i, x in enumerate(sample["labels"]) if x != -100)
    assert sample["input_ids"][first:first + 5] == tokens.g_token_ids(4) + [backbone.boi_id]
    question = sample["input_ids"][:first]
    prefix_len = len(builder.prompt_ids(""))  # system prefix + end of turn
    asked = question[prefix_len - 1:]
    assert tokens.g_token_ids(4) == [t for t in asked if t in tokens.token_ids.tolist()]  # no <sks>, 4 g-tokens


def test_shared_tokens_use_one_set_for_every_task(backbone):
    shared = PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, "bo", 4, 4, shared=True)
    assert shared.g_token_ids() == shared.u_token_ids() == shared.token_ids[1:].tolist()


def test_epoch_plan_with_a_preparation(demo_photos):
    prep = SimpleNamespace(hard_negatives=["h1", "h2"], easy_negatives=[f"e{i}" for i in range(9)],
                           soft_positives=[(f"s{i}", 2 * (i % 3 + 1)) for i in range(6)],
                           conversations=[{"question": "q <sks>", "answer": "a", "image": None}] * 5)
    concept = SimpleNamespace(photos=demo_photos, negatives=[], conversations=[])
    tasks = {"recognition": True, "vqa": True, "text_qa": True, "generation": True}
    epoch = EpochPlan(concept, tasks, seed=0, negatives_per_photo=1, preparation=prep,
                      soft_positives_per_epoch=4, balance_recognition=False).epoch(0)
    negatives = [s.image for s in epoch if s.task == "recognition" and not s.positive]
    assert {"h1", "h2"} <= set(negatives) and len(negatives) == 2 + len(demo_photos)
    soft = [s for s in epoch if s.n_tokens is not None]
    assert len(soft) == 4 and all(s.task == "generation" and s.image.startswith("s") for s in soft)
    assert sum(s.task == "text_qa" for s in epoch) == len(demo_photos)  # generated QA capped per epoch


def test_group_loss_counts_the_self_prompt_group_as_one_answer_token(backbone, tokens, vq_cache, demo_photos):
    spec = SampleSpec("recognition", str(demo_photos[0]), False, "Is <sks> in this photo?", "Yes, <sks> is here.")
    per_token = SampleBuilder(backbone, tokens, vq_cache, self_prompting=True, group_loss="token").build(spec)
    per_group = SampleBuilder(backbone, tokens, vq_cache, self_prompting=True, group_loss="group").build(spec)
    assert per_token["input_ids"] == per_group["input_ids"] and per_token["labels"] == per_group["labels"]
    first = next(i for i, x in enumerate(per_group["labels"]) if x != -100)
    k = len(tokens.u_token_ids())
    assert per_token["weights"][first:] == [1.0] * (len(per_token["labels"]) - first)
    assert per_group["weights"][first:first + k] == [1.0 / k] * k  # the group weighs one token
    assert per_group["weights"][first + k:] == [1.0] * (len(per_group["labels"]) - first - k)
    assert set(per_group["weights"][:first]) == {0.0}
    image = SampleBuilder(backbone, tokens, vq_cache, True, group_loss="group").build(
        SampleSpec("generation", str(demo_photos[0]), False, "A photo of <sks>."))
    assert set(w for w, x in zip(image["weights"], image["labels"]) if x != -100) == {1.0}  # images: every token
    batch = collate([per_group, image], backbone.tokenizer.pad_token_id)
    short = min((0, 1), key=lambda r: len([per_group, image][r]["input_ids"]))
    assert batch["weights"].shape == batch["labels"].shape and float(batch["weights"][short, -1]) == 0.0  # padding
    with pytest.raises(ValueError, match="self_prompt_loss"):
        SampleBuilder(backbone, tokens, vq_cache, True, group_loss="sometimes")


def test_balanced_recognition_shows_the_photos_as_often_as_negatives(demo_photos):
    prep = SimpleNamespace(hard_negatives=[f"h{i}" for i in range(7)], easy_negatives=[f"e{i}" for i in range(9)],
                           soft_positives=[], conversations=[])
    concept = SimpleNamespace(photos=demo_photos, negatives=[], conversations=[])
    tasks = {"recognition": True, "vqa": False, "text_qa": False, "generation": False}
    plain = EpochPlan(concept, tasks, seed=0, negatives_per_photo=1, preparation=prep, soft_positives_per_epoch=0,
                      balance_recognition=False).epoch(0)
    balanced = EpochPlan(concept, tasks, seed=0, negatives_per_photo=1, preparation=prep,
                         balance_recognition=True, soft_positives_per_epoch=0).epoch(0)
    for epoch in (plain, balanced):
        assert sum(not s.positive for s in epoch) == 7 + len(demo_photos)
    assert sum(s.positive for s in plain) == len(demo_photos)
    positives = [s for s in balanced if s.positive]
    assert len(positives) == 7 + len(demo_photos)
    assert {s.image for s in positives} == {str(p) for p in demo_photos}  # every photo, each shown 3-4 times
    counts = [sum(s.image == str(p) for s in positives) for p in demo_photos]
    assert max(counts) - min(counts) <= 1
