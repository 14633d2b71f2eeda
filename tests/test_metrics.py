"""The metrics package: the split scorer training logs with, and a concept's text checks."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from test_evaluation import FixedLogits  # favours one given word per prompt, in the order asked

from conftest import DEMO, compose
from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.data.concept import EvalSplit, TextCheck, parse_text_checks
from yochameleon.data.images import load_image
from yochameleon.data.samples import SampleBuilder
from yochameleon.errors import ConceptDataError
from yochameleon.metrics.options import score_text_checks
from yochameleon.metrics.recognition import recognition_accuracy, recognition_metrics, yes_probabilities
from yochameleon.model.personalized import PersonalizedChameleon


def _adapter(backbone, self_prompting: bool):
    torch.manual_seed(0)
    tokens = PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, "bo", 2, 2)
    with torch.no_grad():
        tokens.input_rows.normal_(0, 1.0)
        tokens.output_rows.normal_(0, 1.0)
    return PersonalizedChameleon(backbone.model, [tokens]).eval(), SampleBuilder(backbone, tokens, None, self_prompting)


@pytest.mark.parametrize("self_prompting", [True, False])
def test_split_scorer_is_yes_probabilities_and_recognition_accuracy(backbone, self_prompting):
    model, builder = _adapter(backbone, self_prompting)
    positives = [load_image(p) for p in sorted((DEMO / "corgi" / "test").glob("*.jpg"))[:2]]
    negatives = [load_image(p) for p in sorted((DEMO / "negatives" / "test").glob("*.jpg"))[:3]]
    metrics = recognition_metrics(model, builder, EvalSplit("val", positives, negatives, True), batch_size=2,
                                  prefix="val")
    expected = {"val/split": "val", "val/split_is_heldout": 1.0}
    for mode, name in (("forced", "val/recognition"), ("emitted", "val/recognition_emitted"))[:1 + self_prompting]:
        p_pos = yes_probabilities(model, builder, positives, batch_size=2, self_prompt=mode)
        p_neg = yes_probabilities(model, builder, negatives, batch_size=2, self_prompt=mode)
        expected |= {f"{name}/{k}": v for k, v in recognition_accuracy(p_pos, p_neg).items()}
        expected |= {f"{name}/mean_p_yes_positive": float(p_pos.mean()),
                     f"{name}/mean_p_yes_negative": float(p_neg.mean())}
    assert metrics == expected
    assert list(metrics) == list(expected)
    assert any(k.startswith("val/recognition_emitted/") for k in metrics) == self_prompting


def test_text_checks_are_scored_per_wording_and_attribute(backbone):
    colours, eyes = ("red", "blue", "green"), ("red", "blue")
    checks = [TextCheck("What colour is <sks>?", colours, "blue", "training", "colour"),
              TextCheck("What colour are the eyes of <sks>?", eyes, "red", "training", "eyes"),
              TextCheck("Which colour does <sks> have?", colours, "blue", "heldout", "colour"),
              TextCheck("Tell me the colour of <sks>.", colours, "blue", "heldout", "colour")]
    _, builder = _adapter(backbone, True)
    model = FixedLogits(backbone, ["blue", "blue", "blue", "green"])
    figures = score_text_checks(model, builder, checks)
    assert figures == {"text_qa": 0.5, "text_qa_heldout": 0.5, "text_qa_colour": 1.0, "text_qa_eyes": 0.0,
                       "text_qa_heldout_colour": 0.5}
    assert list(figures) == ["text_qa", "text_qa_heldout", "text_qa_colour", "text_qa_eyes", "text_qa_heldout_colour"]
    assert model.calls == 4
    # Only training wordings: no held-out figure at all.
    assert score_text_checks(FixedLogits(backbone, ["red"]), builder, checks[1:2]) == {"text_qa": 1.0,
                                                                                         "text_qa_eyes": 1.0}


def test_text_checks_are_read_from_the_concept_config_and_checked():
    checks = parse_text_checks("bo", OmegaConf.create([
        {"question": "What colour is <sks>?", "options": ["red", "blue"], "answer": "red", "attribute": "colour"},
        {"question": "Tell me the colour of <sks>.", "options": ["red", "blue"], "answer": "blue",
         "wording": "heldout"}]))
    assert checks == [TextCheck("What colour is <sks>?", ("red", "blue"), "red", "training", "colour"),
                      TextCheck("Tell me the colour of <sks>.", ("red", "blue"), "blue", "heldout", "")]
    for entry, message in (({"question": "q", "options": ["a", "b"], "answer": "c"}, "not one of the options"),
                           ({"question": "q", "options": ["a"], "answer": "a"}, "at least two"),
                           ({"question": "q", "options": ["a", "b"], "answer": "a", "wording": "new"}, "wording"),
                           ({"options": ["a", "b"], "answer": "a"}, "needs a question")):
        with pytest.raises(ConceptDataError, match=message) as err:
            parse_text_checks("bo", [entry])
        assert "concept <bo>: text_checks[0]" in str(err.value)


def test_toy_concepts_carry_their_attribute_checks_in_config(tmp_path):
    from yochameleon.toyworld import world
    from yochameleon.toyworld.checks import HELDOUT_QUESTIONS, text_checks
    from yochameleon.toyworld.concepts import CONCEPTS

    cfg = compose(["+concept=toy-bo"], tmp_path)
    checks = parse_text_checks("bo", cfg.concept.text_checks)
    assert cfg.concept.text_checks == text_checks("bo")
    training = [c for c in checks if c.wording == "training"]
    assert [c.question for c in training] == [q for q, _ in world.CONCEPT_QUESTIONS.values()]
    assert len(checks) - len(training) == sum(len(v) for v in HELDOUT_QUESTIONS.values())
    assert all(c.answer == getattr(CONCEPTS["bo"], c.attribute) for c in checks)
    assert all(c.options == world.ATTRIBUTE_VALUES[c.attribute] for c in checks)
