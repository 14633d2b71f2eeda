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
