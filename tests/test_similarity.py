"""Generation similarity metrics (CLIP-I, CLIP-T, DINO) on tiny random encoders and the demo photos."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch
from PIL import Image

from evaluation.similarity import (
    ClipScorer,
    DinoScorer,
    SimilarityError,
    build_tiny_clip,
    build_tiny_dino,
    clip_tokenizer,
    pairwise_mean_cosine,
    tiny_clip_config,
)
from yochameleon.errors import YoChameleonError

DEMO = Path(__file__).resolve().parents[1] / "yochameleon" / "assets" / "demo"


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict:
    """Tiny random CLIP and DINO written to disk once per module."""
    root = tmp_path_factory.mktemp("similarity-encoders")
    clip_model, clip_checkpoint = build_tiny_clip(root / "clip")
    return {"clip_model": clip_model, "clip_checkpoint": clip_checkpoint, "dino": build_tiny_dino(root / "dino")}


@pytest.fixture(scope="module")
def clip(encoders) -> ClipScorer:
    return ClipScorer(encoders["clip_model"], encoders["clip_checkpoint"])


@pytest.fixture(scope="module")
def dino(encoders) -> DinoScorer:
    return DinoScorer(encoders["dino"])


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    paths = sorted((DEMO / "corgi" / "train").glob("*.jpg"))
    assert len(paths) >= 3
    return [Image.open(p).convert("RGB") for p in paths]


@pytest.fixture(scope="module")
def others() -> list[Image.Image]:
    paths = sorted((DEMO / "negatives" / "train").glob("*.jpg"))[:4]
    assert paths
    return [Image.open(p).convert("RGB") for p in paths]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---- pairwise_mean_cosine ---------------------------------------------------------------------------------
def test_pairwise_mean_cosine_on_hand_made_unit_vectors():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    diagonal = [math.sqrt(0.5), math.sqrt(0.5)]
    assert pairwise_mean_cosine(torch.tensor([e1]), torch.tensor([e1, e2])) == pytest.approx(0.5)
    assert pairwise_mean_cosine(torch.tensor([e1]), torch.tensor([e2])) == pytest.approx(0.0)
    assert pairwise_mean_cosine(torch.tensor([e1]), torch.tensor([[-1.0, 0.0]])) == pytest.approx(-1.0)
    assert pairwise_mean_cosine(torch.tensor([e1, e2]), torch.tensor([diagonal])) == pytest.approx(math.sqrt(0.5))
    # (1 + 0 + 0 + 1) / 4: every pair counts, not only matching rows.
    assert pairwise_mean_cosine(torch.tensor([e1, e2]), torch.tensor([e1, e2])) == pytest.approx(0.5)


def test_pairwise_mean_cosine_rejects_bad_shapes():
    with pytest.raises(ValueError, match="tensors"):
        pairwise_mean_cosine(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="at least one"):
        pairwise_mean_cosine(torch.ones(0, 3), torch.ones(2, 3))


# ---- CLIP --------------------------------------------------------------------------------------------------
def test_clip_embeddings_are_unit_vectors(clip, photos):
    images, texts = clip.image_embeddings(photos), clip.text_embeddings(["a dog", "a photo of a corgi"])
    assert images.shape == (len(photos), 32) and texts.shape == (2, 32)
    assert torch.allclose(images.norm(dim=-1), torch.ones(len(photos)), atol=1e-5)
    assert torch.allclose(texts.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_clip_i_of_an_image_with_itself_is_one_and_lower_for_another(clip, photos, others):
    assert clip.clip_i(photos[:1], photos[:1]) == pytest.approx(1.0, abs=1e-5)
    assert clip.clip_i(photos[:1], others[:1]) < 1.0 - 1e-4


def test_clip_i_is_the_mean_over_all_pairs(clip, photos, others):
    forward = clip.clip_i(photos[:2], photos + others)
    assert forward == pytest.approx(clip.clip_i(photos[:2], (photos + others)[::-1]), abs=1e-6)
    assert forward == pytest.approx(clip.clip_i((photos + others)[::-1], photos[:2]), abs=1e-6)
    gen, ref = clip.image_embeddings(photos[:2]), clip.image_embeddings(photos + others)
    assert forward == pytest.approx(float(sum(g @ r for g in gen for r in ref)) / (len(gen) * len(ref)), abs=1e-5)


def test_clip_t_pairs_each_image_with_its_own_prompt(clip, photos, others):
    images, prompts = [photos[0], others[0]], ["a photo of a corgi", "a photo of a backpack"]
    score = clip.clip_t(images, prompts)
    assert isinstance(score, float) and math.isfinite(score) and -1.0 <= score <= 1.0
    own = (clip.image_embeddings(images) * clip.text_embeddings(prompts)).sum(-1).mean()
    assert score == pytest.approx(float(own), abs=1e-5)
    with pytest.raises(ValueError, match="one prompt per image"):
        clip.clip_t(images, prompts[:1])
    with pytest.raises(ValueError, match="one prompt per image"):
        clip.clip_t(images, "a photo of a corgi")
    with pytest.raises(ValueError, match="no images"):
        clip.clip_i([], photos)


def test_standard_clip_tokenizer_and_tiny_clip_load_without_network(no_network, encoders, photos):
    import open_clip

    tokenizer = clip_tokenizer("ViT-B-32")
    assert isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer)
    assert tokenizer(["a photo of a dog"]).shape == (1, 77)
    scorer = ClipScorer(encoders["clip_model"], encoders["clip_checkpoint"])
    assert -1.0 <= scorer.clip_t(photos[:1], ["a dog"]) <= 1.0


def test_a_tokenizer_that_needs_the_hub_is_refused(tmp_path, encoders):
    config = tiny_clip_config()
    config["text_cfg"]["hf_tokenizer_name"] = "yc-tests/no-such-local-tokenizer"
    path = tmp_path / "yc-tiny-clip-hf-tokenizer.json"
    path.write_text(json.dumps(config))
    with pytest.raises(SimilarityError, match="yc-tests/no-such-local-tokenizer"):
        ClipScorer(str(path), encoders["clip_checkpoint"])
    with pytest.raises(SimilarityError, match="Hugging Face Hub"):
        ClipScorer("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", encoders["clip_checkpoint"])


def test_missing_clip_checkpoint_names_the_path_and_the_setting(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(SimilarityError, match="clip.checkpoint") as err:
        ClipScorer("ViT-B-32", missing)
    assert str(missing) in str(err.value)
    assert isinstance(err.value, YoChameleonError)


def test_unknown_clip_architecture_or_config_is_named(tmp_path, encoders):
    with pytest.raises(SimilarityError, match="not an open_clip architecture"):
        ClipScorer("ViT-Nonexistent-7", encoders["clip_checkpoint"])
    with pytest.raises(SimilarityError, match="clip.model") as err:
        ClipScorer(str(tmp_path / "missing.json"), encoders["clip_checkpoint"])
    assert str(tmp_path / "missing.json") in str(err.value)


def test_clip_checkpoint_of_the_wrong_architecture_is_refused(tmp_path, encoders):
    config = tiny_clip_config()
    config["embed_dim"], config["vision_cfg"]["width"] = 16, 96  # same layout, other sizes
    path = tmp_path / "yc-tiny-clip-wide.json"
    path.write_text(json.dumps(config))
    with pytest.raises(SimilarityError, match="does not fit") as err:
        ClipScorer(str(path), encoders["clip_checkpoint"])
    assert str(encoders["clip_checkpoint"]) in str(err.value) and "clip.model" in str(err.value)


# ---- DINO --------------------------------------------------------------------------------------------------
def test_tiny_dino_processor_mirrors_the_dinov2_one(encoders):
    config = json.loads((encoders["dino"] / "preprocessor_config.json").read_text())
    assert config["image_processor_type"] == "BitImageProcessor"
    assert config["crop_size"] == {"height": 64, "width": 64} and config["size"] == {"shortest_edge": 64}
    assert config["image_mean"] == [0.485, 0.456, 0.406] and config["image_std"] == [0.229, 0.224, 0.225]
    assert config["resample"] == 3 and config["do_center_crop"] and config["do_normalize"]


def test_dino_of_an_image_with_itself_is_one_and_lower_for_another(dino, photos, others):
    embeddings = dino.image_embeddings(photos)
    assert embeddings.shape == (len(photos), 32)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(len(photos)), atol=1e-5)
    assert dino.dino(photos[:1], photos[:1]) == pytest.approx(1.0, abs=1e-5)
    assert dino.dino(photos[:1], others[:1]) < 1.0 - 1e-4
    assert dino.dino(photos[:2], photos + others) == pytest.approx(dino.dino(photos[:2], (photos + others)[::-1]),
                                                                   abs=1e-6)


def test_missing_dino_directory_names_the_path_and_the_setting(tmp_path):
    with pytest.raises(SimilarityError, match="dino.checkpoint") as err:
        DinoScorer(tmp_path / "no-such-dir")
    assert str(tmp_path / "no-such-dir") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SimilarityError, match="no config.json"):
        DinoScorer(tmp_path / "empty")


def test_dino_checkpoint_of_the_wrong_architecture_is_refused(tmp_path, encoders):
    import shutil

    def copy_with(name: str, **changes) -> Path:
        wrong = tmp_path / name
        shutil.copytree(encoders["dino"], wrong)
        config = json.loads((wrong / "config.json").read_text())
        (wrong / "config.json").write_text(json.dumps({**config, **changes}))
        return wrong

    # The weights are 32 wide and 2 layers deep: other widths fail to load, extra layers would be random.
    for wrong in [copy_with("wider", hidden_size=48), copy_with("deeper", num_hidden_layers=3)]:
        with pytest.raises(SimilarityError, match="do not fit") as err:
            DinoScorer(wrong)
        assert str(wrong) in str(err.value) and "dino.checkpoint" in str(err.value)
    (wrong / "model.safetensors").unlink()
    with pytest.raises(SimilarityError, match="cannot be loaded"):
        DinoScorer(wrong)
