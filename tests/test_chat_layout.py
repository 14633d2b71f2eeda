"""One chat layout: pinned token ids of training, generation and evaluation prompts."""

from __future__ import annotations

import pytest
import torch

from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.data.chat import ChameleonLayout, chat_layout
from yochameleon.data.samples import SampleBuilder, SampleSpec

CODES = [[4, 5, 6], [7, 8, 9]]  # image-token ids of a stand-in photo, unflipped and flipped


class FixedCodes:
    """A VQ-code cache that shows the same short stand-in image for every path."""

    def __init__(self, codes=CODES):
        self.rows = torch.tensor(codes)

    def codes(self, path):
        return self.rows


@pytest.fixture
def tokens(backbone):
    return PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, "bo", 2, 2)


# The tiny model's ids, read off its vocabulary: <s> 0, <racm3:break> 8197, <eoss> 8196, end of turn
# (<reserved08706>) 8710; <bo>'s tokens <reserved16200>..<reserved16204> are 16930..16934 (identifier,
# 2 g-tokens, 2 u-tokens). The text ids come from the tiny BPE, which is trained on data/templates.py:
# editing a template changes them, and these literals are then re-read from the new tokenizer.
SKS, G, U = 16930, [16931, 16932], [16933, 16934]
PREFIX = [SKS, 8984, 8932, *G, *U, 8725, 8910]  # "<sks>", " is", " ", g, u, ".", "\n"
BOS, BOI, EOI, EOT = 0, 8197, 8196, 8710


def test_recognition_prompt_ids_are_pinned(backbone, tokens):
    builder = SampleBuilder(backbone, tokens, FixedCodes(), self_prompting=True)
    assert builder.prefix_ids() == PREFIX
    prompt = builder.prompt_ids("Is <sks> in this photo?", "photo.jpg", flip=True)
    question = [9022, 8932, SKS, 8983, 8982, 8989, 8742]  # "Is", " ", "<sks>", " in", " this", " photo", "?"
    assert prompt == [BOS, *PREFIX, BOI, 7, 8, 9, EOI, *question, EOT]


def test_text_qa_training_sample_ids_are_pinned(backbone, tokens):
    builder = SampleBuilder(backbone, tokens, FixedCodes(), self_prompting=True)
    sample = builder.build(SampleSpec("text_qa", None, False, "What is <sks>?", "A dog."))
    prompt = [BOS, *PREFIX, 9117, 8984, 8932, SKS, 8742, EOT]  # ... "What", " is", " ", "<sks>", "?", end of turn
    answer = [*U, 8744, 9108, 8725, EOT]  # the u-tokens (self-prompt), "A", " dog", ".", end of turn
    assert sample["input_ids"] == prompt + answer
    assert sample["labels"] == [-100] * len(prompt) + answer
    assert sample["weights"] == [0.0] * len(prompt) + [1.0] * len(answer)


def test_generation_prompt_ids_are_pinned(backbone, tokens):
    builder = SampleBuilder(backbone, tokens, FixedCodes(), self_prompting=True)
    question = [8744, 8989, 9012, 8932, SKS, 8725]  # "A", " photo", " of", " ", "<sks>", "."
    assert builder.image_prompt_ids("A photo of <sks>.") == [BOS, *PREFIX, *question, EOT, *G, BOI]
    assert builder.unconditional_image_prompt_ids() == [BOS, EOT, BOI]
    sample = builder.build(SampleSpec("generation", "photo.jpg", False, "A photo of <sks>."))
    assert sample["input_ids"] == [BOS, *PREFIX, *question, EOT, *G, BOI, 4, 5, 6, EOI, EOT]
    no_group = SampleBuilder(backbone, tokens, FixedCodes(), self_prompting=False)
    assert no_group.image_prompt_ids("A photo of <sks>.") == [BOS, *PREFIX, *question, EOT, BOI]


def test_the_layout_alone():
    layout = ChameleonLayout(tokenizer=None, bos=0, boi=3, eoi=2, end_of_turn=1)
    assert layout.image([10, 11]) == [3, 10, 11, 2]
    assert layout.prompt([20, 21], prefix=[30], image=layout.image([10])) == [0, 30, 3, 10, 2, 20, 21, 1]
    assert layout.answer([40], group=[50, 51]) == [50, 51, 40, 1]
    assert layout.image_prompt([20], prefix=[30], group=[50]) == [0, 30, 20, 1, 50, 3]


def test_evaluation_baselines_and_adapters_use_the_same_layout(backbone, tokens):
    from evaluation.methods import EvalBuilder, TextSubject

    question = "Is <sks> in this photo?"
    adapter = EvalBuilder(backbone, tokens, None, True)
    assert adapter.prompt_ids(question) == SampleBuilder(backbone, tokens, None, True).prompt_ids(question)
    assert adapter.image_prompt_ids("A photo of <sks>.") == \
        SampleBuilder(backbone, tokens, None, True).image_prompt_ids("A photo of <sks>.")
    layout = chat_layout(backbone)
    plain = EvalBuilder(backbone, TextSubject("bo"), None, False)
    assert plain.prompt_ids(question) == layout.prompt(layout.text("Is bo in this photo?"))
    described = EvalBuilder(backbone, TextSubject("bo", "an orange heart"), None, False)
    prefix = layout.text("bo is an orange heart.") + layout.text("\n")
    assert described.prompt_ids(question) == layout.prompt(layout.text("Is bo in this photo?"), prefix)
