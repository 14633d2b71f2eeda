"""One chat layout: pinned token ids, the toy pretraining in the personalization layout, the toy's own sentences."""

from __future__ import annotations

import random

import pytest
import torch

from yochameleon.concept.tokens import PersonalizedTokens
from yochameleon.data import templates
from yochameleon.data.chat import ChameleonLayout, chat_layout
from yochameleon.data.samples import SampleBuilder, SampleSpec
from yochameleon.tiny.chameleon import FIRST_IMAGE_ID

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
    builder = SampleBuilder(backbone, tokens, FixedCodes(), self_prompting=True, group_loss="token")
    assert builder.prefix_ids() == PREFIX
    prompt = builder.prompt_ids("Is <sks> in this photo?", "photo.jpg", flip=True)
    question = [9022, 8932, SKS, 8983, 8982, 8989, 8742]  # "Is", " ", "<sks>", " in", " this", " photo", "?"
    assert prompt == [BOS, *PREFIX, BOI, 7, 8, 9, EOI, *question, EOT]


def test_text_qa_training_sample_ids_are_pinned(backbone, tokens):
    builder = SampleBuilder(backbone, tokens, FixedCodes(), self_prompting=True, group_loss="token")
    sample = builder.build(SampleSpec("text_qa", None, False, "What is <sks>?", "A dog."))
    prompt = [BOS, *PREFIX, 9117, 8984, 8932, SKS, 8742, EOT]  # ... "What", " is", " ", "<sks>", "?", end of turn
    answer = [*U, 8744, 9108, 8725, EOT]  # the u-tokens (self-prompt), "A", " dog", ".", end of turn
    assert sample["input_ids"] == prompt + answer
    assert sample["labels"] == [-100] * len(prompt) + answer
    assert sample["weights"] == [0.0] * len(prompt) + [1.0] * len(answer)


def test_generation_prompt_ids_are_pinned(backbone, tokens):
    builder = SampleBuilder(backbone, tokens, FixedCodes(), self_prompting=True, group_loss="token")
    question = [8744, 8989, 9012, 8932, SKS, 8725]  # "A", " photo", " of", " ", "<sks>", "."
    assert builder.image_prompt_ids("A photo of <sks>.") == [BOS, *PREFIX, *question, EOT, *G, BOI]
    assert builder.unconditional_image_prompt_ids() == [BOS, EOT, BOI]
    sample = builder.build(SampleSpec("generation", "photo.jpg", False, "A photo of <sks>."))
    assert sample["input_ids"] == [BOS, *PREFIX, *question, EOT, *G, BOI, 4, 5, 6, EOI, EOT]
    no_group = SampleBuilder(backbone, tokens, FixedCodes(), self_prompting=False, group_loss="token")
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


# ---- the toy backbone is pretrained in the personalization layout ------------------------------
class Recorded:
    """Wraps pretrain.Ids and records every text it tokenizes (the example's sentences, in order)."""

    def __init__(self, ids):
        self.ids, self.texts = ids, []

    def __getattr__(self, name):
        return getattr(self.ids, name)

    def text(self, text):
        self.texts.append(text)
        return self.ids.text(text)


def _toy_example(backbone, kind: str, seed: int):
    """A pretraining example of `kind` in the tiny tokenizer, with the texts it was made of."""
    from yochameleon.toyworld import pretrain

    ids = Recorded(pretrain.Ids(backbone.tokenizer, backbone.bos_id, backbone.end_of_turn_id, backbone.boi_id,
                                backbone.eoi_id, FIRST_IMAGE_ID, [10000]))
    codes = torch.tensor(CODES[0]) - FIRST_IMAGE_ID  # VQ codes; the world's image ids are codes + FIRST_IMAGE_ID
    tokens, labels = pretrain.make_example(kind, random.Random(seed), ids, lambda scene: codes)
    return tokens, labels, ids.texts


class NoPrefix(SampleBuilder):
    """A SampleBuilder whose soft prompt is empty: nothing between <s> and the turn."""

    def prefix_ids(self):
        return []


TASK_OF = {"caption": "vqa", "vqa": "vqa", "verify": "vqa", "generate": "generation",
           "define_recognize": "recognition", "define_recognize_colour": "recognition",
           "define_text": "text_qa", "define_generate": "generation"}


