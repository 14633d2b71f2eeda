"""The toy world: deterministic scenes, exact pretraining loss, the shipped backbone, and the quality gate."""

from __future__ import annotations

import math
from pathlib import Path
import random

import pytest
import torch
import torch.nn.functional as F

from yochameleon.concept.adapter import read_adapter_config
from yochameleon.toyworld import world
from yochameleon.toyworld.concepts import CONCEPTS, VALIDATION_CONCEPTS, concept_scenes


def test_scenes_are_deterministic_and_described_by_their_captions():
    a, b = world.scene(3, 17), world.scene(3, 17)
    assert a == b and world.render(a).tobytes() == world.render(b).tobytes()
    assert world.scene(3, 18) != a
    for index in range(30):
        scene = world.scene(0, index)
        caption = scene.caption()
        assert all(f"{t.colour} {t.pattern} {t.shape}" in caption for t in scene.things)
        assert world.render(scene).size == (64, 64)
        answers = dict(world.attribute_questions(scene, random.Random(index)))
        thing = scene.things[0]
        assert answers[f"What colour is the {thing.shape}?"] in (t.colour for t in scene.things)


def test_look_alikes_share_exactly_two_attributes():
    rng = random.Random(0)
    for _ in range(50):
        thing = world.random_thing(rng)
        other = world.look_alike(thing, rng)
        assert sum(a == b for a, b in zip(thing.identity, other.identity)) == 2


def test_toy_concept_splits_hold_the_concept_only_where_they_should():
    for name, thing in {**CONCEPTS, **VALIDATION_CONCEPTS}.items():
        assert all(any(t.identity == thing.identity for t in s.things) for s in concept_scenes(name, "test"))
        negatives = concept_scenes(name, "test_negatives")
        assert all(all(t.identity != thing.identity for t in s.things) for s in negatives)
        near = [s for s in negatives if sum(a == b for a, b in zip(s.things[0].identity, thing.identity)) == 2]
        assert len(near) >= len(negatives) // 3  # hard negatives: look-alikes
    assert concept_scenes("bo", "train") != concept_scenes("bo", "test")


def test_toy_validation_split_is_its_own_and_the_concepts_use_it():
    """val / val_negatives come from their own seed streams: no scene is shared with train or test."""
    from yochameleon.config import CONFIG_DIR

    for name, thing in {**CONCEPTS, **VALIDATION_CONCEPTS}.items():
        val, val_negatives = concept_scenes(name, "val"), concept_scenes(name, "val_negatives")
        assert len(val) == 40 and len(val_negatives) == 80
        assert all(any(t.identity == thing.identity for t in s.things) for s in val)
        assert all(all(t.identity != thing.identity for t in s.things) for s in val_negatives)
        others = {*concept_scenes(name, "train"), *concept_scenes(name, "test_many"),
                  *concept_scenes(name, "test_negatives_many"), *concept_scenes(name, "negatives")}
        assert not ({*val, *val_negatives} & others)
        config = (CONFIG_DIR / "concept" / f"toy-{name}.yaml").read_text()
        assert f"${{toyworld:{name},val}}" in config and f"${{toyworld:{name},val_negatives}}" in config


def test_validation_concepts_are_validation_identities_and_compose_like_the_test_concepts(tmp_path):
    """dax, blick, wug, fep, tupa: identities of the encoder's validation split (never a test identity, so never one
    of the 5 test concepts'), each config composing with its own renders, its checks and a judge that reads it."""
    from conftest import compose
    from yochameleon.toyworld.checks import text_checks
    from yochameleon.toyworld.concepts import thing_of
    from yochameleon.toyworld.identities import identity_name, identity_splits

    splits = identity_splits()
    names = {identity_name(t) for t in VALIDATION_CONCEPTS.values()}
    assert names <= set(splits["val"]) and not names & set(splits["test"]) and not set(VALIDATION_CONCEPTS) & set(CONCEPTS)
    for name, thing in VALIDATION_CONCEPTS.items():
        cfg = compose([f"+concept=toy-{name}"], tmp_path)
        assert cfg.concept.name == name and cfg.concept.description == f"a {thing.colour} {thing.pattern} {thing.shape}"
        assert len(list(Path(cfg.concept.photos).glob("*.png"))) == 5
        assert {c["answer"] for c in text_checks(name)} == {thing.shape, thing.colour, thing.pattern}
    with pytest.raises(KeyError, match="dax, fep, tupa, wug"):
        thing_of("nobody")


