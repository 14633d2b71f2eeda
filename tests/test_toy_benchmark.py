"""The toy recipe benchmark (benchmarks/toy_recipes.py, toy_report.py): its table and verdicts, its resumable
run set, its baselines' prompts. Its statistics: tests/test_benchmark_statistics.py."""

from __future__ import annotations

import json
import random

import pytest
from omegaconf import OmegaConf

from conftest import benchmark_module

B = benchmark_module("toy_recipes")  # the runs, the run set on disk, the command
R = benchmark_module("toy_report")  # methods, metrics, claims, the table


def row(method, concept, seed, **figures):
    base = {m: 0.5 for m in R.METRICS} | {"steps": 10, "train_seconds": 1.0}
    return {"concept": concept, "seed": seed, "method": method, **base, **figures}


SETTINGS = {"concepts": ["bo", "mam"], "recipes": ["yochameleon", "shared-tokens", "understanding-only"],
            "seeds": [0, 1, 2], "images": 8, "overrides": ["trainer.max_steps=2"], "backbone": "toyworld-x"}


def benchmark_rows(incomplete: bool = False) -> list[dict]:
    """yochameleon clearly above shared-tokens on AUROC, equal on generation; understanding-only draws nothing."""
    rows = []
    for concept in SETTINGS["concepts"]:
        for seed in SETTINGS["seeds"]:
            jitter = 0.01 * (seed + 3 * (concept == "bo"))
            rows.append(row("yochameleon", concept, seed, recognition_auroc=0.8 + jitter, generation=0.25 + jitter))
            rows.append(row("shared-tokens", concept, seed, recognition_auroc=0.6 - jitter, generation=0.25 - jitter))
            if not (incomplete and concept == "mam"):
                rows.append(row("understanding-only", concept, seed, generation=0.0))
            rows.append(row("baseline-plain", concept, seed, steps=None, train_seconds=None))
    return rows


def test_table_marks_significant_differences_and_judges_the_claims(tmp_path):
    text = R.table(benchmark_rows(incomplete=True), SETTINGS, tmp_path)
    assert "--seeds 0 1 2" in text and "trainer.max_steps=2" in text and "Seeds 0 1 2" in text
    test_table = text.split("The validation split")[0]  # the validation table, under it, has rows of its own
    lines = {line.split(" | ")[0].strip("| "): line for line in test_table.splitlines() if line.startswith("| ")}
    assert lines["shared-tokens"].split(" | ")[3].endswith("*")  # AUROC: 0.8 vs 0.6 in every run
    assert not lines["shared-tokens"].split(" | ")[2].endswith("*")  # recognition weighted: equal
    assert lines["understanding-only"].split(" | ")[1] == "3 of 6"
    assert lines["baseline-plain"].split(" | ")[-1].strip(" |") == "–"  # a baseline trains nothing
    assert "baseline-description" not in lines  # no runs: no row
    claims = {c["claim"]: c for c in R.judged_claims(benchmark_rows())}
    assert claims["(i) separate g/u tokens beat shared ones, recognition AUROC"]["verdict"] == "agrees"
    assert claims["(i) separate g/u tokens beat shared ones, recognition weighted"]["verdict"] == "cannot tell"
    assert claims["(ii) soft positives improve generation (all 3 right)"]["n"] == 0  # no such runs
    assert "**agrees**" in text and "**cannot tell**" in text
    controls = R.judged_claims(benchmark_rows(), R.CONTROLS)
    assert controls[0]["verdict"] == "agrees" and controls[0]["n"] == 6


def test_disagreement_is_a_significant_difference_the_other_way():
    rows = [r | {"recognition_auroc": 1 - r["recognition_auroc"]} for r in benchmark_rows()]
    claims = {c["claim"]: c["verdict"] for c in R.judged_claims(rows)}
    assert claims["(i) separate g/u tokens beat shared ones, recognition AUROC"] == "disagrees"


def test_the_self_prompting_claim_reads_the_self_prompting_recipe_against_the_default(tmp_path):
    """The default recipe self-prompts nowhere: claim (iii) is self-prompting − yochameleon, not the reverse."""
    rows = [r for r in benchmark_rows() if r["method"] == "yochameleon"]
    rows += [r | {"method": "self-prompting", "recognition_auroc": r["recognition_auroc"] + 0.05} for r in rows]
    claims = {c["claim"]: c for c in R.judged_claims(rows)}
    auroc = claims["(iii) self-prompting helps, recognition AUROC"]
    assert (auroc["better"], auroc["worse"], auroc["verdict"]) == ("self-prompting", "yochameleon", "agrees")
    assert auroc["difference"] == pytest.approx(0.05)
    text = R.table(rows, SETTINGS | {"recipes": ["yochameleon", "self-prompting"]}, tmp_path)
    assert "(iii) self-prompting helps, recognition AUROC: self-prompting − yochameleon = +0.050" in text


