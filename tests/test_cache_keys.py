"""Every cache is keyed on everything that decides its content (issue 24 item 3): change one input, and the
cache is computed again instead of an old one being read."""

from __future__ import annotations

import pytest

from conftest import compose
from yochameleon.data import preparation, templates
from yochameleon.data.concept import ConceptData
from yochameleon.toyworld import concepts as toy


def test_toy_renders_are_redrawn_when_the_split_size_the_thing_or_the_world_changes(tmp_path, monkeypatch):
    first = toy.concept_dir("bo", "train", tmp_path)
    assert len(list(first.glob("*.png"))) == toy.CONCEPT_SPLITS["train"] == 5
    assert toy.concept_dir("bo", "train", tmp_path) == first  # unchanged inputs: the cache is read
    monkeypatch.setitem(toy.CONCEPT_SPLITS, "train", 3)  # the split sizes live in concepts.py, not world.py
    resized = toy.concept_dir("bo", "train", tmp_path)
    assert resized != first and len(list(resized.glob("*.png"))) == 3
    monkeypatch.setitem(toy.CONCEPTS, "bo", toy.world.Thing("heart", "blue", "striped"))
    assert toy.concept_dir("bo", "train", tmp_path) not in (first, resized)
    monkeypatch.setattr(toy, "world_version", lambda: "another-world")
    keys = {toy.render_key("bo", "train")}
    monkeypatch.undo()
    keys |= {toy.render_key("bo", "train"), toy.render_key("bo", "val"), toy.render_key("mam", "train")}
    assert len(keys) == 4


@pytest.fixture()
def key_inputs(cache_dir, backbone):
    cfg = compose(["+concept=demo"], cache_dir)
    concept = ConceptData.from_config(cfg.concept)

    def key(cfg=cfg, concept=concept):
        return preparation.preparation_key(cfg, concept, backbone, "embedder")

    return cfg, concept, key


def test_the_preparation_key_covers_the_generated_conversations(key_inputs, monkeypatch):
    cfg, concept, key = key_inputs
    keys = [key()]
    assert key() == keys[0]
    monkeypatch.setitem(templates.ATTRIBUTE_QUESTIONS, concept.category,
                        [*templates.ATTRIBUTE_QUESTIONS[concept.category], "How old is the {noun}?"])
    keys.append(key())  # another attribute question
    monkeypatch.setattr(preparation, "CONVERSATION_MAX_NEW_TOKENS", 16)
    keys.append(key())  # shorter answers
    monkeypatch.setattr(concept, "class_noun", "corgi")
    keys.append(key())  # the questions name another noun
    cfg.recipe.conversations.agree = False
    keys.append(key())  # each photo's own answer, not the agreed one
    cfg.recipe.tasks.text_qa = False
    keys.append(key())  # no text QA: nothing is generated
    assert len(set(keys)) == len(keys)
    # With nothing generated, what would only shape generated conversations no longer matters.
    monkeypatch.setattr(preparation, "CONVERSATION_MAX_NEW_TOKENS", 8)
    assert key() == keys[-1]