def test_held_out_text_qa_wordings_were_never_trained_on():
    from yochameleon.data import templates
    from yochameleon.toyworld.checks import HELDOUT_QUESTIONS
    from yochameleon.toyworld.spec import TOY_SPEC, corpus_lines

    trained = {q.format(noun="thing").replace("the thing", "<sks>") for q in templates.ATTRIBUTE_QUESTIONS["toy"]}
    assert trained == {q for q, _ in world.CONCEPT_QUESTIONS.values()}  # what toy_text_qa scores as "training"
    corpus = "\n".join(corpus_lines(TOY_SPEC["seed"]))
    for attribute, wordings in HELDOUT_QUESTIONS.items():
        assert attribute in world.ATTRIBUTE_VALUES and len(wordings) == 2
        for question in wordings:
            assert question not in trained
            assert question.replace("<sks> ", "").replace("<sks>", "") not in corpus
            assert question.replace("<sks>", "the thing") not in corpus


def test_row_trainer_loss_is_the_exact_full_vocabulary_cross_entropy(backbone):
    from yochameleon.toyworld.pretrain import RowTrainer

    model = backbone.model
    trained = torch.arange(4, 4 + 300)
    rows = RowTrainer(model, trained)
    with torch.no_grad():
        rows.output_rows.normal_(0, 0.5)
    hidden = torch.randn(2, 6, model.config.hidden_size)
    labels = torch.full((2, 6), -100)
    labels[0, 2:] = trained[torch.tensor([5, 17, 250, 3])]
    labels[1, 4:] = trained[torch.tensor([9, 120])]
    full_head = torch.zeros(model.config.vocab_size, model.config.hidden_size)
    full_head[trained] = rows.output_rows.detach()
    logits = hidden[:, :-1] @ full_head.T
    per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="none",
                                ignore_index=-100).view(2, 5)
    expected = (per_token.sum(1) / (labels[:, 1:] != -100).sum(1)).mean()
    assert torch.allclose(rows.loss(hidden, labels), expected, atol=1e-5)


def test_build_pack_and_unpack_round_trip(tmp_path):
    """A few-step build through the real pipeline; the shipped-pack format restores it."""
    from yochameleon.model.load import load_backbone
    from yochameleon.toyworld.judge import load_judge
    from yochameleon.toyworld.pretrain import build_toyworld_checkpoint
    from yochameleon.toyworld.ship import pack, packed_key, unpack

    spec = {"vq_steps": 2, "vq_batch": 2, "lm_steps": 2, "lm_batch": 2, "focus_steps": [1, 1, 1, 1], "judge_steps": 1,
            "draw_chunks": 2, "draw_chunk_steps": 1, "draw_sampling": {"temperature": 0.5, "guidance_scale": 2.0}}
    report = build_toyworld_checkpoint(tmp_path / "built", spec, show_progress=False)
    assert report["lm_loss_first"] > 0 and report["focus_loss_first"] > 0 and report["draw_loss_last"] > 0
    assert set(report) >= {"vq_mse_last", "judge_shape", "total_seconds", "draw_seconds"}
    # Stages 1, 2 and 1-3 are cached beside the build: another drawing stage reuses them.
    assert len(list(tmp_path.glob("toyworld-vq-*.safetensors"))) == 1
    assert len(list(tmp_path.glob("toyworld-lm-*.safetensors"))) == 1
    assert len(list(tmp_path.glob("toyworld-focus-*.safetensors"))) == 1
    target = pack(tmp_path / "built", tmp_path / "toy.safetensors")
    assert target.stat().st_size < 8 * 2**20  # only the rows the world uses, in float16
    unpack(tmp_path / "unpacked", target)
    assert packed_key(target) == (tmp_path / "unpacked" / "yochameleon_tiny.json").read_text().split('"key": "')[1][:12]
    built, restored = load_backbone(tmp_path / "built"), load_backbone(tmp_path / "unpacked")
    ids = torch.tensor([[0, 8712, 8713, 4, 5, 16200 + 8711 - 8706, 8710]])
    with torch.no_grad():
        a = built.model.lm_head(built.model.model(input_ids=ids).last_hidden_state)
        b = restored.model.lm_head(restored.model.model(input_ids=ids).last_hidden_state)
    assert torch.allclose(a, b, atol=5e-2, rtol=1e-2)  # float16 storage
    untrained = 30000
    assert float(restored.model.lm_head.weight[untrained].abs().max()) == 0.0
    assert torch.equal(built.model.get_input_embeddings().weight[untrained],
                       restored.model.get_input_embeddings().weight[untrained])  # same seeded init
    assert load_judge(tmp_path / "unpacked").predict([world.render(world.scene(0, 0))])[0]["shape"] in world.SHAPES
    # The sampling defaults the build records travel with the pack and are what generation uses.
    for backbone in (built, restored):
        sampling = backbone.sampling()
        assert (sampling.temperature, sampling.top_k, sampling.guidance_scale) == (0.5, 0, 2.0)
        assert backbone.sampling(temperature=1.0, guidance_scale=1.0).temperature == 1.0
        assert backbone.guidance(None) == 2.0 and backbone.guidance(3) == 3.0


