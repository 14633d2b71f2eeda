"""End to end: the user's command, outputs, refusing to clobber a run, exact resume, bad resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, compose
from yochameleon.training import recipe
from yochameleon.training.checkpoint import ResumeError
from yochameleon.training.recipe import RunDirError, train

SHORT = ["+concept=demo", "logger=none", "trainer.max_steps=6", "trainer.eval_every=3", "trainer.checkpoint_every=3",
         "trainer.deterministic=true"]


def run_cli(args: list[str], cache_dir, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "yochameleon.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny", "janus-tiny"])
def test_user_command_writes_adapter_metrics_and_wandb_run(model, tmp_path, cache_dir, tiny_path):
    result = run_cli(["+concept=demo", f"model={model}", "trainer.max_steps=8", "trainer.eval_every=4",
                      "trainer.progress=false", "trainer.final_samples=2"], cache_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "outputs" / "corgi" / "yochameleon"
    assert "adapter" in result.stdout and str(run_dir / "adapter") in result.stdout
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["concept"] == "corgi" and config["k_g"] == 16 and config["k_u"] == 16
    assert config["base_model"]["name"] == model and config["self_prompting"] is False  # the default recipe
    weights = load_file(str(run_dir / "adapter" / "adapter.safetensors"))
    assert weights["input_rows"].shape == (33, 128)
    assert not (run_dir / "best").exists() and "nothing was chosen" in result.stdout  # demo: no validation split
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, 9))
    assert [r["step"] for r in records if "test/split" in r] == [8]  # the test split, once, at the end
    assert "eval/recognition/weighted" in records[3] and "train/loss" in records[0]
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    # A real concept's final samples (by adapter/: nothing was chosen) are not judged; the contact sheet is named.
    assert sorted(p.name for p in (run_dir / "samples").glob("final_*.png")) == ["final_00.png", "final_01.png"]
    assert f"  generation    2 final samples  contact sheet: {run_dir / 'contact_sheet.png'}" in result.stdout
    assert (run_dir / "contact_sheet.png").is_file() and not any(k.startswith("final/") for r in records for k in r)
    # Running the same command again must not overwrite the finished run.
    again = run_cli(["+concept=demo", f"model={model}", "trainer.max_steps=8", "trainer.progress=false"],
                    cache_dir, tmp_path)
    assert again.returncode == 1 and "trainer.resume=true" in again.stderr
    assert load_file(str(run_dir / "adapter" / "adapter.safetensors"))["input_rows"].equal(weights["input_rows"])


def test_missing_concept_says_how_to_add_one(tmp_path, cache_dir):
    result = run_cli([], cache_dir, tmp_path)
    assert result.returncode == 2 and "+concept=" in result.stderr


def test_missing_7b_path_fails_before_any_work(tmp_path, cache_dir):
    result = run_cli(["+concept=demo", "model=anole-7b", f"model.path={tmp_path / 'nowhere'}", "logger=none"],
                     cache_dir, tmp_path)
    assert result.returncode == 1 and "does not exist" in result.stderr and "config.json" in result.stderr


@pytest.mark.parametrize("model", ["tiny", pytest.param("janus-tiny", marks=pytest.mark.slow)])
def test_interrupted_then_resumed_run_ends_with_the_same_adapter(model, tmp_path, cache_dir, monkeypatch):
    short = [*SHORT, f"model={model}"]
    straight = tmp_path / "straight"
    train(compose(short, cache_dir), straight)

    real_save = recipe.save_checkpoint

    def crash_after_first_checkpoint(run_dir, tokens, optimizer, state, *args):
        real_save(run_dir, tokens, optimizer, state, *args)
        if state["step"] == 3:
            raise KeyboardInterrupt  # as if the job were killed here

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(recipe, "save_checkpoint", crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(compose(short, cache_dir), interrupted)
    monkeypatch.setattr(recipe, "save_checkpoint", real_save)
    assert not (interrupted / "adapter").exists()
    with pytest.raises(RunDirError, match="trainer.resume=true"):
        train(compose(short, cache_dir), interrupted)
    summary = train(compose([*short, "trainer.resume=true"], cache_dir), interrupted)
    assert summary["resumed_from"] == 3
    a = load_file(str(straight / "adapter" / "adapter.safetensors"))
    b = load_file(str(interrupted / "adapter" / "adapter.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, 7))
    assert [r["step"] for r in records if "test/split" in r] == [6]  # the test split, once, at the end


def test_resume_with_other_token_counts_or_backbone_is_refused(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    train(compose([*SHORT, "trainer.max_steps=3"], cache_dir), run_dir)
    with pytest.raises(ResumeError, match="k_g"):
        train(compose([*SHORT, "trainer.resume=true", "recipe.k_g=8"], cache_dir), run_dir)
    with pytest.raises(ResumeError, match="model"):
        train(compose([*SHORT, "trainer.resume=true", "model.name=tiny-other"], cache_dir), run_dir)


def test_loss_falls_on_the_demo_concept(tmp_path, cache_dir):
    summary = train(compose(["+concept=demo", "logger=none", "trainer.max_steps=40", "trainer.eval_every=40"],
                            cache_dir), tmp_path / "run")
    assert summary["loss_last_10pct"] < summary["loss_first_10pct"]


def test_bad_concept_name_is_rejected_before_loading_the_model(tmp_path, cache_dir):
    from yochameleon.errors import ConceptDataError

    with pytest.raises(ConceptDataError, match="my_dog"):
        train(compose([*SHORT, "concept.name=my/dog"], cache_dir), tmp_path / "run")


def test_readme_mentions_the_user_command():
    assert "python -m yochameleon.train +concept=bo" in (REPO / "README.md").read_text()


@pytest.mark.slow
def test_resuming_a_finished_run_changes_nothing_unless_max_steps_is_raised(tmp_path, cache_dir):
    """issue 25 item 3: a finished run says so and is left as it is; a raised trainer.max_steps continues it,
    appending its new steps and final scores."""
    from yochameleon.training.recipe import RunFinished

    base = ["+concept=demo", "logger=none", "trainer.eval_every=2", "trainer.checkpoint_every=2",
            "trainer.final_samples=0"]
    run_dir = tmp_path / "outputs" / "corgi" / "yochameleon"
    train(compose([*base, "trainer.max_steps=2"], cache_dir), run_dir)

    def snapshot():
        return {p.relative_to(run_dir): (p.read_bytes(), p.stat().st_mtime_ns)
                for p in sorted(run_dir.rglob("*")) if p.is_file()}

    before = snapshot()
    for extra in ([], ["trainer.max_steps=2"], ["trainer.max_steps=1"]):
        with pytest.raises(RunFinished, match=r"is finished \(step 2 of 2\); nothing was changed.*trainer.max_steps"):
            train(compose([*base, "trainer.resume=true", *extra], cache_dir), run_dir)
    assert snapshot() == before
    # The command a user types: exit 0, one message, nothing written.
    result = run_cli([*base, "trainer.resume=true", "trainer.max_steps=2", "trainer.progress=false"], cache_dir,
                     tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "is finished (step 2 of 2); nothing was changed" in result.stdout and "done:" not in result.stdout
    assert {k: v for k, v in snapshot().items() if k.suffix != ".log"} == before
    # Raised: it continues from step 2 and appends.
    summary = train(compose([*base, "trainer.resume=true", "trainer.max_steps=4"], cache_dir), run_dir)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "test/split" in r] == [2, 4]  # each finish's test scores, in order
    with pytest.raises(RunFinished, match=r"step 4 of 4"):
        train(compose([*base, "trainer.resume=true", "trainer.max_steps=4"], cache_dir), run_dir)


def test_a_run_without_deepspeed_does_not_import_it(tmp_path):
    # Issue 25.9: DeepSpeed's "Setting accelerator to CPU" warning on every training run: accelerate's
    # unwrap_model imports DeepSpeed whenever it is installed. Only a DeepSpeed run may import it now.
    import subprocess
    import sys

    probe = ("import sys, torch\nfrom accelerate import Accelerator\nfrom yochameleon.training.recipe import _unwrapped\n"
             "acc = Accelerator(cpu=True)\nmodel = acc.prepare(torch.nn.Linear(2, 2))\n"
             "assert _unwrapped(acc, model) is model\nprint('deepspeed' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False" and "Setting accelerator" not in result.stdout + result.stderr


def test_a_small_checkpoint_loads_without_a_progress_bar(tiny_path, capfd):
    from yochameleon.model.load import load_backbone

    load_backbone(tiny_path, name="tiny")
    assert "Loading weights" not in capfd.readouterr().err  # Issue 25.9: a bar on every 70 MiB load


def test_lr_schedules_constant_and_warmup_cosine_and_their_state_round_trips():
    from types import SimpleNamespace

    from yochameleon.training.optimization import build_lr_scheduler, build_optimizer

    def lrs(kind, steps=6, restart_at=None):
        tcfg = SimpleNamespace(optimizer="adamw", lr=0.1, weight_decay=0.0, lr_schedule=kind, warmup_steps=2)
        optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], tcfg)
        scheduler, seen = build_lr_scheduler(optimizer, tcfg, steps), []
        for step in range(steps):
            if step == restart_at:  # a resume: fresh objects, the saved states loaded
                saved = optimizer.state_dict(), scheduler.state_dict()
                optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], tcfg)
                scheduler = build_lr_scheduler(optimizer, tcfg, steps)
                optimizer.load_state_dict(saved[0])
                scheduler.load_state_dict(saved[1])
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return seen

    assert lrs("constant") == [0.1] * 6  # today's behaviour: the configured lr, exactly, at every step
    cosine = lrs("warmup_cosine")
    assert cosine == pytest.approx([0.0, 0.05, 0.1, 0.1 * 0.5 * (1 + 0.5 ** 0.5), 0.05, 0.1 * 0.5 * (1 - 0.5 ** 0.5)])
    assert lrs("warmup_cosine", restart_at=3) == cosine


@pytest.mark.slow  # ~40 s on 2 cores
def test_a_warmup_cosine_run_interrupted_and_resumed_takes_the_same_steps(tmp_path, cache_dir, monkeypatch):
    """trainer.lr_schedule=warmup_cosine: the schedule's state is in the checkpoint, so the resumed steps take the
    learning rates (and reach the rows) of the run that never stopped; a resume with another schedule is refused."""
    short = ["+concept=demo", "logger=none", "trainer.max_steps=4", "trainer.eval_every=100",
             "trainer.checkpoint_every=2", "trainer.deterministic=true", "trainer.sample_images=false",
             "trainer.lr_schedule=warmup_cosine", "trainer.warmup_steps=2"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train(compose(short, cache_dir), straight)
    real_save = recipe.save_checkpoint

    def crash_after_first_checkpoint(run_dir, tokens, optimizer, state, *args):
        real_save(run_dir, tokens, optimizer, state, *args)
        if state["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(recipe, "save_checkpoint", crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(compose(short, cache_dir), interrupted)
    monkeypatch.setattr(recipe, "save_checkpoint", real_save)
    assert (interrupted / "checkpoint" / "lr_scheduler.pt").is_file()
    with pytest.raises(ResumeError, match="lr_schedule"):
        train(compose([*short, "trainer.resume=true", "trainer.lr_schedule=constant"], cache_dir), interrupted)
    assert train(compose([*short, "trainer.resume=true"], cache_dir), interrupted)["resumed_from"] == 2

    def steps(run_dir):
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: (r["train/lr"], r["train/loss"]) for r in records if "train/loss" in r}

    lr = float(compose(short, cache_dir).trainer.lr)
    assert [step_lr for step_lr, _ in steps(straight).values()] == pytest.approx([0.0, lr / 2, lr, lr / 2])
    assert steps(interrupted) == steps(straight)
    a = load_file(str(straight / "adapter" / "adapter.safetensors"))
    b = load_file(str(interrupted / "adapter" / "adapter.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
