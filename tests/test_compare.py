"""The side-by-side table over runs."""

import json

from yochameleon.compare import main


def test_table_over_runs(tmp_path, capsys):
    for name, acc in (("a", 0.75), ("b", 0.5)):
        run = tmp_path / name
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"steps": 10, "wall_seconds": 1.5,
                                                      "final": {"eval/recognition/weighted": acc}}))
        lines = [{"step": s, "train/loss/recognition": 10.0 - s} for s in range(1, 11)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| run | steps") and out[2].startswith("| a | 10 | 1.500 | 0.750 | - | 0.000 |")
    assert main([str(tmp_path / "none")]) == 1


def test_one_tool_compares_training_runs_and_evaluations(tmp_path, capsys):
    import evaluation.compare

    assert evaluation.compare.main is main  # `yochameleon-eval-compare` is the same command
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"steps": 4, "wall_seconds": 2.0,
                                                  "final": {"eval/recognition/weighted": 0.625}}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 4, "train/loss/recognition": 1.0}) + "\n")
    evaluated = tmp_path / "eval" / "e1"
    evaluated.mkdir(parents=True)
    (evaluated / "metrics.json").write_text(json.dumps({"concept": "bo", "methods": {
        "plain": {"tokens": 0, "recognition": {"weighted": 0.5}}}}))
    out = tmp_path / "cmp"
    assert main([str(tmp_path / "runs"), str(tmp_path / "eval"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| a | 4 | 2.000 | 0.625 | - | 1.000 |" in printed and "| e1 | bo | plain | 0 | 0.500 |" in printed
    assert "| e1 | bo | plain | 0 | 0.500 |" in (out / "comparison.md").read_text()
    assert main([str(run)]) == 0 and capsys.readouterr().out.splitlines()[2].startswith("| a | 4 |")