def test_a_step_encodes_its_scenes_in_one_batch_and_draws_the_same_examples(backbone):
    """`SceneCodes` (one VQ batch per step, the random stream replayed) gives the examples one pass gives."""
    from yochameleon.toyworld import pretrain

    ids = pretrain.Ids(backbone.tokenizer, 0, 1, 2, 3, 4, [10000])
    kinds = ["draw", "draw_unconditional", "define_generate", "caption", "define_recognize", "verify"] * 2
    codes = pretrain.SceneCodes(backbone.model)
    calls = []
    original = pretrain.encode
    try:
        pretrain.encode = lambda model, images: calls.append(len(images)) or original(model, images)
        batched = pretrain._examples(kinds, random.Random(5), ids, codes)
        one_by_one = pretrain._examples(kinds, random.Random(5), ids, lambda scene: original(
            backbone.model, [world.render(scene)])[0])
    finally:
        pretrain.encode = original
    assert calls == [len(kinds)]  # every example here shows one new scene: one batch
    assert batched == one_by_one
    draw = pretrain.make_example("draw", random.Random(0), ids, codes)[0]
    question = backbone.tokenizer.decode(draw[1:draw.index(1)])  # <s> question <eot> | <boi> codes ...
    assert question.startswith("A photo of a") and question.endswith(".") and " large " not in question, question


@pytest.mark.parametrize("kind", ["draw_said", "define_generate_said"])
def test_said_drawings_put_the_words_unscored_between_the_turn_and_the_image(backbone, kind):
    """Build 7's examples: the thing's words, given and never scored, then begin-of-image, the scored codes, end of turn."""
    from yochameleon.toyworld import pretrain

    ids = pretrain.Ids(backbone.tokenizer, 0, 1, 2, 3, 4, [10000])
    shown = []

    def code_of(scene):
        shown.append(scene)
        return torch.arange(64, dtype=torch.long)

    tokens, labels = pretrain.make_example(kind, random.Random(3), ids, code_of)
    boi = tokens.index(2)
    eot = tokens.index(1)  # the prompt's end of turn
    words = backbone.tokenizer.decode(tokens[eot + 1:boi]).strip()
    assert words == shown[-1].things[0].short()
    assert labels[:boi] == [-100] * boi  # the prompt and the words: never scored
    assert labels[boi:] == tokens[boi:] and tokens[boi + 1:boi + 65] == list(range(4, 68)) and tokens[-1] == 1


def test_object_mask_and_probe_targets_follow_the_scene():
    from yochameleon.toyworld.vq import AttributeProbe

    left = world.Thing("heart", "orange", "striped", "small", "left")
    right = world.Thing("star", "blue", "dotted", "small", "right")
    scene = world.Scene((left, right), "grey", 0)
    mask = world.object_mask(scene)
    assert mask.shape == (64, 64) and mask[32, 16] == 1.0 and mask[32, 48] == 1.0
    assert mask[32, 32] == 0.0 and mask[2, 2] == 0.0  # between the things, and a corner
    targets = AttributeProbe.targets([scene])
    none = [len(world.SHAPES), len(world.COLOURS), len(world.PATTERNS)]
    assert targets[0, world.POSITIONS.index("left")].tolist() == [
        world.SHAPES.index("heart"), list(world.COLOURS).index("orange"), world.PATTERNS.index("striped")]
    assert targets[0, world.POSITIONS.index("middle")].tolist() == none
    probe = AttributeProbe(embed_dim=4, side=8)
    loss = probe.loss(torch.zeros(1, 4, 8, 8), [scene])
    # Zero latents: only the small random bias speaks, so each attribute's loss is about log(classes).
    assert abs(loss.item() - sum(math.log(k) for k in AttributeProbe.SIZES)) < 0.5


