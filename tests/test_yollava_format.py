"""The published Yo'LLaVA question files load unchanged: small files of exactly their shape, tiny PNGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO
from evaluation.questions import QuestionFileError, YoLLaVASet, load_text_qa, load_visual_qa, mark_subject

# subject -> number of test photos; the published set has 40 subjects and 5-10 test photos each.
SUBJECTS = {"bo": 3, "mam": 2, "shiba-gray": 2}
TRAIN_PHOTOS = 3
COLOURS = {"bo": (200, 120, 40), "mam": (40, 40, 40), "shiba-gray": (150, 150, 150)}


def _png(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)


def _visual_qa(subjects: dict[str, int]) -> dict:
    """yollava-visual-qa.json's shape: subject -> "./yollava-data/test/<s>/<n>.png" -> one question."""
    data = {}
    for subject, n in subjects.items():
        data[subject] = {
            f"./yollava-data/test/{subject}/{i}.png": {
                "question": "What is <sks> doing?" if i % 2 else "What is the pattern on <sks>'s head?",
                "options": {"A": "Sleeping", "B": "Running"},
                "correct_answer": "AB"[i % 2],
            } for i in range(n)}
    return data


def _text_qa(subjects) -> dict:
    """text_qa.json's shape: subject -> "0".."9" -> a question with `option` (singular) and a bare `sks`."""
    questions = ["Is sks a dog or a cat?", "What is sks's breed?", "Where does sks sleep?", "Who asks sks?",
                 "Is sks tall?", "Does sks like tasks?", "What colour is sks.", "Is sks young or old?",
                 "What does sks eat?", "Is sks happy?"]
    return {s: {str(i): {"question": q, "option": {"A": "Yes, sks", "B": "No"}, "correct_answer": "AB"[i % 2]}
                for i, q in enumerate(questions)} for s in subjects}


def build_yollava(base: Path, root_name: str = "yollava-data", text_beside: bool = True) -> Path:
    """A small Yo'LLaVA data root under `base`, the two question files as published; returns the root."""
    root = base / root_name
    for subject, n in SUBJECTS.items():
        for i in range(TRAIN_PHOTOS):
            _png(root / "train" / subject / f"{i}.png", COLOURS[subject])
        for i in range(2):
            _png(root / "train" / subject / "negative_example" / f"neg{i}.png", (i * 90, 200, 30))
        for i in range(n):
            _png(root / "test" / subject / f"{i}.png", tuple(c // 2 + 10 * i for c in COLOURS[subject]))
    (root / "yollava-visual-qa.json").write_text(json.dumps(_visual_qa(SUBJECTS), indent=4))
    text = (base if text_beside else root) / "text_qa.json"
    text.write_text(json.dumps(_text_qa(SUBJECTS), indent=4))
    return root


# ---- bare `sks` -> <sks>, whole words only ---------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("Is sks a dog or a cat?", "Is <sks> a dog or a cat?"),
    ("What is sks's breed?", "What is <sks>'s breed?"),
    ("Is this sks?", "Is this <sks>?"),
    ("This is sks.", "This is <sks>."),
    ("sks", "<sks>"),
    ("(sks), sks!", "(<sks>), <sks>!"),
    ("He asks about tasks.", "He asks about tasks."),
    ("sksx and xsks", "sksx and xsks"),
    ("sks_1", "sks_1"),
    ("Where is <sks>?", "Where is <sks>?"),
    ("Is <sks> sks's friend?", "Is <sks> <sks>'s friend?"),
])
def test_bare_sks_becomes_the_placeholder_only_as_a_whole_word(text, expected):
    assert mark_subject(text) == expected