@pytest.mark.parametrize("kind", list(TASK_OF))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_toy_pretraining_sequences_are_personalization_samples(backbone, kind, seed):
    """Each toy pretraining sequence is a SampleBuilder sample (self-prompting off) of the same texts.

    A definition "<name> is an orange striped heart." is a concept's soft prompt with words in place
    of the learned tokens; the world families (caption, vqa, verify, generate) are the same samples
    with no prefix at all (SampleBuilder itself always writes at least the newline after a prefix).
    The labels differ only where the toy world masks the name inside an answer.
    """
    from evaluation.methods import TextSubject

    tokens, labels, texts = _toy_example(backbone, kind, seed)
    task = TASK_OF[kind]
    if kind.startswith("define_"):
        prefix, name = texts[0], texts[1]  # "<reserved10000> is a ... .\n", then the name alone
        assert prefix.startswith(f"{name} is ") and prefix.endswith(".\n")
        subject = TextSubject(name, prefix[len(f"{name} is "):-2])  # its system prefix is the definition
        builder = SampleBuilder(backbone, subject, FixedCodes([CODES[0], CODES[0]]), self_prompting=False,
                                group_loss="token")
        question, answer = texts[2], (texts[3] if task != "generation" else "")
        name_id = backbone.tokenizer.convert_tokens_to_ids(name)
    else:
        builder = NoPrefix(backbone, TextSubject("x"), FixedCodes([CODES[0], CODES[0]]), self_prompting=False,
                                group_loss="token")
        question, answer = texts[0], (texts[1] if task != "generation" else "")
        name_id = None
    sample = builder.build(SampleSpec(task, "scene.png" if task != "text_qa" else None, False, question, answer))
    assert tokens == sample["input_ids"], texts
    assert labels == [-100 if t == name_id else t for t in sample["labels"]]


# ---- the toy world's sentences are its own ------------------------------------------------------
TOY_KEY = "21206e27bfda"  # the shipped pack's build key (build 7); a new pack (make toyworld-pack) comes with a new key here
EDITED = {"RECOGNITION_QUESTIONS": ["Edited: is <sks> here?"], "POSITIVE_ANSWERS": ["Edited: yes, <sks>."],
          "NEGATIVE_ANSWERS": ["Edited: no, not <sks>."], "GENERATION_PROMPTS": ["Edited: draw <sks>."] * 3,
          "FALLBACK_TEXT_QA": [("Edited: <sks>?", "Edited: <sks>.")]}


def test_toy_build_key_is_pinned_and_does_not_read_the_templates(backbone, monkeypatch):
    from yochameleon.toyworld import ship, spec

    assert spec.spec_key(spec.shipped_spec()) == TOY_KEY == ship.packed_key()
    before = [_toy_example(backbone, kind, seed)[:2] for kind in TASK_OF for seed in range(3)]
    for name, value in EDITED.items():
        monkeypatch.setattr(templates, name, value)
    assert spec.spec_key(spec.shipped_spec()) == TOY_KEY
    assert [_toy_example(backbone, kind, seed)[:2] for kind in TASK_OF for seed in range(3)] == before


def test_unpacking_the_toy_pack_does_not_read_the_templates(tmp_path, monkeypatch):
    """The unpacked tokenizer is rebuilt from the toy world's own sentences, whatever templates.py says."""
    import json

    from yochameleon.tiny import chameleon as tiny
    from yochameleon.toyworld import sentences, ship, spec

    for name in EDITED:  # the fixed copy equals the templates the pack was built from
        assert tuple(getattr(sentences, name)) == tuple(getattr(templates, name))
    seed, size = spec.TOY_SPEC["seed"], spec.TOY_SPEC["text_vocab_size"]
    expected, vocabulary = tiny.build_tokenizer(size, spec.corpus_lines(seed))  # from templates.py, unedited
    for name, value in EDITED.items():
        monkeypatch.setattr(templates, name, value)
    out = ship.unpack(tmp_path / "toy")
    assert json.loads((out / "config.json").read_text())["vocabulary_map"] == vocabulary
    unpacked = json.loads((out / "tokenizer.json").read_text())["model"]
    assert unpacked["merges"] == json.loads(expected.backend_tokenizer.to_str())["model"]["merges"]