@pytest.mark.parametrize("kind", ["verify", "verify_colour", "define_recognize_colour", "define_recognize_shape",
                                  "define_recognize_pattern"])
def test_yes_no_curriculum_examples_are_answered_by_the_one_attribute_that_decides(backbone, kind):
    from yochameleon.toyworld import pretrain

    tokenizer = backbone.tokenizer
    ids = pretrain.Ids(tokenizer, 0, 1, 2, 3, 4, [10000])
    shown = []

    def code_of(scene):
        shown.append(scene)
        return torch.zeros(64, dtype=torch.long)

    rng = random.Random(0)
    answers = []
    for _ in range(24):
        tokens, labels = pretrain.make_example(kind, rng, ids, code_of)
        thing = shown[-1].things[0]
        text = tokenizer.decode([t for t in tokens if t > 4])
        answer = tokenizer.decode([t for t in labels if t > 4]).strip()
        answers.append(answer)
        if kind.startswith("verify"):
            asked = text.split("Is the thing ")[1].split("?")[0].removeprefix("a ")
            attribute = next(a for a in world.ATTRIBUTES if asked in world.ATTRIBUTE_VALUES[a])
            assert kind == "verify" or attribute == "colour"
            assert answer == ("Yes." if getattr(thing, attribute) == asked else "No."), text
        else:
            attribute = kind.removeprefix("define_recognize_")
            defined = text.split(" is ")[1].split(".")[0].split()  # ["an", "orange", "striped", "heart"]
            differs = [a for a in world.ATTRIBUTES if getattr(thing, a) not in defined]
            assert differs in ([], [attribute]), text
            assert answer == ("No." if differs else "Yes."), text
    assert {"Yes.", "No."} <= set(answers)


def test_shipped_pack_is_the_current_toy_build():
    from yochameleon.toyworld import ship, spec

    key = spec.toyworld_dir().name.removeprefix("toyworld-")
    assert ship.packed_key() == key, (
        f"{ship.PACK} does not hold the current toy build {key}: the build recipe changed; "
        "run `make toyworld-pack` and commit the new pack")


@pytest.mark.slow
def test_quality_gate_personalizing_a_toy_concept_lifts_recognition_text_qa_and_drawing(tmp_path, cache_dir):
    """The learning mechanics end to end on the shipped toy backbone: 5 renders of <bo> (an orange striped
    heart), best/ chosen on the 40 x 80 validation renders, scored once on the 40 x 80 test renders and on
    "What colour / pattern / shape is <bo>?" with no image, in the training wordings and held-out ones.

    - recognition: the understanding-only recipe (no generation to share the rows with);
    - drawing: the default recipe. Its g-tokens must learn the subject: the teacher-forced NLL of the 40 test
      renders under "A photo of <bo>." (a figure of every image code, steady across machines) well below the
      untrained rows'; and of its 32 final samples by best/ the world's judge must read some right.
      Understanding-only (no g-tokens) must draw little;
    - the untrained rows of the default recipe (one step at lr 0) are the control of both: no better than chance.

    A per-adapter drawing rate on <bo> runs 0.12-0.38 (seeds 0-2, 24 samples each), so 8 samples read 0 on one
    machine and 1 on another (CI, 2026-12-04): the judge's bar is one of 32, the NLL carries the margin.
    """
    from conftest import benchmark_module
    from yochameleon.inference import PersonalizedModel
    from yochameleon.toyworld.checks import text_qa
    from yochameleon.training.recipe import train

    # Composed as benchmarks/toy_gate_bars.py composes the runs it reads the bars from on validation (it draws 24
    # with the default recipe), on the gate's seed 0
    bars = benchmark_module("toy_gate_bars")
    runs = {**bars.GATE_RUNS}
    runs["default"] = [*runs["default"], "trainer.final_samples=32"]
    counts = {"control": 0, "understanding": 8, "default": 32}
    figures = {}
    for label, extra in runs.items():
        summary = train(bars.compose_gate_run(0, extra, cache_dir), tmp_path / label)
        assert summary["final_split"] == "test" and summary["selected_on"] == "val", summary
        assert read_adapter_config(tmp_path / label / "best").selected_on == "val"
        _check_final_samples(tmp_path / label, summary, counts[label])
        pm = PersonalizedModel.load([tmp_path / label / "best"], device="cpu", cache_dir=cache_dir)  # as scored
        figures[label] = {"auroc": summary["final"]["eval/recognition/auroc"],
                          "weighted": summary["final"]["eval/recognition/weighted"],
                          "nll": summary["final"].get("eval/generation/nll"),
                          "drawn": (summary["generation"] or {}).get("all_right"), **text_qa(pm, "bo")}
    control, trained, default = figures["control"], figures["understanding"], figures["default"]
    # The untrained rows rank look-alikes above the concept on a drawing build (test AUROC 0.36-0.45): the
    # check is one-sided, no better than chance.
    assert control["auroc"] <= 0.5 + GATE["control_auroc_slack"] and control["weighted"] <= 0.55, figures
    assert control["text_qa"] <= GATE["control_text_qa"], figures
    assert control["text_qa_heldout"] <= GATE["control_text_qa_heldout"], figures
    assert trained["auroc"] >= GATE["auroc"] and trained["weighted"] >= GATE["weighted"], figures
    assert trained["text_qa"] >= GATE["text_qa"], figures
    assert trained["text_qa_heldout"] >= GATE["text_qa_heldout"], figures
    assert control["nll"] >= GATE["control_nll"] and default["nll"] <= GATE["nll"], figures
    assert default["drawn"] >= GATE["drawn"], figures
    assert trained["drawn"] <= GATE["drawn_without_g_tokens"], figures