# ---- the two published files ------------------------------------------------------------------------------
def test_published_visual_file_loads_every_question_with_its_image(tmp_path):
    root = build_yollava(tmp_path)
    loaded = load_visual_qa(root / "yollava-visual-qa.json")  # paths relative to the folder holding the root
    assert not loaded.missing_images
    assert len(loaded.questions) == sum(SUBJECTS.values()) == 7
    first = loaded.questions[0]
    assert first.image == tmp_path / "yollava-data" / "test" / "bo" / "0.png" and first.image.is_file()
    assert first.question == "What is the pattern on <sks>'s head?"
    assert first.options == {"A": "Sleeping", "B": "Running"} and first.answer == "A"
    mam = load_visual_qa(root / "yollava-visual-qa.json", data_root=root, subjects={"mam"})
    assert [q.image.parent.name for q in mam.questions] == ["mam", "mam"]
    assert [q.answer for q in mam.questions] == ["A", "B"]


def test_visual_paths_resolve_by_their_tail_under_a_renamed_root_and_missing_images_are_counted(tmp_path):
    root = build_yollava(tmp_path, root_name="my-photos")  # keys still say ./yollava-data/...
    (root / "test" / "mam" / "1.png").unlink()
    loaded = load_visual_qa(root / "yollava-visual-qa.json", data_root=root)
    assert len(loaded.questions) == 6
    assert all(q.image.is_relative_to(root) for q in loaded.questions)
    assert loaded.missing_images == [str(root / "test" / "mam" / "1.png")]  # where the configured root has it
    summary = YoLLaVASet(root).summary()
    assert summary["visual_qa_loaded"] == 6 and summary["visual_qa_missing_images"] == 1


def test_published_text_file_loads_with_option_singular_and_bare_sks(tmp_path):
    build_yollava(tmp_path)
    questions = load_text_qa(tmp_path / "text_qa.json", "shiba-gray")
    assert len(questions) == 10
    assert [q.question for q in questions[:2]] == ["Is <sks> a dog or a cat?", "What is <sks>'s breed?"]
    assert questions[3].question == "Who asks <sks>?" and questions[5].question == "Does <sks> like tasks?"
    assert questions[6].question == "What colour is <sks>."
    assert questions[0].options == {"A": "Yes, <sks>", "B": "No"}
    assert [q.answer for q in questions] == ["A", "B"] * 5
    assert "<sks>" in questions[0].prompt_text() and "A. Yes, <sks>" in questions[0].prompt_text()
    assert load_text_qa(tmp_path / "text_qa.json", "unknown") == []


def test_a_question_without_options_names_both_spellings(tmp_path):
    path = tmp_path / "text_qa.json"
    path.write_text(json.dumps({"bo": {"0": {"question": "Is sks a dog?", "correct_answer": "A"}}}))
    with pytest.raises(QuestionFileError, match=r'"options" \(or "option"\)') as err:
        load_text_qa(path, "bo")
    assert str(path) in str(err.value)


def test_bare_sks_in_a_text_question_becomes_the_concept_identifier(backbone):
    from evaluation.methods import EvalBuilder
    from yochameleon.concept.tokens import PersonalizedTokens

    tokens = PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, "bo", 2, 2)
    builder = EvalBuilder(backbone, tokens, None, False)
    identifier = backbone.config.vocabulary_map[tokens.identifier]
    for text, count in (("What is sks's breed?", 1), ("Is sks a dog or a cat, sks?", 2), ("Who asks tasks?", 0)):
        ids = builder.text_ids(mark_subject(text))
        assert ids.count(identifier) == count, text


# ---- the evaluation set: protocol and files ---------------------------------------------------------------
def test_yollava_set_follows_the_protocol_and_finds_both_files(tmp_path):
    root = build_yollava(tmp_path)
    eval_set = YoLLaVASet(root)
    assert eval_set.available() and eval_set.subjects() == sorted(SUBJECTS)
    assert eval_set.visual_file == root / "yollava-visual-qa.json"  # in the data root, as Yo'LLaVA ships it
    assert eval_set.text_file == tmp_path / "text_qa.json"  # beside it
    positives, negatives = eval_set.test_photos("bo"), eval_set.other_test_photos("bo")
    assert positives == [root / "test" / "bo" / f"{i}.png" for i in range(3)]
    assert len(negatives) == 4 and {p.parent.name for p in negatives} == {"mam", "shiba-gray"}
    assert not set(positives) & set(negatives)
    assert len(eval_set.visual_qa("bo").questions) == 3 and len(eval_set.text_qa("bo")) == 10
    assert eval_set.summary() == {
        "kind": "yollava", "root": str(root), "subjects": 3, "visual_qa_file": str(root / "yollava-visual-qa.json"),
        "text_qa_file": str(tmp_path / "text_qa.json"), "visual_qa_loaded": 7, "visual_qa_missing_images": 0,
        "text_qa_loaded": 30}
    with pytest.raises(QuestionFileError, match="no folder 'rex'"):
        eval_set.test_photos("rex")
    with pytest.raises(QuestionFileError, match="eval_set.text_qa") as err:
        YoLLaVASet(root, text_file=tmp_path / "nope.json")
    assert str(tmp_path / "nope.json") in str(err.value)


