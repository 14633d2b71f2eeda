"""The side-by-side table over runs."""

import json

import pytest

from yochameleon.compare import main


def test_table_over_runs(tmp_path, capsys):
    for name, acc in (("a", 0.75), ("b", 0.5)):
        run = tmp_path / name
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"steps": 10, "wall_seconds": 1.5,
                                                      "final": {"eval/recognition/weighted": acc}}))
        lines = [{"step": s, "train/loss": 10.0 - s} for s in range(1, 11)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| run | model | recipe | steps")
    assert out[2] == "| a | - | - | 10 | 1.500 | - | - | - | 0.750 | - | - | - | 0.000 |"
    assert main([str(tmp_path / "none")]) == 1


def test_the_table_shows_what_differs_between_runs(tmp_path, capsys):
    # Issue 25.5: six demo runs all showed "recognition 0.500" while their test AUROCs ranged 0.375-1.000,
    # and nothing said which model or recipe a row was.
    for name, recipe, auroc in (("a", "yochameleon", 0.375), ("b", "understanding-only", 1.0)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(f"model:\n  name: toyworld\nrecipe:\n  name: {recipe}\n")
        (run / "summary.json").write_text(json.dumps({
            "steps": 60, "wall_seconds": 10.7, "final_split": "test",
            "val": {"eval/recognition/auroc": 0.7, "eval/recognition/weighted": 0.6},
            "final": {"eval/split": "test", "eval/recognition/auroc": auroc, "eval/recognition/weighted": 0.5},
            "text_qa": {"text_qa": 1.0, "text_qa_heldout": 0.833},
            "generation": {"judged": 8, "right": 2, "all_right": 0.25}}))
        (run / "metrics.jsonl").write_text(json.dumps({"step": 60, "train/loss": 0.5}) + "\n")
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("| run | model | recipe | steps | seconds | val AUROC | val weighted | test AUROC | test weighted "
                      "| text QA | text QA held-out | generation judged | loss (last 10%) |")
    assert out[2] == "| a | toyworld | yochameleon | 60 | 10.700 | 0.700 | 0.600 | 0.375 | 0.500 | 1.000 | 0.833 | 2/8 | 0.500 |"
    assert out[3].startswith("| b | toyworld | understanding-only | 60 | 10.700 | 0.700 | 0.600 | 1.000 | 0.500 |")


def test_help_names_the_command_as_typed(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m yochameleon.compare ")  # was "usage: compare.py"


def test_one_tool_compares_training_runs_and_evaluations(tmp_path, capsys):
    import evaluation.compare

    assert evaluation.compare.main is main  # `yochameleon-eval-compare` is the same command
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"steps": 4, "wall_seconds": 2.0,
                                                  "final": {"eval/recognition/weighted": 0.625}}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 4, "train/loss": 1.0}) + "\n")
    evaluated = tmp_path / "eval" / "e1"
    evaluated.mkdir(parents=True)
    (evaluated / "metrics.json").write_text(json.dumps({"concept": "bo", "methods": {
        "plain": {"tokens": 0, "recognition": {"weighted": 0.5}}}}))
    out = tmp_path / "cmp"
    assert main([str(tmp_path / "runs"), str(tmp_path / "eval"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| a | - | - | 4 | 2.000 | - | - | - | 0.625 |" in printed and "| e1 | bo | plain | 0 | 0.500 |" in printed
    assert "| e1 | bo | plain | 0 | 0.500 |" in (out / "comparison.md").read_text()
    assert main([str(run)]) == 0 and capsys.readouterr().out.splitlines()[2].startswith("| a | - | - | 4 |")
