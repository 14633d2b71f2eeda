"""What makes the generation tokens learn: the validation generation NLL, the group before an image,
mirrored targets, the share and weight of generation samples, rows started from the backbone's description,
and best/ chosen per side (understanding by recognition, g-tokens by the generation NLL) on validation."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import DEMO, compose
from yochameleon.concept.init import chosen_description, init_from_description
from yochameleon.data.samples import EpochPlan, SampleBuilder, SampleSpec, collate
from yochameleon.metrics.generation import generation_metrics, image_code_nll
from yochameleon.model.personalized import PersonalizedChameleon


def test_generation_nll_is_the_token_by_token_likelihood_within_the_image_ids(backbone, tokens, vq_cache, demo_photos):
    """One teacher-forced forward equals scoring each code after the previous ones with a KV vq_cache (the
    sampler's own path), restricted to the image ids."""
    from transformers import DynamicCache

    model = PersonalizedChameleon(backbone.model, [tokens]).eval()
    builder = SampleBuilder(backbone, tokens, vq_cache, self_prompting=True)
    nll = image_code_nll(model, builder, [str(demo_photos[0]), str(demo_photos[1])])
    prompt = builder.image_prompt_ids("A photo of <sks>.")
    codes = backbone.image_codes(str(demo_photos[1]), False, vq_cache)
    image_ids = backbone.image_map.image_token_ids
    scorer = backbone.image_scorer()
    with torch.no_grad():
        kv = DynamicCache(config=backbone.config)
        ids = torch.tensor([prompt])
        hidden, kv = model.hidden_states(ids, torch.ones_like(ids), cache=kv, use_cache=True)
        total, mask = 0.0, torch.ones_like(ids)
        for position, code in enumerate(codes):
            logp = torch.log_softmax(scorer(hidden[:, -1]).float(), -1)[0]
            total -= float(logp[int((image_ids == code).nonzero())])
            mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], 1)
            hidden, kv = model.hidden_states(torch.tensor([[code]]), mask, torch.tensor([[len(prompt) + position]]),
                                             kv, use_cache=True)
    assert float(nll[1]) == pytest.approx(total / len(codes), rel=1e-4)
    split = SimpleNamespace(positives=[str(p) for p in demo_photos[:2]])
    metrics = generation_metrics(model, builder, split)
    assert metrics["eval/generation/nll"] == pytest.approx(float(nll.mean()), rel=1e-5)
    assert metrics["eval/generation/nll_uniform"] == pytest.approx(math.log(len(image_ids)))


@pytest.mark.parametrize(("setting", "count"), [("full", 4), ("none", 0), ("2", 2), (3, 3)])
def test_the_group_before_an_image_is_full_none_or_the_first_n(backbone, tokens, vq_cache, demo_photos, setting, count):
    builder = SampleBuilder(backbone, tokens, vq_cache, self_prompting=True, group_loss="group",
                            generation_group=setting)
    assert builder.answer_prefix("generation") == tokens.g_token_ids()[:count]
    assert builder.answer_prefix("recognition") == tokens.u_token_ids()  # text answers keep their group
    prompt = builder.image_prompt_ids("A photo of <sks>.")
    assert prompt[-1] == backbone.boi_id and prompt[-1 - count:-1] == tokens.g_token_ids()[:count]
    sample = builder.build(SampleSpec("generation", str(demo_photos[0]), False, "A photo of <sks>."))
    target = [x for x in sample["labels"] if x != -100]
    assert target[:count + 1] == [*tokens.g_token_ids()[:count], backbone.boi_id]


@pytest.mark.parametrize("setting", ["5", "some"])
def test_a_group_size_the_tokens_cannot_give_is_refused(backbone, tokens, vq_cache, setting):
    with pytest.raises(ValueError, match="recipe.generation_group"):
        SampleBuilder(backbone, tokens, vq_cache, self_prompting=True, generation_group=setting)


def _negatives():
    return sorted((DEMO / "negatives" / "train").iterdir())[:4]