def _eval_cfg(overrides: list[str], cache_dir: Path):
    from hydra import compose, initialize_config_dir

    from yochameleon.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("eval", overrides=[f"cache_dir={cache_dir}", "logger=none", *overrides])


def test_eval_set_yollava_takes_the_concepts_data_root(tmp_path, cache_dir, monkeypatch):
    from evaluation.run import EvaluationError, load_eval_set

    root = build_yollava(tmp_path)
    monkeypatch.setenv("YOLLAVA_DATA", str(root))
    cfg = _eval_cfg(["+concept=bo", "eval_set=yollava"], cache_dir)
    assert str(cfg.eval_set.root) == cfg.concept.data_root == str(root)  # eval_set.root is typed as a Path
    assert cfg.concept.photos == str(root / "train" / "bo")
    assert cfg.concept.negatives == [str(root / "train" / "bo" / "negative_example")]
    assert cfg.concept.test_negatives == [str(root / "test")]
    assert isinstance(load_eval_set(cfg), YoLLaVASet)
    assert _eval_cfg(["+concept=bo", "concept.name=mam"], cache_dir).concept.test_photos == str(root / "test" / "mam")
    assert _eval_cfg([], cache_dir).eval_set.kind == "dreambooth"  # the default is unchanged
    bad = _eval_cfg(["+concept=bo", "eval_set=yollava", f"eval_set.root={tmp_path / 'elsewhere'}"], cache_dir)
    with pytest.raises(EvaluationError, match="eval_set.root") as err:
        load_eval_set(bad)
    assert str(tmp_path / "elsewhere") in str(err.value)


# ---- the harness on a tiny Yo'LLaVA-shaped set -------------------------------------------------------------
def test_harness_on_a_yollava_set_scores_the_published_columns(tmp_path, cache_dir, tiny_path, monkeypatch):
    from evaluation.report import write_report
    from evaluation.run import evaluate
    from yochameleon.metrics.table import PUBLISHED_COLUMNS

    root = build_yollava(tmp_path, root_name="data", text_beside=False)
    cfg = _eval_cfg(["+concept=bo", f"concept.data_root={root}", "eval_set=yollava", "methods=[plain]",
                     "tasks=[recognition,vqa,text_qa]", "recognition.free_answer=false"], cache_dir)
    out = tmp_path / "eval"
    out.mkdir()
    results = evaluate(cfg, out)
    plain = results["methods"]["plain"]
    assert plain["recognition"]["n_positive"] == 3 and plain["recognition"]["n_negative"] == 4
    assert plain["vqa"]["n"] == 3 and plain["text_qa"]["n"] == 10
    assert 0 <= plain["recognition"]["weighted"] <= 1 and 0 <= plain["text_qa"]["accuracy"] <= 1
    assert results["eval_set"]["visual_qa_loaded"] == 7 and results["eval_set"]["text_qa_loaded"] == 30
    report = write_report(results, out)
    assert "| source | concept | method | " + " | ".join(PUBLISHED_COLUMNS) + " |" in report
    assert "| Yo'Chameleon paper, reported (not measured here) | 40 Yo'LLaVA subjects | Yo'Chameleon | 0.845 | " \
           "0.604 | 0.721 | 0.783 |" in report
    assert "| Chameleon | 0.500 | 0.474 | 0.405 | 0.425 |" in report
    assert f"| this run | bo | plain | {plain['recognition']['weighted']:.3f} |" in report
    assert "7 visual questions loaded (0 images not found), 30 text questions" in report


