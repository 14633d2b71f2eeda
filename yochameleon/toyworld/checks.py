"""The toy concepts' text checks: their attribute questions, in the training wordings and in held-out ones.

`${toyworld_checks:bo}` in a toy concept's config (see `yochameleon.config`) is `text_checks("bo")`,
read as `concept.text_checks` and scored by `yochameleon.metrics.options.score_text_checks` at the
end of training and in the toy benchmark. The world knows the true attributes, so every check has
a right answer among the attribute's values.
"""

from __future__ import annotations

from yochameleon.toyworld import world
from yochameleon.toyworld.concepts import CONCEPTS

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
    if name not in CONCEPTS:
        raise KeyError(f"unknown toy concept {name!r}; known: {', '.join(sorted(CONCEPTS))}")
    thing = CONCEPTS[name]

    def check(attribute: str, question: str, wording: str) -> dict:
        return {"question": question, "options": list(world.ATTRIBUTE_VALUES[attribute]),
                "answer": getattr(thing, attribute), "wording": wording, "attribute": attribute}

    return ([check(a, question, "training") for a, (question, _) in world.CONCEPT_QUESTIONS.items()]
            + [check(a, q, "heldout") for a, questions in HELDOUT_QUESTIONS.items() for q in questions])
