"""Personalized tokens: only their rows learn; adapters round-trip, remap on collision, refuse wrong backbones."""

from __future__ import annotations

import pytest
import torch

from yochameleon.concept.adapter import AdapterError, load_adapter, save_adapter
from yochameleon.concept.tokens import PersonalizedTokens, TokenLayoutError
from yochameleon.model.personalized import PersonalizedChameleon, length_groups


def make_tokens(backbone, name="bo", first="<reserved16200>", k_g=4, k_u=3):
    return PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, name, k_g, k_u, first)


def test_layout_and_system_prefix(backbone):
    tokens = make_tokens(backbone)
    assert tokens.token_names[0] == "<reserved16200>" and tokens.token_names[-1] == "<reserved16207>"
    assert tokens.system_prefix() == "<reserved16200> is " + "".join(tokens.token_names[1:]) + "."
    assert len(tokens.g_token_ids()) == 4 and len(tokens.u_token_ids()) == 3
    assert set(tokens.g_token_ids()).isdisjoint(tokens.u_token_ids())
    with pytest.raises(TokenLayoutError, match="reserved"):
        make_tokens(backbone, first="<s>")


def test_only_the_concept_rows_get_gradients(backbone):
    tokens = make_tokens(backbone)
    model = PersonalizedChameleon(backbone.model, [tokens])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["concepts.0.input_rows", "concepts.0.output_rows"]
    ids = torch.tensor([[0, *tokens.token_ids.tolist(), 9000, 9001]])
    labels = torch.full_like(ids, -100)
    labels[0, -3:] = ids[0, -3:]
    labels[0, 5] = tokens.token_ids[4]  # one target is a concept token, so output_rows get gradient too
    out = model(ids, torch.ones_like(ids), labels)
    out["loss"].backward()
    assert tokens.input_rows.grad is not None and tokens.input_rows.grad.abs().sum() > 0
    assert tokens.output_rows.grad is not None and tokens.output_rows.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.model.parameters())


def test_length_groups_train_exactly_like_one_padded_batch(backbone):
    assert length_groups([300, 40, 290, 310], 0.5) == [[3, 0, 2], [1]]
    assert length_groups([10, 10], 0.5) == [[0, 1]]
    tokens = make_tokens(backbone)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for length in (40, 9, 36):  # two long samples and a short one: two groups
        body = torch.randint(9000, 9500, (length,), generator=generator).tolist()
        rows.append([0, *tokens.token_ids.tolist(), *body])
    longest = max(map(len, rows))
    ids = torch.full((3, longest), backbone.tokenizer.pad_token_id)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for r, row in enumerate(rows):
        ids[r, :len(row)], mask[r, :len(row)] = torch.tensor(row), 1
        labels[r, len(row) - 5:len(row)] = ids[r, len(row) - 5:len(row)]
    results = []
    for ratio in (0.5, 0.0):
        tokens.zero_grad(set_to_none=True)
        out = PersonalizedChameleon(backbone.model, [tokens], ratio)(ids, mask, labels)
        out["loss"].backward()
        results.append((out["per_sample"].detach(), tokens.input_rows.grad.clone()))
    (grouped, grad_grouped), (one, grad_one) = results
    assert torch.allclose(grouped, one, atol=1e-5)  # per-sample losses in the original row order
    assert torch.allclose(grad_grouped, grad_one, atol=1e-6)


def test_injection_and_logit_patch_touch_only_concept_ids(backbone):
    tokens = make_tokens(backbone)
    with torch.no_grad():
        tokens.input_rows.add_(1.0)
        tokens.output_rows.mul_(-3.0)
    model = PersonalizedChameleon(backbone.model, [tokens])
    ids = torch.tensor([[0, 9000, int(tokens.token_ids[0]), 9001]])
    base = backbone.model.get_input_embeddings()(ids)
    mixed = model.embed(ids)
    assert torch.equal(mixed[0, [0, 1, 3]], base[0, [0, 1, 3]])
    assert torch.allclose(mixed[0, 2], tokens.input_rows[0])
    hidden = torch.randn(2, backbone.config.hidden_size)
    logits = model.logits(hidden)
    plain = backbone.model.lm_head(hidden)
    others = torch.ones(logits.shape[-1], dtype=torch.bool)
    others[tokens.token_ids] = False
    assert torch.equal(logits[:, others], plain[:, others])
    assert torch.allclose(logits[:, tokens.token_ids], hidden @ tokens.output_rows.T, atol=1e-5)
    # Image-token logits are real numbers here (upstream forward sets them to the dtype minimum).
    assert torch.isfinite(logits[:, backbone.image_map.image_token_ids]).all()


def test_adapter_round_trip_is_exact(tmp_path, backbone):
    tokens = make_tokens(backbone)
    with torch.no_grad():
        tokens.input_rows.normal_()
        tokens.output_rows.normal_()
    save_adapter(tmp_path / "a", tokens, backbone.fingerprint(), {"self_prompting": True})
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter.safetensors", "adapter_config.json"]
    loaded = load_adapter(tmp_path / "a", backbone)
    assert loaded.name == "bo" and loaded.token_names == tokens.token_names
    assert torch.equal(loaded.input_rows, tokens.input_rows) and torch.equal(loaded.output_rows, tokens.output_rows)


