"""Issue 26.1: a backbone family's facts are small parts in model/ (token facts, sampling defaults, image codec)
that `Backbone` composes; the backbone's own attributes read through them."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

FAMILIES = ["backbone", "janus_backbone"]
MEMBERS = {
    "token_facts": ["vocabulary_map", "logits_width", "bos_id", "boi_id", "eoi_id", "end_of_turn_id", "reserved_ids"],
    "sampling_defaults": ["default_guidance", "recorded_sampling"],
    "codec": ["pixel_scale", "image_seq_length"],
}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_backbone_answers_with_its_parts(family, request):
    bb = request.getfixturevalue(family)
    for part, names in MEMBERS.items():
        for name in names:
            assert getattr(bb, name) == getattr(getattr(bb, part), name), f"{family}.{name}"
    assert bb.image_map is bb.token_facts.image_map
    assert torch.equal(bb.text_banned_ids(), bb.token_facts.text_banned_ids())
    assert bb.text_stop_ids() == bb.token_facts.text_stop_ids()
    assert bb.sampling() == bb.sampling_defaults.sampling() and bb.guidance(None) == bb.sampling_defaults.guidance(None)
    image = Image.new("RGB", (64, 64), (200, 40, 90))
    assert bb.image_codes(image) == bb.codec.image_codes(image)


def test_chameleon_token_facts_need_only_the_config(backbone):
    # The ids are the checkpoint's config's: no model, tokenizer or processor is read for them.
    from yochameleon.model.token_facts import TokenFacts
    from yochameleon.tiny.chameleon import BOI_ID, EOI_ID

    facts = TokenFacts(backbone.config, backbone.path)
    assert (facts.bos_id, facts.boi_id, facts.eoi_id, facts.end_of_turn_id) == (0, BOI_ID, EOI_ID, 8710)
    assert facts.text_stop_ids() == [8710, 2] and 8710 in facts.reserved_ids
    banned = facts.text_banned_ids(allow=[facts.reserved_ids[-1]])
    assert banned[BOI_ID] and not banned[8710] and not banned[facts.reserved_ids[-1]] and banned[facts.reserved_ids[0]]


def test_sampling_defaults_read_the_checkpoint_alone(tmp_path):
    import json

    from yochameleon.errors import YoChameleonError
    from yochameleon.model.sampling_defaults import SamplingDefaults

    assert SamplingDefaults(tmp_path).sampling().guidance_scale == 1.0  # no generation_config.json: the family's
    (tmp_path / "generation_config.json").write_text(json.dumps({"image_sampling": {"guidance_scale": 2.5, "top_k": 7}}))
    chosen = SamplingDefaults(tmp_path).sampling(top_k=3)
    assert (chosen.guidance_scale, chosen.top_k, chosen.temperature) == (2.5, 3, 1.0)
    (tmp_path / "generation_config.json").write_text(json.dumps({"image_sampling": {"heat": 1}}))
    with pytest.raises(YoChameleonError, match="heat"):
        SamplingDefaults(tmp_path).recorded_sampling