def _plan(concept, **recipe):
    preparation = SimpleNamespace(hard_negatives=[], easy_negatives=[str(p) for p in concept.negatives],
                                  soft_positives=[(str(concept.negatives[0]), 2)], conversations=[])
    return EpochPlan(concept, {"recognition": True, "vqa": False, "text_qa": False, "generation": True}, 3,
                     negatives_per_photo=1, preparation=preparation, soft_positives_per_epoch=1,
                     balance_recognition=True, **recipe)


def test_generation_targets_are_not_mirrored_unless_asked_and_the_rest_of_the_epoch_is_unchanged(demo_photos):
    concept = SimpleNamespace(photos=demo_photos, negatives=_negatives(), conversations=[])
    plain, flipped = _plan(concept, flip_generation=False).epoch(0), _plan(concept, flip_generation=True).epoch(0)
    assert not any(s.flip for s in plain if s.task == "generation")
    assert any(s.flip for epoch in range(4) for s in _plan(concept, flip_generation=True).epoch(epoch)
               if s.task == "generation")
    assert [s for s in plain if s.task != "generation"] == [s for s in flipped if s.task != "generation"]


def test_generation_repeats_and_weight(backbone, tokens, vq_cache, demo_photos):
    concept = SimpleNamespace(photos=demo_photos, negatives=_negatives(), conversations=[])
    count = [sum(s.task == "generation" and s.n_tokens is None for s in _plan(concept, generation_repeats=r).epoch(0))
             for r in (1, 3)]
    assert count == [3, 9]
    builder = SampleBuilder(backbone, tokens, vq_cache, self_prompting=True, group_loss="group", generation_weight=4.0)
    samples = [builder.build(SampleSpec("generation", str(demo_photos[0]), False, "A photo of <sks>.")),
               builder.build(SampleSpec("recognition", str(demo_photos[0]), False, "Is <sks> here?", "Yes."))]
    assert collate(samples, 0)["sample_weights"].tolist() == [4.0, 1.0]


def test_rows_start_from_the_most_frequent_description(backbone, tokens):
    assert chosen_description(["A red cube.", "A blue cube.", "A blue cube.", ""]) == "A blue cube"
    with pytest.raises(ValueError, match="recipe.init=reserved"):
        chosen_description(["", " ."])
    before = tokens.input_rows.detach().clone()
    used = init_from_description(tokens, backbone, "a photo")
    word_ids = backbone.tokenizer("a photo", add_special_tokens=False)["input_ids"]
    assert used == [word_ids[i % len(word_ids)] for i in range(4)]
    table = backbone.model.get_input_embeddings().weight
    assert torch.equal(tokens.input_rows[1:5], table[torch.tensor(used)].float())
    assert torch.equal(tokens.input_rows[0], before[0]) and torch.equal(tokens.input_rows[5:], before[5:])


