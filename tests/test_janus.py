"""The Janus family on the tiny Janus: loading, layout, and parity with transformers' own Janus.

Parity: the project's greedy (and seeded) image generation gives the codes
`JanusForConditionalGeneration.generate(generation_mode="image")` gives with the same guidance,
and its text logits equal the upstream forward, with and without a shown image.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import JanusForConditionalGeneration

from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.data.samples import SampleBuilder, SampleSpec, collate
from yochameleon.model.backbone import BackboneError
from yochameleon.model.decoding import left_pad
from yochameleon.model.image_generation import SamplingConfig, decode_image_tokens, sample_image_tokens, to_pil
from yochameleon.model.load import load_backbone
from yochameleon.model.personalized import IGNORE_INDEX, PersonalizedChameleon

PROMPT = "A photo of a red dog."


@pytest.fixture(scope="module")
def upstream(janus_path):
    """The checkpoint read by the upstream class itself, no project code in the way."""
    return JanusForConditionalGeneration.from_pretrained(str(janus_path), local_files_only=True).eval()


@pytest.fixture(scope="module")
def photo():
    return Image.new("RGB", (80, 60), (200, 30, 40))


def plain(backbone):
    return PersonalizedChameleon(backbone.model, []).eval()


def test_the_tiny_janus_is_the_upstream_class_saved_and_reloaded(janus_path, janus_backbone):
    config = json.loads((janus_path / "config.json").read_text())
    assert config["model_type"] == "janus" and config["architectures"] == ["JanusForConditionalGeneration"]
    assert isinstance(janus_backbone.model, JanusForConditionalGeneration)
    assert janus_backbone.family == "janus" and janus_backbone.has_decoder
    # The concept's rows are the embedding rows past the tokenizer, named at load, no matrix resized.
    v = janus_backbone.model.text_vocab_size
    assert janus_backbone.model.get_input_embeddings().weight.shape[0] == v
    first = janus_backbone.vocabulary_map[janus_backbone.default_first_token]
    assert first == v - janus_backbone.extra["unused_rows"] and janus_backbone.vocabulary_map["<reserved00255>"] == v - 1
    assert janus_backbone.logits_width == v + 512 and janus_backbone.image_seq_length == 16


def test_a_chameleon_only_directory_check_still_refuses_other_models(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(BackboneError, match="not a Chameleon or Janus config"):
        load_backbone(tmp_path)


def test_prompts_are_janus_chat_template_with_the_image_where_the_processor_puts_it(janus_backbone, photo):
    bb = janus_backbone
    layout = bb.chat_layout()
    shown = layout.image(bb.shown_image_codes(photo))
    ours = layout.prompt(layout.text(layout.question_text("Is it red?", True)), image=shown)
    text = "<|User|>: <image_placeholder>\nIs it red?\n\n<|Assistant|>:"
    theirs = bb.processor(text=[text], images=[photo], return_tensors="pt")["input_ids"][0].tolist()
    placeholder = bb.token_id(bb.tokenizer.image_token)
    as_placeholders = [placeholder if t >= bb.logits_width else t for t in ours]
    assert as_placeholders == [bb.bos_id, *theirs]
    generation = bb.processor(text=["<|User|>: " + PROMPT + "\n\n<|Assistant|>:"], generation_mode="image",
                              return_tensors="pt")["input_ids"][0].tolist()
    assert layout.image_prompt(layout.text(layout.question_text(PROMPT, False))) == [bb.bos_id, *generation]
    # An answer: "<|Assistant|>: Yes<｜end▁of▁sentence｜>" as the processor tokenizes the whole turn.
    turn = "<|User|>: Is it red?\n\n<|Assistant|>: Yes" + bb.tokenizer.eos_token
    whole = bb.processor(text=[turn], return_tensors="pt")["input_ids"][0].tolist()
    prompt = layout.prompt(layout.text(layout.question_text("Is it red?", False)))
    assert [*prompt, *layout.answer(layout.text(layout.answer_text("Yes")))] == [bb.bos_id, *whole]


def test_text_logits_equal_the_upstream_forward(janus_backbone, upstream, photo):
    bb = janus_backbone
    layout = bb.chat_layout()
    v = bb.model.text_vocab_size
    for image in (None, photo):
        shown = layout.image(bb.shown_image_codes(image)) if image is not None else ()
        ids = layout.prompt(layout.text(layout.question_text("Is it red?", image is not None)), image=shown)
        batch, mask = left_pad([ids], bb.tokenizer.pad_token_id)
        model = plain(bb)
        with torch.no_grad():
            ours = model.logits(model.hidden_states(batch, mask)[0])[0]
        placeholder = bb.token_id(bb.tokenizer.image_token)
        upstream_ids = torch.tensor([[placeholder if t >= bb.logits_width else t for t in ids]])
        pixels = bb.pixels([image]) if image is not None else None
        with torch.no_grad():
            theirs = upstream(input_ids=upstream_ids, pixel_values=pixels).logits[0]
        assert ours.shape == (len(ids), bb.logits_width)
        torch.testing.assert_close(ours[:, :v], theirs, rtol=1e-5, atol=1e-5)


# (Upstream image generation fails at guidance 1: it doubles the batch but drops the guidance step.)
@pytest.mark.parametrize("guidance", [5.0, 2.0])
def test_greedy_image_codes_equal_upstream_generate(janus_backbone, upstream, guidance):
    bb = janus_backbone
    layout = bb.chat_layout()
    cond = layout.image_prompt(layout.text(layout.question_text(PROMPT, False)))
    ours = sample_image_tokens(plain(bb), bb, [cond], SamplingConfig(temperature=0, guidance_scale=guidance),
                               [layout.unconditional_image_prompt(cond)])
    theirs = upstream.generate(input_ids=torch.tensor([cond]), attention_mask=torch.ones(1, len(cond), dtype=torch.long),
                               generation_mode="image", do_sample=False, guidance_scale=guidance)
    assert ours.shape == (1, 16)
    assert bb.image_map.ids_to_codes(ours).tolist() == theirs.tolist()


def test_seeded_sampled_image_codes_equal_upstream_generate(janus_backbone, upstream):
    bb = janus_backbone
    layout = bb.chat_layout()
    cond = layout.image_prompt(layout.text(layout.question_text(PROMPT, False)))
    torch.manual_seed(7)
    ours = sample_image_tokens(plain(bb), bb, [cond], SamplingConfig(temperature=1.0, guidance_scale=5.0),
                               [layout.unconditional_image_prompt(cond)])
    torch.manual_seed(7)
    theirs = upstream.generate(input_ids=torch.tensor([cond]), attention_mask=torch.ones(1, len(cond), dtype=torch.long),
                               generation_mode="image", do_sample=True, guidance_scale=5.0, top_k=0, top_p=1.0,
                               temperature=1.0)
    assert bb.image_map.ids_to_codes(ours).tolist() == theirs.tolist()


def test_decoded_images_equal_the_upstream_decoder_and_postprocess(janus_backbone, upstream):
    bb = janus_backbone
    codes = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
    ours = to_pil(decode_image_tokens(bb, codes + bb.model.text_vocab_size), bb.pixel_scale)
    pixels = upstream.decode_image_tokens(codes)  # channels last, as upstream hands it to postprocess
    theirs = bb.processor.image_processor.postprocess(list(pixels.float()), return_tensors="pt")["pixel_values"]
    for a, b in zip(ours, theirs):  # b: uint8 (3, H, W)
        diff = (torch.from_numpy(np.asarray(a)).permute(2, 0, 1).int() - b.int()).abs()
        assert a.size == (64, 64) and int(diff.max()) <= 1  # rounding of the last step only


def test_a_training_sample_scores_text_in_the_text_head_and_codes_in_the_image_head(janus_backbone, photo):
    bb = janus_backbone
    tokens = PersonalizedTokens.from_backbone(bb.model, bb.vocabulary_map, "bo", 4, 4, bb.default_first_token)
    builder = SampleBuilder(bb, tokens, None, True, group_loss="group")
    generation = builder.build(SampleSpec("generation", photo, False, "A photo of <sks>."))
    codes = [t for t in generation["labels"] if t != IGNORE_INDEX and t >= bb.model.text_vocab_size]
    assert len(codes) == 16 and all(t < bb.logits_width for t in codes)
    recognition = builder.build(SampleSpec("recognition", photo, False, "Is <sks> in this photo?", "Yes"))
    assert sum(t >= bb.logits_width for t in recognition["input_ids"]) == 16  # the shown image's features
    batch = collate([generation, recognition], bb.tokenizer.pad_token_id)
    model = PersonalizedChameleon(bb.model, [tokens])
    out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["weights"])
    out["loss"].backward()
    assert tokens.input_rows.grad.abs().sum() > 0 and tokens.output_rows.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.model.parameters())  # the backbone stays frozen
    # An image target is a softmax over the 512 codes only: uniform logits give log(512) per code.
    from yochameleon.model.personalized import token_cross_entropy

    v = bb.model.text_vocab_size
    flat = torch.zeros(2, bb.logits_width)
    loss = token_cross_entropy(flat, torch.tensor([3, v + 3]), v)
    torch.testing.assert_close(loss, torch.tensor([torch.log(torch.tensor(float(v))), torch.log(torch.tensor(512.0))]))


@pytest.mark.slow
def test_train_answer_and_generate_commands_on_the_tiny_janus(tmp_path, cache_dir, janus_path):
    import os
    import subprocess
    import sys

    from conftest import DEMO

    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}

    def run(module, *args):
        result = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    run("yochameleon.train", "+concept=demo", "model=janus-tiny", "logger=none", "trainer.max_steps=4",
        "trainer.eval_every=4", "trainer.progress=false", "trainer.final_samples=1")
    adapter = tmp_path / "outputs" / "corgi" / "yochameleon" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model"]["source"] == "janus-tiny"
    photo = sorted((DEMO / "corgi" / "train").glob("*.jpg"))[0]
    assert "P(Yes) = " in run("yochameleon.answer", "--adapter", str(adapter), "--image", str(photo))
    assert "What color is <corgi>?" in run("yochameleon.answer", "--adapter", str(adapter), "--question",
                                           "What color is <corgi>?")
    run("yochameleon.generate", "--adapter", str(adapter), "--prompt", "A photo of <corgi> on the beach.", "-n", "2",
        "--out", str(tmp_path / "drawn"))
    drawn = sorted((tmp_path / "drawn").glob("*.png"))
    assert len(drawn) == 2 and all(Image.open(p).size == (64, 64) for p in drawn)


def test_kv_cache_and_full_recompute_give_the_same_greedy_codes(janus_backbone):
    bb = janus_backbone
    layout = bb.chat_layout()
    cond = layout.image_prompt(layout.text(layout.question_text(PROMPT, False)))
    greedy = SamplingConfig(temperature=0, guidance_scale=5.0)
    uncond = [layout.unconditional_image_prompt(cond)]
    cached = sample_image_tokens(plain(bb), bb, [cond], greedy, uncond)
    assert torch.equal(cached, sample_image_tokens(plain(bb), bb, [cond], greedy, uncond, use_cache=False))


def test_shown_images_get_stable_ids_and_features_survive_eviction(janus_backbone, photo):
    from yochameleon.model.janus import ImageBank

    bb = janus_backbone
    same, flipped = bb.shown_image_codes(photo), bb.shown_image_codes(photo, flip=True)
    assert same == bb.shown_image_codes(photo.copy()) and set(same).isdisjoint(flipped)  # keyed by the pixels
    assert min(same) >= bb.logits_width and len(same) == bb.image_seq_length
    first = bb.model.token_embeddings(torch.tensor([same]))
    bank = bb.model.image_bank
    bb.model.image_bank = ImageBank(bank.base, bank.per_image, capacity=1)
    try:
        for name in ("sources", "slots", "keys", "next_slot"):
            setattr(bb.model.image_bank, name, getattr(bank, name))
        bb.model.token_embeddings(torch.tensor([flipped]))  # evicts the first image's features
        assert torch.equal(bb.model.token_embeddings(torch.tensor([same])), first)
        assert len(bb.model.image_bank.features) == 1
    finally:
        bb.model.image_bank = bank


def test_a_janus_model_config_without_its_directory_fails_before_any_work(tmp_path, cache_dir):
    from conftest import compose
    from yochameleon.sources import load_configured_backbone

    cfg = compose(["+concept=demo", "model=janus-pro-1b", f"model.path={tmp_path / 'nowhere'}"], cache_dir)
    with pytest.raises(BackboneError, match="does not exist.*Janus"):
        load_configured_backbone(cfg.model, cache_dir)


def test_a_tokenizer_that_leaves_no_row_free_is_refused_by_name(janus_backbone):
    from yochameleon.model.janus import name_unused_rows

    tokenizer = janus_backbone.tokenizer
    assert name_unused_rows(tokenizer, len(tokenizer)) == 0  # nothing to name: the loader refuses such a checkpoint
    with pytest.raises(BackboneError, match="only 10 rows"):
        name_unused_rows(tokenizer, 10)


def test_janus_draws_with_its_own_guidance_by_default_and_chameleon_without(janus_backbone, backbone):
    assert janus_backbone.default_guidance == 5.0 == janus_backbone.model.generation_config.guidance_scale
    assert backbone.default_guidance == 1.0


def test_the_image_bank_is_bounded_least_recently_shown_first(janus_backbone):
    """issue 24 item 8: a long-lived server shows images without end; the bank keeps the latest max_images."""
    from PIL import Image

    from yochameleon.model.backbone import BackboneError
    from yochameleon.model.janus import ImageBank

    bb = janus_backbone
    real = bb.model.image_bank
    bank = bb.model.image_bank = ImageBank(real.base, real.per_image, capacity=2, max_images=3)
    try:
        images = [Image.new("RGB", (16, 16), (i * 20, 0, 0)) for i in range(6)]
        first = bb.shown_image_codes(images[0])
        kept = bb.model.token_embeddings(torch.tensor([first]))
        for image in images[1:3]:
            bb.shown_image_codes(image)
        assert bb.shown_image_codes(images[0]) == first  # shown again: most recent, same ids
        for image in images[3:]:
            bb.shown_image_codes(image)  # three more: everything but the latest three is forgotten
        assert len(bank.sources) == len(bank.slots) == 3 and len(bank.features) <= 2
        with pytest.raises(BackboneError, match="forgotten.*max_images"):  # never another image's features
            bb.model.token_embeddings(torch.tensor([first]))
        again = bb.shown_image_codes(images[0])
        assert set(again).isdisjoint(first)  # a new slot, never a reused one
        assert torch.equal(bb.model.token_embeddings(torch.tensor([again])), kept)
        for index in range(200):  # many more images: the memory stays bounded
            bb.shown_image_codes(Image.new("RGB", (8, 8), (index, index, 0)))
        assert len(bank.sources) == 3 and len(bank.slots) == 3 and len(bank.keys) == 3
    finally:
        bb.model.image_bank = real