def test_runs_resume_under_the_same_settings_only(tmp_path):
    out = tmp_path / "bench"
    B.check_settings(out, SETTINGS)
    B.check_settings(out, dict(SETTINGS))  # the same settings: resume
    with pytest.raises(SystemExit, match=r"settings\.json records other settings \(seeds"):
        B.check_settings(out, SETTINGS | {"seeds": [0, 1]})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file").write_text("x")
    with pytest.raises(SystemExit, match="not empty and has no settings.json"):
        B.check_settings(tmp_path / "other", SETTINGS)


def test_table_only_reads_whatever_runs_are_done(tmp_path, capsys):
    out = tmp_path / "bench"
    B.check_settings(out, SETTINGS)
    for figures in benchmark_rows()[:5]:
        path = B.run_path(out, figures["concept"], figures["seed"], figures["method"])
        path.mkdir(parents=True)
        (path / "benchmark.json").write_text(json.dumps(figures))
    B.run_path(out, "mam", 2, "yochameleon").mkdir(parents=True)  # an interrupted run: not counted
    B.main(["--out", str(out), "--table-only"])
    printed = capsys.readouterr().out
    assert "5 of 30 runs done" in printed and (out / "table.md").read_text() == printed
    results = json.loads((out / "results.json").read_text())
    assert len(results["runs"]) == 5 and results["summary"]["yochameleon"]["n"] == 2
    with pytest.raises(SystemExit, match="holds no benchmark"):
        B.main(["--out", str(tmp_path / "none"), "--table-only"])


def test_validation_figures_are_what_chose_best_and_are_tabled_apart_from_the_test_split(tmp_path):
    """A recipe's validation figures are those of the evaluation that chose best/'s understanding rows (not the test
    record at the same step) and the NLL that chose its g-token rows; a benchmark.json written before they were
    recorded gets them from its run folder; the table shows them for the recipes only."""
    out = tmp_path / "bench"
    B.check_settings(out, SETTINGS)
    run = B.run_path(out, "bo", 0, "yochameleon")
    (run / "best").mkdir(parents=True)
    selection = {"understanding": {"metric": "eval/recognition/weighted", "score": 0.75, "step": 20},
                 "generation": {"metric": "eval/generation/nll", "score": 3.8, "step": 30}}
    (run / "best" / "adapter_config.json").write_text(json.dumps({"selection": selection}))
    records = [{"step": 10, "eval/split": "val", "eval/recognition/weighted": 0.6, "eval/recognition/auroc": 0.6},
               {"step": 20, "train/loss": 1.0},
               {"step": 20, "eval/split": "val", "eval/recognition/weighted": 0.75, "eval/recognition/auroc": 0.81},
               {"step": 20, "test/split": "test", "test/recognition/weighted": 0.5, "test/recognition/auroc": 0.5}]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n")
    expected = {"val_recognition": 0.75, "val_recognition_auroc": 0.81, "val_generation_nll": 3.8}
    assert B.validation_figures(run) == expected
    assert B.validation_figures(tmp_path / "no-run") == dict.fromkeys(expected)  # no best/: nothing was chosen
    shared = tmp_path / "shared"  # shared tokens: one step's rows serve every task, and that step's NLL is theirs
    (shared / "best").mkdir(parents=True)
    (shared / "best" / "adapter_config.json").write_text(json.dumps({"selection": {"understanding": selection[
        "understanding"], "generation": None}}))
    (shared / "metrics.jsonl").write_text(json.dumps(records[2] | {"eval/generation/nll": 4.2}) + "\n")
    assert B.validation_figures(shared) == expected | {"val_generation_nll": 4.2}
    (run / "benchmark.json").write_text(json.dumps(row("yochameleon", "bo", 0, kind="recipe")))
    plain = B.run_path(out, "bo", 0, "baseline-plain")
    plain.mkdir(parents=True)
    (plain / "benchmark.json").write_text(json.dumps(row("baseline-plain", "bo", 0, kind="baseline")))
    rows = {r["method"]: r for r in B.collected(out, SETTINGS)}
    assert rows["yochameleon"].items() >= expected.items() and "val_recognition" not in rows["baseline-plain"]
    text = R.table(list(rows.values()), SETTINGS, out)
    validation = text.split("The validation split")[1]
    assert "| val weighted | val AUROC | val generation NLL (lower is better) |" in validation
    assert "| yochameleon | 1 of 6 | 0.750 | 0.810 | 3.800 |" in validation and "baseline" not in validation


