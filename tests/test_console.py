"""A user's console shows only what matters: our forwards trigger no transformers deprecation warning."""

from __future__ import annotations

import logging
import warnings

import torch
from transformers.utils import logging as hf_logging

from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.model.decoding import left_pad
from yochameleon.model.image_generation import SamplingConfig, sample_image_tokens
from yochameleon.model.personalized import PersonalizedChameleon


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_forward_text_and_image_sampling_log_no_deprecation(backbone):
    tokens = PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, "bo", 4, 3,
                                              "<reserved16200>")
    model = PersonalizedChameleon(backbone.model, [tokens])
    prompt = [backbone.bos_id, *tokens.token_ids.tolist(), 9001, 9002]
    ids, mask = left_pad([prompt, prompt[:4]], backbone.tokenizer.pad_token_id)
    handler = _Collect()
    root = hf_logging.get_logger()  # the "transformers" logger (it does not propagate to the root logger)
    root.addHandler(handler)
    logging.Logger.warning_once.cache_clear()  # a warning already shown in this process would hide otherwise
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            labels = ids.clone()
            model(ids, mask, labels)["loss"].backward()
            model.generate_text(ids, mask, 3, backbone.text_banned_ids(), backbone.text_stop_ids())
            sample_image_tokens(model, backbone, [prompt + [backbone.boi_id]], SamplingConfig(temperature=0),
                                generator=torch.Generator().manual_seed(0))
    finally:
        root.removeHandler(handler)
    assert not [m for m in handler.messages if "deprecat" in m.lower()], handler.messages
