"""The toy concepts' text checks: their attribute questions, in the training wordings and in held-out ones.

`${toyworld_checks:bo}` in a toy concept's config (see `yochameleon.config`) is `text_checks("bo")`,
read as `concept.text_checks` and scored by `yochameleon.metrics.options.score_text_checks` at the
end of training, and by `score_text_qa` / `text_qa` here in the toy benchmark (benchmarks/toy_recipes.py)
and the toy quality gate. The world knows the true attributes, so every check has a right answer among
the attribute's values.
"""

from __future__ import annotations

from yochameleon.data.concept import parse_text_checks
from yochameleon.metrics.options import score_text_checks
from yochameleon.toyworld import world
from yochameleon.toyworld.concepts import thing_of

# Held-out wordings of the three attribute questions: never in training (the concept's QA is asked in
# templates.ATTRIBUTE_QUESTIONS["toy"] = world.CONCEPT_QUESTIONS' wording) nor in the backbone's
# pretraining corpus, so they show whether the rows learnt the attribute or the question string.
HELDOUT_QUESTIONS = {
    "colour": ("Which colour does <sks> have?", "Tell me the colour of <sks>."),
    "pattern": ("Which pattern is on <sks>?", "Tell me the pattern of <sks>."),
    "shape": ("Which shape does <sks> have?", "Tell me the shape of <sks>."),
}


def text_checks(name: str) -> list[dict]:
    """`concept.text_checks` of toy concept `name`: each attribute in its training wording, then in held-out ones."""
    return thing_checks(thing_of(name))


def thing_checks(thing: world.Thing) -> list[dict]:
    """The text checks of a thing's identity (a toy concept's, or an identity folder's `checks.json`)."""

    def check(attribute: str, question: str, wording: str) -> dict:
        return {"question": question, "options": list(world.ATTRIBUTE_VALUES[attribute]),
                "answer": getattr(thing, attribute), "wording": wording, "attribute": attribute}

    return ([check(a, question, "training") for a, (question, _) in world.CONCEPT_QUESTIONS.items()]
            + [check(a, q, "heldout") for a, questions in HELDOUT_QUESTIONS.items() for q in questions])


def score_text_qa(model, builder, name: str) -> dict:
    """Text-only attribute questions about toy concept <name>, scored among the attribute's values.

    The concept's text checks (what `concept.text_checks` of `toy-<name>` holds) scored by
    `metrics.options.score_text_checks`: `text_qa` in the training wordings ("What colour is <sks>?"),
    `text_qa_heldout` in wordings the adapter never saw (`HELDOUT_QUESTIONS`).
    """
    return score_text_checks(model, builder, parse_text_checks(name, text_checks(name)))


def text_qa(pm, name: str) -> dict:
    """`score_text_qa` for a loaded PersonalizedModel."""
    return score_text_qa(pm.model, pm.builder(name), name)
