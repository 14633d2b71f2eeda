"""The evaluation harness: scoring rules on hand-made cases, question files, forgetting, report, CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import DEMO, REPO
from evaluation.methods import EvalBuilder, TextSubject
from evaluation.questions import EvalSet, MCQuestion, QuestionFileError, load_multi_concept, load_text_qa, load_visual_qa
from yochameleon.metrics.options import accuracy, choose_options, first_token_ids
from yochameleon.metrics.recognition import parse_yes_no, recognition_accuracy

SHARED = REPO.parent / "shared" / "data" / "dreambooth"


# ---- free answers: word boundaries, not substrings ------------------------------------------------
@pytest.mark.parametrize("text, verdict", [
    ("Yes, I know <sks> well.", "yes"),      # the official script's trap: "know" contains "no"
    ("Yes, <sks> is in the north.", "yes"),   # ... and so does "north"
    ("No, that is not <sks>.", "no"),
    ("no", "no"),
    ("I cannot see <sks> here.", "no"),
    ("This is not <sks>.", "no"),
    ("There is nothing here.", None),          # "nothing" is not "no"
    ("Nope, maybe.", None),
    ("It is <sks>, no doubt about it. Yes.", "no"),  # the earlier word wins
    ("", None),
])
def test_free_answers_are_parsed_by_whole_words(text, verdict):
    assert parse_yes_no(text) == verdict


def test_recognition_accuracy_on_known_cases():
    result = recognition_accuracy(torch.tensor([0.9, 0.2, 0.7, 0.6]), torch.tensor([0.1, 0.8]))
    # AUROC: of the 8 (positive, negative) pairs, every positive beats 0.1 and only 0.9 beats 0.8.
    assert result == {"positive": 0.75, "negative": 0.5, "weighted": 0.625, "auroc": pytest.approx(5 / 8)}
    # Ranked perfectly but all below the threshold: chance accuracy, AUROC 1.
    result = recognition_accuracy(torch.tensor([0.4, 0.3]), torch.tensor([0.2, 0.1, 0.05]))
    assert result["weighted"] == 0.5 and result["auroc"] == 1.0
    assert math.isnan(recognition_accuracy(torch.tensor([0.4]), torch.zeros(0))["auroc"])


# ---- multiple choice from letter logits --------------------------------------------------------------
class FixedLogits:
    """A model whose next-token logits favour one given letter per prompt (hand-made answers)."""

    def __init__(self, backbone, letters: list[str]):
        self.backbone, self.letters, self.calls = backbone, letters, 0

    def last_logits(self, ids, mask):
        logits = torch.zeros(len(ids), self.backbone.config.vocab_size)
        for row in range(len(ids)):
            letter = self.letters[self.calls]
            logits[row, first_token_ids(self.backbone.tokenizer, [letter])[0]] = 5.0
            logits[row, 9000] = 50.0  # a non-option token scores higher: it must be ignored
            self.calls += 1
        return logits


def test_option_letters_are_scored_among_the_options_only(backbone):
    questions = [
        MCQuestion("q1", {"A": "x", "B": "y"}, "B"),
        MCQuestion("q2", {"A": "x", "B": "y", "C": "z"}, "C"),
        MCQuestion("q3", {"A": "x", "B": "y", "C": "z", "D": "w", "E": "v"}, "A"),
        MCQuestion("q4", {"A": "x", "B": "y"}, "A"),
    ]
    model = FixedLogits(backbone, ["B", "C", "A", "B"])
    builder = EvalBuilder(backbone, TextSubject("bo"), None, False)
    picks = choose_options(model, builder, questions, "text_qa", batch_size=3)
    assert picks == ["B", "C", "A", "B"]
    assert accuracy(picks, questions) == 0.75


def test_letters_that_share_a_first_token_are_refused(backbone):
    with pytest.raises(ValueError, match="same token"):
        first_token_ids(backbone.tokenizer, ["Apple", "Apricot"])


# ---- question files ----------------------------------------------------------------------------------
def test_visual_questions_with_missing_images_are_listed_and_skipped(tmp_path):
    photo = sorted((DEMO / "corgi" / "test").glob("*.jpg"))[0]
    data = {str(photo): [{"question": "Where is <sks>?", "options": {"A": "grass", "B": "sofa"},
                          "correct_answer": "A"}],
            "missing/01.jpg": {"question": "?", "options": {"A": "x", "B": "y"}, "correct_answer": "B"}}
    path = tmp_path / "visual.json"
    path.write_text(json.dumps(data))
    loaded = load_visual_qa(path)
    assert len(loaded.questions) == 1 and loaded.questions[0].image == photo
    assert loaded.missing_images == [str(tmp_path / "missing/01.jpg")]


@pytest.mark.parametrize("entry, message", [
    ({"question": "q", "options": {"1": "x", "2": "y"}, "correct_answer": "1"}, "single capital letters"),
    ({"question": "q", "options": {"a": "x", "b": "y"}, "correct_answer": "a"}, "single capital letters"),
    ({"question": "q", "options": {"A": "x", "B": "y"}, "correct_answer": "C"}, "not one of the options"),
    ({"question": "q", "options": {"A": "x"}, "correct_answer": "A"}, "at least two"),
    ({"question": "q"}, "needs"),
])
def test_bad_questions_name_the_file_and_the_fix(tmp_path, entry, message):
    path = tmp_path / "text.json"
    path.write_text(json.dumps({"bo": [entry]}))
    with pytest.raises(QuestionFileError, match=message) as err:
        load_text_qa(path, "bo")
    assert str(path) in str(err.value)


def test_multi_concept_questions_need_two_subjects(tmp_path):
    path = tmp_path / "multi.json"
    path.write_text(json.dumps([{"concepts": ["dog"], "question": "q", "options": {"A": "x", "B": "y"},
                                 "correct_answer": "A"}]))
    with pytest.raises(QuestionFileError, match="two subject names"):
        load_multi_concept(path)


def test_shipped_evaluation_set_is_complete():
    root = REPO / "evaluation" / "sets" / "dreambooth"
    if not (root / "split.json").exists():
        pytest.fail(f"{root}/split.json is missing: the shipped evaluation set is part of the repository")
    images = SHARED if SHARED.is_dir() else None
    eval_set = EvalSet(root, images or root)
    subjects = eval_set.subjects()
    assert len(subjects) == 21
    for subject in subjects:
        assert len(eval_set.text_qa(subject)) >= 5, subject
        if images:
            loaded = eval_set.visual_qa(subject)
            assert not loaded.missing_images and len(loaded.questions) >= 5, subject
    multi = load_multi_concept(root / "multi_concept.json")
    assert len(multi) >= 20 and all(set(q.concepts) <= set(subjects) for q in multi)
    descriptions = eval_set.descriptions()
    assert set(descriptions) == set(subjects)


# ---- generation similarity -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    from evaluation.similarity import build_tiny_clip, build_tiny_dino

    root = tmp_path_factory.mktemp("encoders")
    return (*build_tiny_clip(root / "clip"), build_tiny_dino(root / "dino"))


def test_similarity_metrics_on_known_cases(encoders):
    from PIL import Image

    from evaluation.similarity import ClipScorer, DinoScorer, pairwise_mean_cosine

    assert pairwise_mean_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == 0.5
    clip_model, clip_path, dino_path = encoders
    clip, dino = ClipScorer(clip_model, clip_path), DinoScorer(dino_path)
    photos = [Image.open(p).convert("RGB") for p in sorted((DEMO / "corgi" / "train").glob("*.jpg"))]
    other = Image.open(sorted((DEMO / "negatives" / "train").glob("*.jpg"))[0]).convert("RGB")
    assert clip.clip_i(photos[:1], photos[:1]) == pytest.approx(1.0, abs=1e-5)
    assert dino.dino(photos[:1], photos[:1]) == pytest.approx(1.0, abs=1e-5)
    assert clip.clip_i(photos[:1], [other]) < 1.0 and dino.dino(photos[:1], [other]) < 1.0
    assert clip.clip_i(photos[:1], photos) == pytest.approx(clip.clip_i(photos[:1], photos[::-1]), abs=1e-6)
    assert -1.0 <= clip.clip_t(photos[:2], ["a dog", "a dog"]) <= 1.0
    with pytest.raises(ValueError, match="one prompt per image"):
        clip.clip_t(photos[:2], ["a dog"])


def test_missing_or_wrong_encoder_checkpoints_are_named(tmp_path, encoders):
    from evaluation.similarity import ClipScorer, DinoScorer, SimilarityError

    with pytest.raises(SimilarityError, match="clip.checkpoint") as err:
        ClipScorer("ViT-B-32", tmp_path / "nope.bin")
    assert str(tmp_path / "nope.bin") in str(err.value)
    with pytest.raises(SimilarityError, match="dino.checkpoint"):
        DinoScorer(tmp_path / "nodir")
    with pytest.raises(SimilarityError, match="does not fit"):
        ClipScorer("ViT-B-32", encoders[1])  # tiny weights, big architecture


# ---- forgetting -------------------------------------------------------------------------------------------
def test_forgetting_check_finds_identical_logits_outside_the_adapter_tokens(backbone):
    from evaluation.run import forgetting
    from yochameleon.concept.tokens import PersonalizedTokens
    from yochameleon.inference import PersonalizedModel

    tokens = PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, "bo", 2, 2)
    with torch.no_grad():
        tokens.input_rows.normal_(0, 1.0)
        tokens.output_rows.normal_(0, 5.0)  # loud output rows: they may win the argmax, never change others
    pm = PersonalizedModel(backbone, [tokens], {"bo": True}, {"bo": "forced"})
    photo = sorted((DEMO / "corgi" / "test").glob("*.jpg"))[0]
    from yochameleon.data.images import load_image

    result = forgetting(pm, [load_image(photo)])
    # The invariant: a frozen backbone leaves every other column bit-identical.
    assert result["identical"] and result["max_abs_logit_diff"] == 0.0
    assert result["prompts"] == 4 and result["positions"] > 20
    # What a user notices is measured, not assumed: shares in [0, 1], a KL >= 0, over the plain answers.
    assert result["answer_positions"] >= 4 and 0.0 <= result["greedy_changed_share"] <= 1.0
    assert result["mean_kl"] >= 0.0 and 0.0 <= result["concept_token_share"] <= 1.0
    # The loud identifier row would win where it is allowed; a question that names no concept bans it.
    from yochameleon.model.decoding import answer_banned_ids

    builder = pm.builder("bo")
    identifier = int(tokens.token_ids[0])
    prompt = builder.prompt_ids("Describe the image.")
    ids = torch.tensor([prompt])
    with torch.no_grad():
        logits = pm.model.logits(pm.model.hidden_states(ids, torch.ones_like(ids))[0])[0]
    allowed = logits.masked_fill(backbone.text_banned_ids(allow=[identifier]), float("-inf")).argmax(-1)
    assert int((allowed == identifier).sum()) > 0
    assert result["rows_only_concept_wins"] == 0 and result["concept_token_share"] == 0.0
    assert bool(answer_banned_ids(builder, "Describe the image.")[identifier])
    assert not bool(answer_banned_ids(builder, "What colour is <bo>?")[identifier])


# ---- report and offline comparison -----------------------------------------------------------------------
def _metrics(concept: str, weighted: float) -> dict:
    return {"concept": concept, "subject": concept, "skipped": {}, "methods": {
        "adapter": {"tokens": 37, "recognition": {"weighted": weighted, "positive": 1.0, "negative": weighted},
                    "text_qa": {"accuracy": 0.8, "n": 5}},
        "plain": {"tokens": 0, "recognition": {"weighted": 0.5, "positive": 0.0, "negative": 1.0}},
    }}


def test_compare_builds_one_table_and_chart_from_metrics_files(tmp_path):
    for name, weighted in (("run-a", 0.75), ("run-b", 0.625)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(_metrics("bo", weighted)))
    out = tmp_path / "cmp"
    result = subprocess.run([sys.executable, "-m", "evaluation.compare", str(tmp_path), "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    table = (out / "comparison.md").read_text()
    assert "| run-a | bo | adapter | 37 | 0.750 |" in table and "| run-b | bo | plain | 0 | 0.500 |" in table
    assert (out / "comparison.png").stat().st_size > 1000


def test_compare_without_metrics_says_what_to_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "evaluation.compare", str(tmp_path)], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 1 and "evaluation.run" in result.stderr


# ---- the harness end to end -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("model, image_tokens", [("tiny", 256), ("janus-tiny", 16)])
def test_harness_scores_adapter_and_baselines_and_writes_the_report(model, image_tokens, tmp_path, cache_dir,
                                                                     tiny_path, encoders):
    from conftest import compose
    from yochameleon.training.recipe import train

    run = tmp_path / "run"
    train(compose(["+concept=demo", f"model={model}", "logger=none", "trainer.max_steps=2", "trainer.eval_every=2",
                   "trainer.sample_images=false", "recipe.conversations.generate_when_missing=false"], cache_dir), run)
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "evaluation.run", "+concept=demo", f"adapter={run / 'adapter'}",
         "methods=[adapter,plain,description,reference_photos]", "generation.n=1", "recognition.max_new_tokens=3",
         f"hydra.run.dir={out}", f"cache_dir={cache_dir}", f"eval_set.images={SHARED}",
         f"clip.model={encoders[0]}", f"clip.checkpoint={encoders[1]}", f"dino.checkpoint={encoders[2]}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    methods = metrics["methods"]
    assert set(methods) == {"adapter", "plain", "description", "reference_photos"}
    # Tokens spent introducing the subject: none, a sentence, 1 + 16 + 16 latent tokens, 3 photos.
    assert methods["plain"]["tokens"] == 0
    assert 0 < methods["description"]["tokens"] < methods["adapter"]["tokens"] < methods["reference_photos"]["tokens"]
    assert methods["reference_photos"]["tokens"] > 3 * image_tokens
    for row in methods.values():
        rec = row["recognition"]
        assert rec["n_positive"] == 2 and 0 <= rec["weighted"] <= 1
        assert "free_answer" in rec and row["generation"]["n"] == 1
        assert -1 <= row["generation"]["clip_i"] <= 1 and -1 <= row["generation"]["dino"] <= 1
        assert -1 <= row["generation"]["clip_t"] <= 1
    assert metrics["forgetting"]["identical"]
    assert metrics["throughput"]["logit_vs_generate_speedup"] > 0
    if SHARED.is_dir():
        assert methods["adapter"]["vqa"]["n"] >= 5 and methods["adapter"]["text_qa"]["n"] >= 5
        assert methods["description"]["multi_concept"]["n"] > 0
    report = (out / "report.md").read_text()
    assert "| adapter |" in report and (out / "charts" / "methods.png").exists()
    assert "Forgetting:" in report and "greedy next token changed at" in report and "mean KL" in report
    assert list((out / "wandb").glob("offline-run-*"))


def test_the_harness_says_where_its_results_went_and_why_a_task_was_skipped(tmp_path, cache_dir, janus_path):
    # Issue 25.6: it printed a markdown image link, and skipped generation similarity without a word.
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(
        [sys.executable, "-m", "evaluation.run", "+concept=demo", "model=janus-tiny", "logger=none", "run_name=mine",
         "tasks=[recognition,generation,forgetting]", "methods=[plain]", "generation.n=1",
         "recognition.free_answer=false", f"output_root={tmp_path / 'outputs'}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "outputs" / "eval" / "corgi" / "mine"  # run_name= names the folder, as in training
    lines = result.stdout.splitlines()
    assert f"  report        {out / 'report.md'}" in lines and f"  metrics       {out / 'metrics.json'}" in lines
    assert (out / "report.md").is_file() and (out / "metrics.json").is_file()
    assert not any(line.startswith("![") for line in lines)
    assert ("  skipped       generation_similarity: no CLIP/DINO checkpoint configured: images drawn and saved, "
            "CLIP-I / CLIP-T / DINO not computed; set clip.checkpoint=<local open_clip weights> and/or "
            "dino.checkpoint=<local HF dir, e.g. facebook/dinov2-small>") in lines
    assert "  skipped       forgetting: no adapter= given: forgetting compares an adapter with the plain backbone" \
        in lines


def test_speed_ratios_read_as_faster_or_slower():
    from evaluation.report import speed_words

    assert speed_words(2.5) == "2.50x faster" and speed_words(0.8) == "1.25x slower"  # was "0.80x faster"


def test_the_dreambooth_images_default_does_not_depend_on_the_working_directory(tmp_path, monkeypatch, cache_dir):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from yochameleon.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("eval", overrides=["+concept=demo", f"cache_dir={cache_dir}"])
    assert cfg.eval_set.images == SHARED.resolve() and cfg.device == "auto"


@pytest.mark.slow
def test_the_harness_evaluates_the_demos_toy_concept(tmp_path, cache_dir):
    # Issue 24.0: `evaluation.run +concept=toy-bo adapter=<the demo's adapter>` stopped at compose time with
    # "Key 'retrieval' not in 'EvalConfig'" (the shared toy concept config sets training-only keys).
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    trained = subprocess.run(
        [sys.executable, "-m", "yochameleon.train", "+concept=toy-bo", "logger=none", "trainer.max_steps=2",
         "trainer.eval_every=2", "trainer.final_samples=0", "trainer.progress=false", "run_name=demo"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    adapter = tmp_path / "outputs" / "bo" / "demo" / "adapter"
    result = subprocess.run(
        [sys.executable, "-m", "evaluation.run", "+concept=toy-bo", f"adapter={adapter}", "tasks=[recognition,forgetting]",
         "methods=[adapter]", "recognition.free_answer=false", "logger=none", "run_name=toy"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "outputs" / "eval" / "bo" / "toy" / "metrics.json").read_text())
    assert metrics["concept"] == "bo" and metrics["methods"]["adapter"]["recognition"]["n_positive"] > 0
    assert "forgetting" in metrics and f"  metrics       {tmp_path / 'outputs' / 'eval' / 'bo' / 'toy' / 'metrics.json'}" \
        in result.stdout.splitlines()