def test_toy_concept_descriptions_are_the_definitions_pretraining_used():
    from yochameleon.config import CONFIG_DIR
    from yochameleon.toyworld.concepts import CONCEPTS

    for name, thing in CONCEPTS.items():
        config = OmegaConf.load(CONFIG_DIR / "concept" / f"toy-{name}.yaml")
        assert config.concept.description == thing.short()  # "an orange striped heart"


def _definition_example(backbone, kind: str, seed: int):
    """A toy pretraining example whose name is the adapters' identifier token, and the texts it was made of."""
    import torch

    from yochameleon.tiny.chameleon import FIRST_IMAGE_ID
    from yochameleon.toyworld import pretrain

    texts = []

    class Recorded(pretrain.Ids):
        def text(self, text):
            texts.append(text)
            return super().text(text)

    number = int(backbone.default_first_token.removeprefix("<reserved").removesuffix(">"))
    ids = Recorded(backbone.tokenizer, backbone.bos_id, backbone.end_of_turn_id, backbone.boi_id, backbone.eoi_id,
                   FIRST_IMAGE_ID, [number])
    tokens, _ = pretrain.make_example(kind, random.Random(seed), ids, lambda scene: torch.tensor([0, 1, 2]))
    return tokens, texts  # texts: the definition, the name, the question, ...


@pytest.mark.parametrize("seed", [0, 1])
def test_toy_baselines_prompt_as_the_toy_pretraining_defined_things(backbone, seed):
    """The description baseline's prompt is a pretraining definition example's prompt, token for token
    ("<reserved16200> is an orange striped heart.\\n" then the question); the plain one is the bare question."""
    for kind in ("define_text", "define_generate"):
        tokens, texts = _definition_example(backbone, kind, seed)
        definition, name, question = texts[0], texts[1], texts[2].replace(texts[1], "<sks>")
        assert name == backbone.default_first_token and definition.startswith(f"{name} is ")
        described = B.baseline("description", backbone, "bo", definition[len(f"{name} is "):-2]).builder("bo")
        prompt = described.prompt_ids(question) if kind == "define_text" else described.image_prompt_ids(question)
        assert tokens[:len(prompt)] == prompt, texts
    plain = B.baseline("plain", backbone, "bo", None).builder("bo")
    layout = plain.layout
    assert plain.prompt_ids("What colour is <sks>?") == layout.prompt(layout.text(f"What colour is {name}?"))
    with pytest.raises(SystemExit, match="no concept.description"):
        B.baseline("description", backbone, "bo", None)


def test_a_worker_runs_whole_concept_seed_pairs_and_leaves_the_table_to_its_starter(tmp_path, monkeypatch):
    """`--shard I/N` (what `--workers N` starts each worker with) takes every N-th (concept, seed) pair with all of
    its methods, default recipe and baselines first; the shards together are the whole run set, none twice; a
    worker writes no table (its siblings would write the same file at once)."""
    import yochameleon.toyworld.build as build

    monkeypatch.setattr(build, "ensure_toyworld_checkpoint", lambda cache_dir: tmp_path / "toyworld-x")
    ran = []

    def fake_run_one(concept, method, seed, out, cache_dir, n_images, extra):
        ran.append((concept, seed, method))
        directory = B.run_path(out, concept, seed, method)
        directory.mkdir(parents=True)
        (directory / "benchmark.json").write_text(json.dumps(row(method, concept, seed)))

    monkeypatch.setattr(B, "run_one", fake_run_one)
    common = ["--out", str(tmp_path / "bench"), "--concepts", "bo", "mam", "--seeds", "0", "1", "--recipes",
              "understanding-only", "yochameleon", "--cache-dir", str(tmp_path)]
    shares = []
    for index in range(3):
        ran.clear()
        message = B.run_all(B.parse_args([*common, "--workers", "3", "--shard", f"{index}/3"]))
        assert message.endswith(f"worker {index} of 3 done ({len(ran)} runs)")
        shares.append(list(ran))
    assert not (tmp_path / "bench" / "table.md").exists()
    pairs = [(c, s) for s in (0, 1) for c in ("bo", "mam")]  # seed-major
    methods = ["yochameleon", *R.BASELINES, "understanding-only"]
    for index, share in enumerate(shares):
        assert share == [(c, s, m) for c, s in pairs[index::3] for m in methods]
    assert sorted(sum(shares, [])) == sorted((c, s, m) for c, s in pairs for m in methods)
    with pytest.raises(SystemExit):
        B.parse_args([*common, "--shard", "3/3"])
    with pytest.raises(SystemExit):
        B.parse_args([*common, "--workers", "0"])