def _check_final_samples(run_dir, summary: dict, count: int) -> None:
    """samples/final_XX.png, contact_sheet.png and the judge's figures, in the summary and metrics.jsonl."""
    import json

    finals = sorted((run_dir / "samples").glob("final_*.png"))
    assert [p.name for p in finals] == [f"final_{i:02d}.png" for i in range(count)]
    assert summary["final_samples"] == [str(p) for p in finals]
    if not count:
        assert summary["contact_sheet"] is None and summary["generation"] is None
        assert not (run_dir / "contact_sheet.png").exists()
        return
    assert summary["contact_sheet"] == str(run_dir / "contact_sheet.png") and (run_dir / "contact_sheet.png").is_file()
    assert summary["final_samples_adapter"] == summary["best_adapter"] == str(run_dir / "best")
    judged = summary["generation"]
    assert judged["judged"] == count and 0 <= judged["right"] <= count and judged["all_right"] == judged["right"] / count
    for attribute in world.ATTRIBUTES:  # an image with every attribute right has this one right
        assert judged["all_right"] <= judged[attribute] <= 1 and (judged[attribute] * count).is_integer()
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert {k.removeprefix("final/generation/"): v for k, v in last.items() if k.startswith("final/generation/")} == judged


# Set from the validation split of build 7 (the shipped pack) with the default recipe of 2026-12-06 (self-prompting
# off), seeds 0, 1, 2 (docs/toyworld.md, "The CI quality gate"); never from the test split. Understanding-only:
# validation AUROC 0.710 / 0.754 / 0.824, weighted 0.650 / 0.669 / 0.731 (bars about 0.1 below the lowest), text QA
# 3/3 in the training wordings and 3-5 of 6 in held-out ones (chance 0.21); the untrained rows answer 1 of 3 and
# 3 of 6 (without a self-prompt group they answer from the backbone's own guess, which holds for <bo>'s pattern).
# Drawing, seeds 1 and 2 (not the gate's seed): best/'s validation generation NLL 3.75 / 3.74 nats a code (the
# untrained rows' 4.59; uniform 6.24), 8 / 7 of 24 final samples judged all three right; understanding-only 0 of 8
# on every seed. NLL bars about 0.25 from each side; the judge's, one of 32.
GATE = {"auroc": 0.61, "weighted": 0.55, "text_qa": 0.6, "text_qa_heldout": 0.5, "control_text_qa": 1 / 3,
        "control_text_qa_heldout": 0.5, "control_auroc_slack": 0.1, "nll": 4.0, "control_nll": 4.3,
        "drawn": 1 / 32, "drawn_without_g_tokens": 1 / 8}
