"""Image generation: constrained sampling, KV cache parity, guidance, seeds, decoding, PNGs, bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose
from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.errors import YoChameleonError
from yochameleon.inference import PersonalizedModel
from yochameleon.model.image_generation import (
    GenerationUnavailable, SamplingConfig, decode_image_tokens, filter_logits, sample_image_tokens, to_pil,
)
from yochameleon.model.personalized import PersonalizedChameleon
from yochameleon.training.recipe import train


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, cache_dir):
    run_dir = tmp_path_factory.mktemp("gen-run")
    train(compose(["+concept=demo", "logger=none", "trainer.max_steps=2", "trainer.eval_every=2"], cache_dir), run_dir)
    assert (run_dir / "samples" / "step_000002.png").exists()  # training draws a sample at each evaluation
    return run_dir / "adapter"


@pytest.fixture(scope="module")
def pm(adapter, cache_dir):
    return PersonalizedModel.load([adapter], cache_dir=cache_dir)


def test_n_images_of_the_right_size_reproducible_by_seed(pm):
    a = pm.generate_images("A photo of <corgi> on the beach.", n=3, seed=7, batch_size=2)
    b = pm.generate_images("A photo of <corgi> on the beach.", n=3, seed=7, batch_size=2)
    c = pm.generate_images("A photo of <corgi> on the beach.", n=1, seed=8)
    assert len(a) == 3 and all(im.size == (64, 64) and im.mode == "RGB" for im in a)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))


def _prompts(pm):
    return pm.image_prompts("A photo of <corgi>.")


def test_every_sampled_token_is_an_image_token_even_when_text_is_favoured(pm):
    backbone = pm.backbone
    head = backbone.model.lm_head.weight
    saved = head.data.clone()
    text = ~backbone.image_map.is_image_token
    head.data[text] = head.data.abs().max() * 100  # make every non-image token overwhelmingly likely
    try:
        cond, _ = _prompts(pm)
        tokens = sample_image_tokens(pm.model, backbone, [cond, cond], SamplingConfig(temperature=1.0),
                                     generator=torch.Generator().manual_seed(0))
    finally:
        head.data.copy_(saved)
    assert tokens.shape == (2, backbone.image_seq_length)
    assert bool(backbone.image_map.is_image_token[tokens].all())


def test_kv_cache_and_full_recompute_give_identical_greedy_tokens(pm):
    cond, uncond = _prompts(pm)
    greedy = SamplingConfig(temperature=0.0)
    cached = sample_image_tokens(pm.model, pm.backbone, [cond], greedy)
    full = sample_image_tokens(pm.model, pm.backbone, [cond], greedy, use_cache=False)
    assert torch.equal(cached, full)
    # Left padding in a batch must not change a row's tokens.
    batch = sample_image_tokens(pm.model, pm.backbone, [cond, uncond], greedy)
    assert torch.equal(batch[0], cached[0])


def test_guidance_scale_one_is_plain_sampling_and_zero_is_unconditional(pm):
    cond, uncond = _prompts(pm)
    greedy = SamplingConfig(temperature=0.0, guidance_scale=1.0)
    plain = sample_image_tokens(pm.model, pm.backbone, [cond], greedy)
    assert torch.equal(sample_image_tokens(pm.model, pm.backbone, [cond], greedy, [uncond]), plain)
    only_uncond = sample_image_tokens(pm.model, pm.backbone, [uncond], greedy)
    zero = SamplingConfig(temperature=0.0, guidance_scale=0.0)
    assert torch.equal(sample_image_tokens(pm.model, pm.backbone, [cond], zero, [uncond]), only_uncond)
    strong = sample_image_tokens(pm.model, pm.backbone, [cond], SamplingConfig(temperature=0.0, guidance_scale=5.0),
                                 [uncond])
    assert strong.shape == plain.shape


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert torch.isinf(filter_logits(logits, 2, 1.0)).tolist() == [[False, False, True, True]]
    probs = torch.softmax(logits, -1)[0]  # 0.64, 0.24, 0.09, 0.03
    kept = ~torch.isinf(filter_logits(logits, 0, 0.8))
    assert kept.tolist() == [[True, True, False, False]] and probs[:2].sum() > 0.8


def test_decoding_and_anole_postprocessing(backbone):
    ids = backbone.encode_images(torch.rand(2, 3, 64, 64) * 2 - 1)
    pixels = decode_image_tokens(backbone, ids)
    assert pixels.shape == (2, 3, 64, 64) and torch.isfinite(pixels).all()
    images = to_pil(torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2), 0.0078)
    assert np.asarray(images[0])[0, 0].tolist() == [0, 128, 255]
    with pytest.raises(ValueError, match="256 tokens"):
        decode_image_tokens(backbone, ids[:, :10])


def test_backbone_without_decoder_refuses_generation_clearly(pm):
    pm.backbone.has_decoder = False
    try:
        with pytest.raises(GenerationUnavailable, match="no VQ decoder"):
            pm.generate_images("A photo of <corgi>.")
    finally:
        pm.backbone.has_decoder = True


def test_bad_generation_requests(pm):
    with pytest.raises(YoChameleonError, match="loaded: <corgi>"):
        pm.generate_images("A photo of <mam>.")
    with pytest.raises(YoChameleonError, match="positive"):
        pm.generate_images("A photo of <corgi>.", n=0)
    with pytest.raises(YoChameleonError, match="guidance"):
        pm.generate_images("A photo of <corgi>.", guidance_scale=-1)
    with pytest.raises(YoChameleonError, match="context window"):
        pm.generate_images("A photo of <corgi>. " + "very " * 2000)


def test_two_concepts_in_one_generation_prompt(pm, adapter, tmp_path, cache_dir):
    from yochameleon.concept.adapter import save_adapter

    other = PersonalizedTokens.from_backbone(pm.backbone.model, pm.backbone.config.vocabulary_map, "mam", 16, 16)
    save_adapter(tmp_path / "mam", other, pm.backbone.fingerprint(), {"self_prompting": True})
    both = PersonalizedModel.load([adapter, tmp_path / "mam"], cache_dir=cache_dir)
    cond, _ = both.image_prompts("<corgi> and <mam> on the beach.")
    assert int(both.concepts["mam"].token_ids[0]) in cond and int(both.concepts["corgi"].token_ids[0]) in cond
    assert len(both.generate_images("<corgi> and <mam> on the beach.", n=1)) == 1
    assert isinstance(both.model, PersonalizedChameleon)


def test_generate_cli_writes_pngs(adapter, tmp_path, cache_dir):
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir)}
    args = [sys.executable, "-m", "yochameleon.generate", "--adapter", str(adapter), "--prompt",
            "A photo of <corgi> on the beach.", "-n", "2", "--guidance", "2.0", "--seed", "3", "--out"]
    result = subprocess.run([*args, str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    files = sorted((tmp_path / "out").glob("*.png"))
    assert len(files) == 2 and all(Image.open(f).size == (64, 64) for f in files)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = subprocess.run([*args, str(blocker / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 1 and "cannot write to output directory" in bad.stderr
    neg = subprocess.run([*args[:-1], "--guidance", "-1", "--out", str(tmp_path / "o2")], capture_output=True,
                         text=True, env=env, timeout=300)
    assert neg.returncode != 0 and "guidance" in neg.stderr