@pytest.mark.slow
def test_workers_run_the_benchmark_side_by_side_and_the_starter_writes_the_table(tmp_path, cache_dir):
    """`--workers 2` on the shipped toy backbone (one training step a run): two processes, one (concept, seed) pair
    each, every run done once, and the table of all of them written by the command that started them."""
    out = tmp_path / "bench"
    B.main(["--out", str(out), "--concepts", "bo", "--seeds", "0", "1", "--recipes", "yochameleon", "--images", "1",
            "--workers", "2", "--cache-dir", str(cache_dir), "trainer.max_steps=1", "model.eval_every=100000"])
    done = sorted(p.relative_to(out).parent.as_posix() for p in out.glob("*/seed-*/*/benchmark.json"))
    assert done == [f"bo/seed-{s}/{m}" for s in (0, 1) for m in sorted(["yochameleon", *R.BASELINES])]
    assert "6 of 6 runs done" in (out / "table.md").read_text()
    for seed in (0, 1):  # best/ is scored by training; chosen by the run's only evaluation (its last step), it is
        # the last rows, so the benchmark's own scoring of adapter/ (final_*) must read the same
        # (the same rows exactly; their scores to float noise: after one step P(Yes) nearly ties across photos,
        # so a reordering of 1e-7 in a score, from another batch layout, moves the AUROC by a pair or two)
        from safetensors.torch import load_file

        run_dir = out / f"bo/seed-{seed}/yochameleon"
        best, last = (load_file(run_dir / d / "adapter.safetensors") for d in ("best", "adapter"))
        assert best.keys() == last.keys() and all(best[k].equal(last[k]) for k in best)
        run = json.loads((run_dir / "benchmark.json").read_text())
        assert run["adapter"] == "best"
        assert run["recognition_auroc"] == pytest.approx(run["final_recognition_auroc"], abs=2e-3)
        assert run["recognition"] == pytest.approx(run["final_recognition"], abs=0.03)
    for index in (0, 1):
        assert f"worker {index} of 2 done (3 runs)" in (out / f"worker-{index}.log").read_text()
    # the sampling sweep on the finished run set: every (concept, seed) x method x setting drawn once, resumable
    S = benchmark_module("toy_sampling")
    sweep = ["--runs", str(out), "--guidance", "1", "3", "--temperature", "1", "--images", "2",
             "--cache-dir", str(cache_dir)]
    S.main(sweep)
    drawn = sorted(p.relative_to(out).as_posix() for p in out.glob("*/seed-*/sampling/*.json"))
    assert drawn == sorted(f"bo/seed-{s}/sampling/{m}-g{g}-t1-k0.json" for s in (0, 1) for g in (1, 3)
                           for m in S.METHODS)
    assert len((out / "sampling.md").read_text().splitlines()) == 4
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/sampling/*.json")}
    S.main(sweep)
    assert before == {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/sampling/*.json")}


def test_sampling_table_pairs_each_setting_over_the_same_runs():
    """benchmarks/toy_sampling.py: one row per sampling setting, sorted; best/ - definition is the mean of the
    per-(concept, seed) differences; a setting missing one method's file cannot be paired and fails loudly."""
    S = benchmark_module("toy_sampling")
    rows = []
    for concept, seed, learnt, words in (("dax", 0, 0.5, 0.75), ("dax", 1, 0.25, 0.25), ("wug", 0, 1.0, 0.5)):
        for g in (3.0, 1.0):
            for method, value in (("yochameleon", learnt * g / 3), ("yochameleon-last", 0.0),
                                  ("baseline-description", words)):
                rows.append({"concept": concept, "seed": seed, "method": method, "guidance_scale": g,
                             "temperature": 1.0, "top_k": 0, "generation": value, "generation_shape": value,
                             "generation_colour": 1.0, "generation_pattern": 1.0})
    lines = S.table(rows).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 1", "| 3"]
    g3 = lines[3].split(" | ")
    assert g3[3] == "3" and g3[4].startswith("0.583 ± ") and g3[6].startswith("0.500 ± ")
    assert g3[7].startswith("0.083 ± ")  # (-0.25 + 0 + 0.5) / 3
    with pytest.raises(KeyError):
        S.table(rows[:-1])
