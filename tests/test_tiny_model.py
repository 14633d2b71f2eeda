"""The tiny Chameleon: real classes, the 7B token layout, Anole decoder weights, HF round trip."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import ChameleonForConditionalGeneration

from yochameleon.model.backbone import BackboneError
from yochameleon.model.load import check_directory, load_backbone
from yochameleon.tiny.chameleon import build_tiny_checkpoint, image_token_name


def test_vocabulary_has_the_7b_layout(backbone):
    vocab = backbone.config.vocabulary_map
    assert backbone.config.vocab_size == 65536 == len(vocab)
    assert vocab["IMGIMGAZ"] == 4 and vocab["IMGIMGBCZ"] == 16 and vocab[image_token_name(8191)] == 8195
    assert image_token_name(12) == "IMGIMGBCZ"
    assert (vocab["<eoss>"], vocab["<racm3:break>"], vocab["<reserved08706>"], vocab["<image>"]) == (
        8196, 8197, 8710, 8711)
    assert "<reserved16200>" in vocab
    assert backbone.tokenizer.convert_tokens_to_ids("<reserved16200>") == vocab["<reserved16200>"]
    assert backbone.image_map.image_token_ids.tolist() == list(range(4, 8196))


def test_real_transformers_class_and_anole_weight_names(backbone, tiny_path):
    assert isinstance(backbone.model, ChameleonForConditionalGeneration)
    assert json.loads((tiny_path / "config.json").read_text())["architectures"] == [
        "ChameleonForConditionalGeneration"]
    with safe_open(str(tiny_path / "model.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
    for name in ("model.vqmodel.decoder.conv_in.weight", "model.vqmodel.decoder.mid.attn_1.q.weight",
                 "model.vqmodel.decoder.up.0.block.1.conv2.weight", "model.vqmodel.decoder.up.1.upsample.conv.weight",
                 "model.vqmodel.decoder.up.0.block.0.nin_shortcut.weight", "model.vqmodel.decoder.norm_out.weight",
                 "model.vqmodel.post_quant_conv.weight", "model.vqmodel.quantize.embedding.weight",
                 "model.vqmodel.encoder.down.0.block.0.conv1.weight"):
        assert name in keys, name
    assert backbone.has_decoder
    # The decoder mirrors the encoder: no upsample at full resolution, attention at 16x16 only.
    assert not hasattr(backbone.model.model.vqmodel.decoder.up[0], "upsample")
    assert len(backbone.model.model.vqmodel.decoder.up[2].attn) == 2


def test_loading_reports_no_missing_or_unexpected_weights(tiny_path, caplog):
    with caplog.at_level(logging.WARNING):
        load_backbone(tiny_path)
    text = caplog.text.lower()
    assert "load report" not in text and "unexpected" not in text and "missing" not in text


def test_encoder_decoder_shapes_and_token_mapping(backbone):
    pixels = torch.rand(2, 3, 64, 64) * 2 - 1
    ids = backbone.encode_images(pixels)
    assert ids.shape == (2, backbone.image_seq_length) == (2, 256)
    assert bool(backbone.image_map.is_image_token[ids].all())
    codes = backbone.image_map.ids_to_codes(ids)
    assert torch.equal(backbone.image_map.codes_to_ids(codes), ids)
    vq = backbone.model.model.vqmodel
    latent = vq.quantize.embedding(codes).view(2, 16, 16, -1).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = vq.decoder(vq.post_quant_conv(latent))
    assert out.shape == (2, 3, 64, 64)
    with pytest.raises(ValueError):
        backbone.image_map.ids_to_codes(torch.tensor([backbone.boi_id]))


def test_build_is_deterministic(tmp_path, tiny_path):
    rebuilt = build_tiny_checkpoint(tmp_path / "again")
    a, b = load_file(str(tiny_path / "model.safetensors")), load_file(str(rebuilt / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tiny_path / "tokenizer.json").read_bytes() == (rebuilt / "tokenizer.json").read_bytes()


def test_checkpoint_without_decoder_loads_for_understanding(tmp_path, tiny_path):
    target = tmp_path / "no-decoder"
    target.mkdir()
    for item in tiny_path.iterdir():
        if item.name != "model.safetensors":
            (target / item.name).write_bytes(item.read_bytes())
    weights = load_file(str(tiny_path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if ".decoder." not in k}, str(target / "model.safetensors"),
              metadata={"format": "pt"})
    loaded = load_backbone(target)
    assert not loaded.has_decoder
    assert loaded.encode_images(torch.zeros(1, 3, 64, 64)).shape == (1, 256)


@pytest.mark.parametrize("case", ["missing", "empty", "not-chameleon"])
def test_bad_model_path_fails_at_once_with_the_expected_layout(tmp_path, case):
    path = tmp_path / "ckpt"
    if case != "missing":
        path.mkdir()
    if case == "not-chameleon":
        (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(BackboneError, match="config.json") as err:
        check_directory(path)
    assert str(path) in str(err.value)


def test_sharded_checkpoint_loads_decoder_without_warnings(tmp_path, backbone, tiny_path, caplog):
    sharded = tmp_path / "sharded"
    backbone.model.save_pretrained(sharded, max_shard_size="20MB")
    backbone.processor.save_pretrained(sharded)
    assert (sharded / "model.safetensors.index.json").exists() and len(list(sharded.glob("*.safetensors"))) > 1
    with caplog.at_level(logging.WARNING):
        loaded = load_backbone(sharded)
    assert loaded.has_decoder and "unexpected" not in caplog.text.lower() and "missing" not in caplog.text.lower()
    ours, theirs = loaded.model.model.vqmodel.decoder.state_dict(), backbone.model.model.vqmodel.decoder.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_upstream_class_would_drop_the_decoder_and_say_so(tiny_path, caplog):
    # Positive control for the no-warning checks above: the same log capture sees upstream's report.
    with caplog.at_level(logging.WARNING):
        ChameleonForConditionalGeneration.from_pretrained(str(tiny_path))
    assert "UNEXPECTED" in caplog.text and "model.vqmodel.decoder" in caplog.text
