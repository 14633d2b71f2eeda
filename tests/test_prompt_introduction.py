"""Who is introduced in a prompt, and how: one function builds a subject's introduction for training,
inference, evaluation and the baselines (issue 24, item 4); a concept enters a prompt only when the prompt
names it or the caller asks for all loaded concepts (issue 24, item 10)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import DEMO
from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.data.images import load_image
from yochameleon.data.samples import SampleBuilder
from yochameleon.inference import PersonalizedModel

FAMILIES = ["backbone", "janus_backbone"]


def loud_concept(bb, name="bo", k=2):
    """A concept whose rows are far from the backbone's: if its soft prompt reaches a prompt, the answer moves."""
    tokens = PersonalizedTokens.from_backbone(bb.model, bb.vocabulary_map, name, k, k, bb.default_first_token)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        tokens.input_rows.copy_(torch.randn(tokens.input_rows.shape, generator=generator) * 3.0)
        tokens.output_rows.copy_(torch.randn(tokens.output_rows.shape, generator=generator) * 5.0)
    return tokens


class MergingTokenizer:
    """The backbone's tokenizer, except that ".\\n" inside one text is one token (as on a real BPE)."""

    def __init__(self, tokenizer, merged: int):
        self.inner, self.merged = tokenizer, merged

    def __call__(self, text, add_special_tokens=False):
        pieces = text.split(".\n")
        ids = []
        for index, piece in enumerate(pieces):
            if index:
                ids.append(self.merged)
            ids += self.inner(piece, add_special_tokens=False)["input_ids"] if piece else []
        return {"input_ids": ids}

    def __getattr__(self, name):
        return getattr(self.inner, name)


class MergingBackbone:
    """A backbone whose tokenizer merges ".\\n" (everything else is the real backbone's)."""

    def __init__(self, bb, merged: int):
        self._bb = bb
        self.tokenizer = MergingTokenizer(bb.tokenizer, merged)

    def chat_layout(self):
        return dataclasses.replace(self._bb.chat_layout(), tokenizer=self.tokenizer)

    def __getattr__(self, name):
        return getattr(self._bb, name)


@pytest.mark.parametrize("family", FAMILIES)
def test_training_inference_evaluation_and_baselines_build_the_same_introduction(family, request):
    from evaluation.methods import EvalBuilder, TextSubject, adapter_method, baseline_method

    real = request.getfixturevalue(family)
    merged = real.tokenizer("!", add_special_tokens=False)["input_ids"][-1]  # stands for the one ".\n" token
    bb = MergingBackbone(real, merged)
    tokens = loud_concept(real)
    question = "Is <sks> in this photo?"
    training = SampleBuilder(bb, tokens, None, True, group_loss="token").prompt_ids(question)
    assert merged in training  # the soft prompt's "." and its newline are one token here
    assert EvalBuilder(bb, tokens, None, True).prompt_ids(question) == training
    pm = PersonalizedModel(bb, [tokens], {"bo": True}, {"bo": "forced"})
    assert pm.prompt_builder(question).prompt_ids(question) == training
    assert adapter_method(pm, {"bo": "bo"}).builder("bo").prompt_ids(question) == training
    # A baseline's description is introduced by the same function: its text and newline tokenized as one.
    described = baseline_method("description", bb, {"bo": "bo"}, {"bo": "an orange heart"}, {})
    prefix = described.builder("bo").prefix_ids()
    assert prefix == bb.tokenizer("bo is an orange heart.\n")["input_ids"] and prefix[-1] == merged
    # Reference photos split the text: "Photos of bo:", the photos, the newline.
    photo = sorted((DEMO / "corgi" / "train").glob("*.jpg"))[0]
    photos = EvalBuilder(bb, TextSubject("bo", photos=(photo,)), None, False)
    shown = photos.shown_image_ids(photo)
    assert photos.prefix_ids() == [*bb.tokenizer("Photos of bo:")["input_ids"], *shown,
                                   *bb.tokenizer("\n")["input_ids"]]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_prompt_that_names_no_concept_is_the_plain_backbones(family, request):
    from evaluation.run import forgetting

    bb = request.getfixturevalue(family)
    bo = loud_concept(bb, "bo")
    pm = PersonalizedModel(bb, [bo], {"bo": True}, {"bo": "forced"})
    # The forgetting report, measured as answer asks: nothing changes on concept-free prompts.
    photo = sorted((DEMO / "corgi" / "test").glob("*.jpg"))[0]
    result = forgetting(pm, [load_image(photo)], max_new_tokens=6)
    assert result["greedy_changed_share"] == 0.0 and result["first_token_changed"] == 0
    assert result["mean_kl"] == 0.0 and result["concept_token_share"] == 0.0
    plain = PersonalizedModel(bb, [], {}, {})
    question = "What is the capital of France?"
    assert pm.answer(question, max_new_tokens=6) == plain.answer(question, max_new_tokens=6)
    assert pm.answer_prompt_ids(question) == plain.answer_prompt_ids(question)
    identifier = int(bo.token_ids[0])
    assert identifier not in pm.answer_prompt_ids(question)
    # Named, or asked for: introduced (and its self-prompt group follows the prompt).
    assert identifier in pm.answer_prompt_ids("Describe <bo>.")
    everyone = pm.answer_prompt_ids(question, concepts="all")
    assert identifier in everyone and everyone[-len(bo.u_token_ids()):] == bo.u_token_ids()
    assert identifier in pm.image_prompts("A photo of <bo>.")[0]
    assert identifier not in pm.image_prompts("A photo of a cat.")[0]


def test_only_the_named_concepts_are_introduced(backbone):
    bo = loud_concept(backbone, "bo")
    mam = PersonalizedTokens.from_backbone(backbone.model, backbone.vocabulary_map, "mam", 2, 2, "<reserved16300>")
    pm = PersonalizedModel(backbone, [bo, mam], {"bo": True, "mam": True}, {"bo": "forced", "mam": "forced"})
    assert pm.introduced("Describe <mam>.") == ["mam"]
    assert pm.introduced("Are <bo> and <mam> friends?") == ["bo", "mam"]
    assert pm.introduced("Who is in this photo?") == []
    assert pm.introduced("Who is in this photo?", concepts="all") == ["bo", "mam"]
    assert pm.introduced("Is <sks> in this photo?", concept="mam") == ["mam"]
    ids = pm.answer_prompt_ids("Describe <mam>.")
    assert int(mam.token_ids[0]) in ids and int(bo.token_ids[0]) not in ids
    with pytest.raises(Exception, match="concepts="):
        pm.introduced("x", concepts="some")