@pytest.mark.slow  # two short training runs (about 40 s)
def test_best_keeps_each_side_from_its_own_best_validation_step_and_a_resume_reads_best_itself(
        tmp_path, cache_dir, demo_photos):
    """best/'s config names the step of each side: the understanding side's by the highest validation
    recognition score, the g-tokens' by the lowest validation generation NLL (both read back from
    metrics.jsonl); a resume never overwrites best/ with a worse score than best/ holds."""
    from yochameleon.training.recipe import train

    val = tmp_path / "val"
    val.mkdir()
    for photo in demo_photos[:1]:
        (val / photo.name).write_bytes(photo.read_bytes())
    negatives = sorted((DEMO / "negatives" / "test").iterdir())
    val_neg = tmp_path / "val-neg"
    val_neg.mkdir()
    for photo in negatives[:3]:
        (val_neg / photo.name).write_bytes(photo.read_bytes())
    overrides = ["+concept=demo", "logger=none", "trainer.eval_every=1", "trainer.sample_images=false",
                 f"concept.val_photos={val}", f"concept.val_negatives=[{val_neg}]", "trainer.lr=0.05"]
    run = tmp_path / "run"
    summary = train(compose([*overrides, "trainer.max_steps=4", "trainer.checkpoint_every=2"], cache_dir), run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/generation/nll" in r]
    assert len(evals) == 4
    nll = [r["eval/generation/nll"] for r in evals]
    weighted = [r["eval/recognition/weighted"] for r in evals]
    best = json.loads((run / "best" / "adapter_config.json").read_text())
    assert best["selection"]["generation"]["step"] == evals[nll.index(min(nll))]["step"]
    assert best["selection"]["understanding"]["step"] == evals[weighted.index(max(weighted))]["step"]
    assert summary["best"]["generation"]["score"] == pytest.approx(min(nll))
    # A resume whose best/ holds better scores than anything it will reach leaves best/ as it is.
    best["selection"]["understanding"]["score"], best["selection"]["generation"]["score"] = 2.0, -1.0
    (run / "best" / "adapter_config.json").write_text(json.dumps(best))
    kept = (run / "best" / "adapter.safetensors").read_bytes()
    resumed = train(compose([*overrides, "trainer.max_steps=6", "trainer.resume=true"], cache_dir), run)
    assert (run / "best" / "adapter.safetensors").read_bytes() == kept
    # The resumed run's summary covers the whole run's losses, not only the resumed steps.
    first = next(r["train/loss"] for r in records if r["step"] == 1 and "train/loss" in r)
    assert resumed["loss_first_10pct"] == pytest.approx(first)
    assert json.loads((run / "best" / "adapter_config.json").read_text())["selection"]["generation"]["score"] == -1.0


@pytest.mark.parametrize("group", ["none", "2", "full"])
def test_an_adapter_is_drawn_with_the_group_it_was_trained_with(backbone, tokens, tmp_path, group):
    """recipe.generation_group is recorded with the adapter and every prompt built for the loaded rows uses it
    (inference, the harness): an adapter trained without the group is never drawn with one."""
    from yochameleon.concept.adapter import load_adapter, save_adapter
    from yochameleon.inference import PersonalizedModel

    tokens.generation_group = group
    save_adapter(tmp_path / "a", tokens, backbone.fingerprint(), {"recipe": {"generation_group": group}})
    loaded = load_adapter(tmp_path / "a", backbone)
    assert loaded.generation_group == group
    pm = PersonalizedModel(backbone, [loaded], {"bo": True}, {"bo": "forced"})
    prompt, _ = pm.image_prompts("A photo of <bo>.")
    count = {"none": 0, "2": 2, "full": 4}[group]
    assert prompt[-1] == backbone.boi_id and prompt[-2 - count] == backbone.end_of_turn_id
    assert prompt[-1 - count:-1] == loaded.g_token_ids()[:count]


def test_scaled_rows_step_is_adamw_at_the_scaled_rate_for_those_rows():
    """recipe.generation_lr_scale: the blended update equals AdamW at lr x scale on the chosen rows (weight decay
    included) and plain AdamW on the others, step after step (AdamW's state is shared, as in training)."""
    from yochameleon.training.optimization import scaled_rows_step

    torch.manual_seed(0)
    start = [torch.randn(6, 5), torch.randn(6, 5)]
    rows, scale, lr = [1, 2, 3], 3.0, 1e-2
    blended = [torch.nn.Parameter(t.clone()) for t in start]
    at_scaled, at_plain = ([torch.nn.Parameter(t.clone()) for t in start] for _ in range(2))
    optimizers = [torch.optim.AdamW(p, lr=rate, weight_decay=0.1)
                  for p, rate in ((blended, lr), (at_scaled, lr * scale), (at_plain, lr))]
    for _ in range(4):
        grads = [torch.randn(6, 5), torch.randn(6, 5)]
        for params, optimizer in zip((blended, at_scaled, at_plain), optimizers):
            for p, g in zip(params, grads):
                p.grad = g.clone()
        scaled_rows_step(optimizers[0], blended, rows, scale)
        optimizers[1].step()
        optimizers[2].step()
    others = [0, 4, 5]
    for mine, scaled, plain in zip(blended, at_scaled, at_plain):
        assert torch.allclose(mine[rows], scaled[rows], atol=1e-6)
        assert torch.allclose(mine[others], plain[others], atol=1e-6)
        assert not torch.allclose(mine[rows], plain[rows], atol=1e-3)  # the scale did something


def test_generation_lr_scale_zero_keeps_the_g_rows_where_they_started(tmp_path, cache_dir, backbone):
    """The user's switch on the user's path: a run at recipe.generation_lr_scale=0 moves every row but the
    g-tokens' (which the soft prompt gives gradients in every task); the default moves them too."""
    from safetensors.torch import load_file

    from yochameleon.concept.tokens import PersonalizedTokens
    from yochameleon.training.recipe import train

    base = ["+concept=demo", "logger=none", "trainer.max_steps=2", "trainer.eval_every=100",
            "trainer.sample_images=false"]
    start = PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, "corgi", 16, 16,
                                             first_token="<reserved16200>")
    g = start.g_positions()
    for scale, g_moves in (("0", False), ("1", True)):
        run = tmp_path / f"scale{scale}"
        train(compose([*base, f"recipe.generation_lr_scale={scale}"], cache_dir), run)
        rows = load_file(str(run / "adapter" / "adapter.safetensors"))
        for name in ("input_rows", "output_rows"):
            initial = getattr(start, name).detach()
            assert torch.equal(rows[name][g], initial[g]) != g_moves, (scale, name)
            assert not torch.equal(rows[name][0], initial[0])  # the identifier always learns


