"""Yo'LLaVA-format conversation files."""

from __future__ import annotations

import json

import pytest

from conftest import DEMO
from yochameleon.data.conversations import load_conversations
from yochameleon.errors import ConceptDataError

PHOTO = sorted((DEMO / "corgi" / "train").glob("*.jpg"))[0]


def test_image_keys_and_text_keys(tmp_path):
    path = tmp_path / "conv.json"
    path.write_text(json.dumps({
        str(PHOTO): [{"Human": "What is <bo> doing?", "AI": "<bo> is sitting."}],
        "bo": [{"Human": "What colour is <sks>?", "AI": "<bo> is brown and white."}],
    }))
    turns = load_conversations(path, "bo")
    assert turns[0] == {"image": str(PHOTO.resolve()), "question": "What is <sks> doing?", "answer": "<sks> is sitting."}
    assert turns[1]["image"] is None and turns[1]["answer"] == "<sks> is brown and white."


def test_relative_image_key_resolves_against_the_photo_folder(tmp_path):
    path = tmp_path / "conv.json"
    path.write_text(json.dumps({PHOTO.name: [{"Human": "q <bo>", "AI": "a"}]}))
    assert load_conversations(path, "bo", photo_dir=PHOTO.parent)[0]["image"] == str(PHOTO.resolve())


def test_errors_name_the_file_and_the_place(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"bo": [\n{"Human": "q", "AI": }]}')
    with pytest.raises(ConceptDataError, match="line 2"):
        load_conversations(bad, "bo")
    missing_ai = tmp_path / "missing.json"
    missing_ai.write_text(json.dumps({"bo": [{"Human": "q"}]}))
    with pytest.raises(ConceptDataError, match="entry 0 under 'bo'"):
        load_conversations(missing_ai, "bo")
    with pytest.raises(ConceptDataError, match="does not exist"):
        load_conversations(tmp_path / "none.json", "bo")
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(ConceptDataError, match="non-empty"):
        load_conversations(empty, "bo")


def test_yollava_absolute_keys_fall_back_to_the_photo_folder(tmp_path):
    path = tmp_path / "conv.json"
    path.write_text(json.dumps({f"/their/cluster/bo/{PHOTO.name}": [{"Human": "q <bo>", "AI": "a"}]}))
    assert load_conversations(path, "bo", photo_dir=PHOTO.parent)[0]["image"] == str(PHOTO.resolve())
    with pytest.raises(ConceptDataError, match="not found"):
        load_conversations(path, "bo")  # an image key that resolves nowhere is an error, not a text turn


def test_non_text_turns_are_rejected(tmp_path):
    path = tmp_path / "conv.json"
    path.write_text(json.dumps({"bo": [{"Human": "q", "AI": None}]}))
    with pytest.raises(ConceptDataError, match="must be text"):
        load_conversations(path, "bo")
    path.write_text(json.dumps({"bo": []}))
    with pytest.raises(ConceptDataError, match="no question/answer turns"):
        load_conversations(path, "bo")