def test_colliding_adapters_are_remapped_to_free_ids(tmp_path, backbone):
    first, second = make_tokens(backbone, "bo"), make_tokens(backbone, "mam")
    save_adapter(tmp_path / "bo", first, backbone.fingerprint())
    save_adapter(tmp_path / "mam", second, backbone.fingerprint())
    bo = load_adapter(tmp_path / "bo", backbone)
    mam = load_adapter(tmp_path / "mam", backbone, taken_ids=set(bo.token_ids.tolist()))
    assert set(bo.token_ids.tolist()).isdisjoint(mam.token_ids.tolist())
    assert torch.equal(mam.input_rows, second.input_rows)
    PersonalizedChameleon(backbone.model, [bo, mam])  # no collision error
    with pytest.raises(TokenLayoutError):
        PersonalizedChameleon(backbone.model, [bo, load_adapter(tmp_path / "mam", backbone)])


def test_adapter_refuses_another_backbone(tmp_path, backbone, cache_dir):
    from yochameleon.model.load import load_backbone
    from yochameleon.tiny.chameleon import ensure_tiny_checkpoint

    save_adapter(tmp_path / "a", make_tokens(backbone), backbone.fingerprint())
    other = load_backbone(ensure_tiny_checkpoint(cache_dir / "models", {"seed": 1}), name="tiny-seed1")
    with pytest.raises(AdapterError, match="trained on backbone"):
        load_adapter(tmp_path / "a", other)
    wider = load_backbone(ensure_tiny_checkpoint(cache_dir / "models", {"hidden_size": 64, "intermediate_size": 176}),
                          name="tiny-64")
    with pytest.raises(AdapterError, match="hidden_size"):
        load_adapter(tmp_path / "a", wider)


def test_not_an_adapter_directory(tmp_path, backbone):
    with pytest.raises(AdapterError, match="not a concept adapter"):
        load_adapter(tmp_path, backbone)


def test_prompts_without_the_concept_are_untouched_by_loaded_adapters(backbone):
    tokens = make_tokens(backbone)
    with torch.no_grad():
        tokens.input_rows.normal_()
        tokens.output_rows.normal_()
    ids = torch.tensor([[0, 9000, 9001, 9002, 8710]])
    plain = PersonalizedChameleon(backbone.model, [])
    personal = PersonalizedChameleon(backbone.model, [tokens])
    with torch.no_grad():
        a = plain.logits(plain.hidden_states(ids)[0])
        b = personal.logits(personal.hidden_states(ids)[0])
    others = torch.ones(a.shape[-1], dtype=torch.bool)
    others[tokens.token_ids] = False
    assert torch.equal(a[..., others], b[..., others])  # the frozen backbone forgets nothing


def test_loss_weights_make_a_weighted_mean_per_sample(backbone):
    tokens = make_tokens(backbone)
    ids = torch.tensor([[0, *tokens.token_ids.tolist(), 9001, 9002, 9003, 9004]])
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, -100)
    labels[0, -4:] = ids[0, -4:]
    model = PersonalizedChameleon(backbone.model, [tokens], 0.0)
    plain = model(ids, mask, labels)["per_sample"]
    ones = model(ids, mask, labels, torch.ones(ids.shape))["per_sample"]
    assert torch.allclose(plain, ones, atol=1e-6)  # weights of one are the plain per-sample mean
    weights = torch.zeros(ids.shape)
    weights[0, -1] = 1.0  # only the last target counts
    last = model(ids, mask, labels, weights)["per_sample"]
    hidden, _ = model.hidden_states(ids, mask)
    expected = torch.nn.functional.cross_entropy(model.logits(hidden[0, -2:-1]), ids[0, -1:])
    assert torch.allclose(last, expected.reshape(1), atol=1e-5)