@pytest.mark.slow
def test_user_command_trains_and_evaluates_on_a_yollava_set(tmp_path, cache_dir, tiny_path):
    from conftest import compose
    from yochameleon.training.recipe import train

    root = build_yollava(tmp_path)
    run = tmp_path / "run"
    train(compose(["+concept=bo", f"concept.data_root={root}", "logger=none", "trainer.max_steps=2",
                   "trainer.eval_every=2", "trainer.sample_images=false",
                   "recipe.conversations.generate_when_missing=false"], cache_dir), run)
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "YOLLAVA_DATA": str(root)}
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "evaluation.run", "+concept=bo", "eval_set=yollava", f"adapter={run / 'adapter'}",
         "methods=[adapter,plain]", "tasks=[recognition,vqa,text_qa]", "recognition.max_new_tokens=3",
         "logger=none", f"hydra.run.dir={out}", f"cache_dir={cache_dir}"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_set"]["visual_qa_loaded"] == 7 and metrics["eval_set"]["text_qa_loaded"] == 30
    for method in ("adapter", "plain"):
        row = metrics["methods"][method]
        assert row["recognition"]["n_positive"] == 3 and row["recognition"]["n_negative"] == 4
        assert row["vqa"]["n"] == 3 and row["text_qa"]["n"] == 10
    report = (out / "report.md").read_text()
    assert "Against the published table (Yo'LLaVA data)" in report
    assert "| this run | bo | adapter |" in report and "| this run | bo | plain |" in report
    assert "| Yo'Chameleon | 0.845 | 0.604 | 0.721 | 0.783 |" in report


def test_compare_sets_the_mean_over_subjects_beside_the_papers_rows(tmp_path):
    for concept, rec, text in (("bo", 0.75, 0.6), ("mam", 0.55, 0.4)):
        metrics = {"concept": concept, "subject": concept, "skipped": {}, "eval_set": {"kind": "yollava"},
                   "methods": {"adapter": {"tokens": 37, "recognition": {"weighted": rec},
                                           "text_qa": {"accuracy": text}, "vqa": {"accuracy": None}},
                               "plain": {"tokens": 0, "recognition": {"weighted": 0.5}}}}
        (tmp_path / concept).mkdir()
        (tmp_path / concept / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "cmp"
    result = subprocess.run([sys.executable, "-m", "evaluation.compare", str(tmp_path), "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    table = (out / "comparison.md").read_text()
    assert "| these runs | bo | adapter | 0.750 | - | 0.600 | - |" in table
    assert "| these runs, mean | 2 concepts | adapter | 0.650 | - | 0.500 | - |" in table
    assert "| these runs, mean | 2 concepts | plain | 0.500 | - | - | - |" in table
    assert "| Yo'Chameleon paper, reported (not measured here) | 40 Yo'LLaVA subjects | Chameleon | 0.500 | 0.474 | " \
           "0.405 | 0.425 |" in table


def test_harness_counts_the_missing_images_of_the_subject(tmp_path, cache_dir, tiny_path):
    from evaluation.run import evaluate

    root = build_yollava(tmp_path)
    (root / "test" / "mam" / "0.png").unlink()
    cfg = _eval_cfg(["+concept=bo", f"concept.data_root={root}", "concept.name=mam", "eval_set=yollava",
                     "methods=[plain]", "tasks=[vqa]"], cache_dir)
    out = tmp_path / "eval"
    out.mkdir()
    results = evaluate(cfg, out)
    assert results["methods"]["plain"]["vqa"]["n"] == 1  # mam's other question is still asked
    assert results["skipped"]["vqa_missing_images"].startswith("1 image(s) not found")
    assert str(root / "test" / "mam" / "0.png") in results["skipped"]["vqa_missing_images"]
    assert results["eval_set"]["visual_qa_missing_images"] == 1 and results["eval_set"]["visual_qa_loaded"] == 6