def test_cap_input_norms_scales_only_the_long_rows_and_keeps_their_direction():
    """recipe.max_row_norm's step: a row longer than the limit is scaled back onto it, the others stay bit-equal."""
    from yochameleon.concept.tokens import PersonalizedTokens

    torch.manual_seed(0)
    rows = torch.randn(5, 8)
    rows[1] *= 10
    rows[3] *= 0.01
    tokens = PersonalizedTokens("x", [f"<reserved{i}>" for i in range(5)], list(range(5)), 2, 2, rows, rows.clone())
    limit = float(rows[3].norm() * 50)
    before = tokens.input_rows.detach().clone()
    tokens.cap_input_norms(limit)
    after = tokens.input_rows.detach()
    long = before.norm(dim=-1) > limit
    assert long.any() and not long.all()
    assert torch.allclose(after[long].norm(dim=-1), torch.full((int(long.sum()),), limit), atol=1e-5)
    assert torch.allclose(torch.nn.functional.cosine_similarity(after[long], before[long]), torch.ones(int(long.sum())))
    assert torch.equal(after[~long], before[~long])
    assert torch.equal(tokens.output_rows.detach(), rows)  # output rows are not capped


def test_max_row_norm_keeps_every_trained_input_row_within_the_limit(tmp_path, cache_dir, backbone):
    """The user's switch on the user's path: with recipe.max_row_norm=1 every saved input row is at most the
    backbone's median input-row norm; the default (null) lets the rows grow past it at the toy learning rate."""
    from safetensors.torch import load_file

    from yochameleon.training.recipe import train

    norms = backbone.model.get_input_embeddings().weight.detach().float().norm(dim=-1)
    limit = float(norms[norms > 0].median())
    base = ["+concept=demo", "logger=none", "trainer.max_steps=6", "trainer.eval_every=100",
            "trainer.sample_images=false", "trainer.lr=0.5"]
    longest = {}
    for setting in ("null", "1"):
        run = tmp_path / f"cap{setting}"
        train(compose([*base, f"recipe.max_row_norm={setting}"], cache_dir), run)
        rows = load_file(str(run / "adapter" / "adapter.safetensors"))
        longest[setting] = float(rows["input_rows"].norm(dim=-1).max())
    assert longest["1"] <= limit * (1 + 1e-5) < longest["null"], (longest, limit)


def test_max_row_norm_must_be_positive(tmp_path, cache_dir):
    from yochameleon.errors import YoChameleonError
    from yochameleon.training.recipe import train

    with pytest.raises(YoChameleonError, match="recipe.max_row_norm=0"):
        train(compose(["+concept=demo", "logger=none", "trainer.max_steps=1", "recipe.max_row_norm=0"], cache_dir),
              tmp_path / "run")