@pytest.mark.parametrize("family", ["backbone", "janus_backbone"])
def test_every_adapter_tensor_is_checked_against_its_config_and_the_backbone(tmp_path, family, request):
    """issue 24 item 7: a damaged or edited adapter is refused at load, naming the file and the mismatch."""
    import json

    from safetensors.torch import load_file, save_file

    from yochameleon.concept.adapter import CONFIG_NAME, WEIGHTS_NAME

    bb = request.getfixturevalue(family)
    tokens = PersonalizedTokens.from_backbone(bb.model, bb.vocabulary_map, "bo", 2, 2, bb.default_first_token)
    good = save_adapter(tmp_path / "good", tokens, bb.fingerprint())
    n, hidden = 5, bb.hidden_size
    rows = load_file(str(good / WEIGHTS_NAME))
    cases = {
        "output_rows has shape": {**rows, "output_rows": torch.zeros(n, hidden + 1)},
        "input_rows has shape": {**rows, "input_rows": torch.zeros(n - 1, hidden)},
        "output_rows is torch.float16": {**rows, "output_rows": rows["output_rows"].half()},
        "input_rows is torch.bfloat16": {**rows, "input_rows": rows["input_rows"].bfloat16()},
        "expected exactly": {"input_rows": rows["input_rows"]},
        "NaN or infinite": {**rows, "output_rows": torch.full((n, hidden), float("nan"))},
    }
    for index, (message, tensors) in enumerate(cases.items()):
        bad = tmp_path / f"bad{index}"
        save_adapter(bad, tokens, bb.fingerprint())
        save_file(tensors, str(bad / WEIGHTS_NAME))
        with pytest.raises(AdapterError, match=f"{WEIGHTS_NAME}.*{message}|{message}.*{WEIGHTS_NAME}") as err:
            load_adapter(bad, bb)
        assert str(bad) in str(err.value)
    truncated = tmp_path / "truncated"
    save_adapter(truncated, tokens, bb.fingerprint())
    (truncated / WEIGHTS_NAME).write_bytes((good / WEIGHTS_NAME).read_bytes()[:100])
    with pytest.raises(AdapterError, match="not a readable safetensors"):
        load_adapter(truncated, bb)
    # The config against the backbone: token names that the backbone numbers differently, a short token list.
    for index, edit in enumerate([lambda c: c["token_ids"].reverse(), lambda c: c["token_ids"].pop()]):
        edited = tmp_path / f"config{index}"
        save_adapter(edited, tokens, bb.fingerprint())
        config = json.loads((edited / CONFIG_NAME).read_text())
        edit(config)
        (edited / CONFIG_NAME).write_text(json.dumps(config))
        with pytest.raises(AdapterError, match=CONFIG_NAME):
            load_adapter(edited, bb)
    assert torch.equal(load_adapter(good, bb).output_rows, tokens.output_rows)


def _rewrite_config(directory, edit):
    import json

    from yochameleon.concept.adapter import CONFIG_NAME

    config = json.loads((directory / CONFIG_NAME).read_text())
    edit(config)
    (directory / CONFIG_NAME).write_text(json.dumps(config))


def test_adapters_written_before_the_newer_fields_still_load(tmp_path, backbone):
    """issue 26 item 3: "selection", "init", "recipe.generation_group", "shared_tokens", "self_prompting" and the
    whole recipe are optional; an adapter without them reads with their defaults and loads."""
    from yochameleon.concept.adapter import read_adapter_config

    tokens = make_tokens(backbone)
    recipe = {"name": "yochameleon", "generation_group": "4", "inference": {"self_prompt": "emitted"}}
    save_adapter(tmp_path / "new", tokens, backbone.fingerprint(), {
        "self_prompting": False, "recipe": recipe, "init": {"kind": "reserved"}, "step": 6, "selected_on": "val",
        "selection": {"understanding": {"metric": "eval/recognition/weighted", "score": 0.5, "step": 6}}})
    new = read_adapter_config(tmp_path / "new")
    assert (new.self_prompting, new.self_prompt_mode, new.generation_group, new.step) == (False, "emitted", "4", 6)
    assert new.selection["understanding"]["score"] == 0.5 and new.init == {"kind": "reserved"}
    save_adapter(tmp_path / "old", tokens, backbone.fingerprint(), {"recipe": {"name": "yochameleon"}})
    _rewrite_config(tmp_path / "old", lambda c: c.pop("shared_tokens"))
    old = read_adapter_config(tmp_path / "old")
    assert (old.shared_tokens, old.self_prompting, old.self_prompt_mode, old.generation_group) == (
        False, True, "forced", "full")
    assert (old.selection, old.selected_on, old.init, old.step, old.base_model.hidden_size) == (
        None, None, None, None, backbone.hidden_size)
    loaded = load_adapter(old, backbone)  # the config object, passed down: the folder is not read again
    assert loaded.token_names == tokens.token_names and torch.equal(loaded.input_rows, tokens.input_rows)


@pytest.mark.parametrize("field,edit", [
    ("concept", lambda c: c.pop("concept")),
    ("k_g", lambda c: c.update(k_g="4")),
    ("token_ids", lambda c: c.update(token_ids=[str(i) for i in c["token_ids"]])),
    ("base_model.hidden_size", lambda c: c["base_model"].pop("hidden_size")),
    ("base_model", lambda c: c.update(base_model=[])),
    ("self_prompting", lambda c: c.update(self_prompting="yes")),
    ("recipe.inference.self_prompt", lambda c: c.update(recipe={"inference": {"self_prompt": "always"}})),
    ("selection.understanding", lambda c: c.update(selection={"understanding": {"score": "high"}})),
])
def test_a_bad_adapter_config_field_is_refused_naming_the_file_and_the_field(field, edit, tmp_path, backbone):
    from yochameleon.concept.adapter import CONFIG_NAME, read_adapter_config

    save_adapter(tmp_path / "a", make_tokens(backbone), backbone.fingerprint())
    _rewrite_config(tmp_path / "a", edit)
    with pytest.raises(AdapterError, match=f"'{field}'") as refused:
        read_adapter_config(tmp_path / "a")
    assert str(tmp_path / "a" / CONFIG_NAME) in str(refused.value)
