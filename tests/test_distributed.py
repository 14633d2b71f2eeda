"""Two real processes on CPU (torchrun: DDP over gloo; DeepSpeed ZeRO-2 and ZeRO-3, with and without offload)
end with the same adapter as one process, with the default settings (image sampling at every evaluation) and
an epoch whose last batch leaves one process without samples. ZeRO-2 and ZeRO-3 runs resume exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO

WORLD, BATCH, STEPS = 2, 4, 10  # processes, trainer.batch_size (its default), steps
# Three soft positives per epoch make the demo epoch 33 samples (checked below; each of the 3 photos is drawn
# 3 times, recipe.generation_repeats): 9 steps, the 9th with one sample, so rank 1 has none there; step 10
# starts the next epoch. Everything else keeps its default.
COMMON = ["+concept=demo", "recipe.soft_positives.per_epoch=3", "logger=none", f"trainer.max_steps={STEPS}",
          f"trainer.eval_every={STEPS}", "trainer.progress=false", "trainer.deterministic=true", "trainer.device=cpu",
          "trainer.final_samples=2"]  # drawn (every rank under ZeRO-3), written once: samples/ must match too


def _torchrun() -> str:
    return shutil.which("torchrun", path=os.path.dirname(sys.executable))


def _env(cache_dir: Path) -> dict:
    return {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}


def _adapter(run_dir: Path) -> dict:
    return load_file(str(run_dir / "adapter" / "adapter.safetensors"))


def _step_records(run_dir: Path) -> list[dict]:
    """The per-step lines of metrics.jsonl (not the final test-split line)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if "train/loss" in record]


# Another launcher sums the gradients in another order (ZeRO-3 reduce-scatters partitions), so its rows match
# one process's to rounding, and AdamW's normalisation magnifies rounding for entries whose gradient is near 0:
# CI's machine read 1.8e-5 after 10 ZeRO-3 steps (this machine less than 1e-5). 1e-4 is 1% of one step at the
# tiny backbone's lr (1e-2), so a missed, repeated or wrongly averaged step still fails. A resumed run against
# its uninterrupted twin (same launcher, same arithmetic) is held to 1e-5.
ACROSS_LAUNCHERS, SAME_LAUNCHER = 1e-4, 1e-5


def _assert_same_rows(a: dict, b: dict, atol: float = ACROSS_LAUNCHERS) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol), (key, float((a[key] - b[key]).abs().max()))


@pytest.fixture(scope="module")
def single(tmp_path_factory, cache_dir, tiny_path) -> Path:
    """The one-process reference run every multi-process run must match."""
    root = tmp_path_factory.mktemp("single")
    result = subprocess.run([sys.executable, "-m", "yochameleon.train", *COMMON, f"output_root={root}",
                             "run_name=single"], capture_output=True, text=True, env=_env(cache_dir), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = root / "corgi" / "single"
    size = json.loads((run_dir / "summary.json").read_text())["samples_per_epoch"]
    # The premise of these tests: not divisible by the global batch nor by the processes, and the last batch
    # of the epoch (reached within max_steps) is shorter than the number of processes.
    assert size % BATCH and size % WORLD and size % BATCH < WORLD and -(-size // BATCH) < STEPS, size
    assert list((run_dir / "samples").glob("step_*.png"))  # image sampling is on, as by default
    return run_dir


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path, cache_dir, single):
    args = [*COMMON, f"output_root={tmp_path}"]
    ddp = subprocess.run([_torchrun(), "--nproc_per_node", str(WORLD), "-m", "yochameleon.train", *args,
                          "run_name=ddp"], capture_output=True, text=True, env=_env(cache_dir), timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count(f"done: {STEPS} steps") == 1  # only the main process reports
    run_dir = tmp_path / "corgi" / "ddp"
    assert json.loads((run_dir / "summary.json").read_text())["launcher"] == f"MULTI_CPU x{WORLD}"
    _assert_same_rows(_adapter(run_dir), _adapter(single))
    checkpointed = load_file(str(single / "checkpoint" / "adapter" / "adapter.safetensors"))
    assert torch.equal(checkpointed["input_rows"], _adapter(single)["input_rows"])  # the checkpoint: final rows
    metrics, reference = _step_records(run_dir), _step_records(single)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))  # one writer, one line per step
    # The logged loss is the mean over the real global batch (no stand-in sample), as in one process.
    assert [m["train/loss"] for m in metrics] == pytest.approx([m["train/loss"] for m in reference], abs=1e-5)
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == sorted(
        p.name for p in (single / "samples").glob("*.png"))


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["ddp", "zero3"])
def test_the_janus_family_on_two_processes_matches_one_process(launcher, tmp_path, cache_dir):
    """DDP, and ZeRO-3 (where every rank must call Janus's vision encoder and generation embedding
    in every forward, whatever its own samples: `YoJanusForConditionalGeneration.lockstep`)."""
    args = [*COMMON, "model=janus-tiny", f"output_root={tmp_path}"]
    one = subprocess.run([sys.executable, "-m", "yochameleon.train", *args, "run_name=single"],
                         capture_output=True, text=True, env=_env(cache_dir), timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    env = _env(cache_dir)
    if launcher == "zero3":
        pytest.importorskip("deepspeed", reason="DeepSpeed is the [deepspeed] extra; make setup installs it")
        env |= {"DS_ACCELERATOR": "cpu", "ACCELERATE_USE_DEEPSPEED": "true",
                "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(REPO / "recipes" / "deepspeed" / "zero3.json")}
        args = [a for a in args if a != "trainer.device=cpu"]
    ddp = subprocess.run([_torchrun(), "--nproc_per_node", str(WORLD), "-m", "yochameleon.train", *args,
                          "run_name=ddp"], capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    expected = f"DEEPSPEED x{WORLD}" if launcher == "zero3" else f"MULTI_CPU x{WORLD}"
    assert json.loads((tmp_path / "corgi" / "ddp" / "summary.json").read_text())["launcher"] == expected
    single, run_dir = tmp_path / "corgi" / "single", tmp_path / "corgi" / "ddp"
    size = json.loads((single / "summary.json").read_text())["samples_per_epoch"]
    assert size % BATCH < WORLD and -(-size // BATCH) < STEPS, size  # a process is left without samples once
    _assert_same_rows(_adapter(run_dir), _adapter(single))
    assert [m["train/loss"] for m in _step_records(run_dir)] == pytest.approx(
        [m["train/loss"] for m in _step_records(single)], abs=1e-5)
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == sorted(
        p.name for p in (single / "samples").glob("*.png")) != []


@pytest.mark.slow
@pytest.mark.parametrize("config", ["zero2", "zero2_offload", "zero3", "zero3_offload"])
def test_deepspeed_on_cpu_matches_one_process(config, tmp_path, cache_dir, single):
    pytest.importorskip("deepspeed", reason="DeepSpeed is the [deepspeed] extra; make setup installs it")
    env = {**_env(cache_dir), "DS_ACCELERATOR": "cpu", "ACCELERATE_USE_DEEPSPEED": "true",
           "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(REPO / "recipes" / "deepspeed" / f"{config}.json")}
    # trainer.device=cpu would make accelerate pick plain CPU DDP; "auto" lets DeepSpeed run (on its CPU accelerator).
    args = [*[a for a in COMMON if a != "trainer.device=cpu"], f"output_root={tmp_path}"]

    def launch(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([_torchrun(), "--nproc_per_node", str(WORLD), "-m", "yochameleon.train", *args, *extra],
                              capture_output=True, text=True, env=env, timeout=600)

    run = launch("run_name=ds")
    assert run.returncode == 0, run.stderr[-3000:]
    run_dir = tmp_path / "corgi" / "ds"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["launcher"] == f"DEEPSPEED x{WORLD}"  # really DeepSpeed, not a silent fallback to DDP
    assert summary["deepspeed_zero_stage"] == int(config[4])
    assert list((run_dir / "samples").glob("step_*.png"))  # image sampling ran (every rank under ZeRO-3)
    _assert_same_rows(_adapter(run_dir), _adapter(single))
    checkpoint = run_dir / "checkpoint"
    if config in ("zero2", "zero3"):
        # Each rank's optimizer partition is saved (ZeRO-3: with its partition of the rows); stopped at step 4
        # and resumed with the same launcher (through the short last batch), the run ends where the
        # uninterrupted one did.
        shards = sorted(p.name for p in checkpoint.glob("optimizer*.pt"))
        assert shards == [f"optimizer_rank{r}.pt" for r in range(WORLD)]
        first = launch("run_name=resumed", "trainer.max_steps=4")
        assert first.returncode == 0, first.stderr[-3000:]
        resumed_dir = tmp_path / "corgi" / "resumed"
        # One process cannot continue the per-rank shards: refused with what to do, nothing touched.
        before = (resumed_dir / "checkpoint" / "state.json").read_text()
        alone = subprocess.run([sys.executable, "-m", "yochameleon.train", *args, "run_name=resumed",
                                f"trainer.max_steps={STEPS}", "trainer.resume=true"],
                               capture_output=True, text=True, env=_env(cache_dir), timeout=600)
        assert alone.returncode != 0 and f"--nproc_per_node {WORLD}" in alone.stderr, alone.stderr[-3000:]
        assert (resumed_dir / "checkpoint" / "state.json").read_text() == before
        other = "zero2" if config == "zero3" else "zero3"  # another ZeRO stage cannot continue it: refused
        stage = subprocess.run([_torchrun(), "--nproc_per_node", str(WORLD), "-m", "yochameleon.train", *args,
                                "run_name=resumed", f"trainer.max_steps={STEPS}", "trainer.resume=true"],
                               capture_output=True, text=True, timeout=600, env={
                                   **env, "ACCELERATE_DEEPSPEED_CONFIG_FILE":
                                   str(REPO / "recipes" / "deepspeed" / f"{other}.json")})
        assert stage.returncode != 0 and "Nothing was changed" in stage.stderr, stage.stderr[-3000:]
        assert (resumed_dir / "checkpoint" / "state.json").read_text() == before
        second = launch("run_name=resumed", f"trainer.max_steps={STEPS}", "trainer.resume=true")
        assert second.returncode == 0, second.stderr[-3000:]
        assert json.loads((resumed_dir / "summary.json").read_text())["resumed_from"] == 4
        _assert_same_rows(_adapter(resumed_dir), _adapter(run_dir), atol=SAME_LAUNCHER)
        # The g-token rows' own rate is a blend after the step, which DeepSpeed's copy of the rows would lose.
        blend = launch("run_name=blend", "recipe.generation_lr_scale=2")
        assert blend.returncode != 0 and "recipe.generation_lr_scale=1" in blend.stderr, blend.stderr[-3000:]
        assert not (tmp_path / "corgi" / "blend" / "checkpoint").exists()
        capped = launch("run_name=capped", "recipe.max_row_norm=2")  # the same for the rows' norm cap
        assert capped.returncode != 0 and "recipe.max_row_norm=null" in capped.stderr, capped.stderr[-3000:]
        assert not (tmp_path / "corgi" / "capped" / "checkpoint").exists()
        steps = [r["step"] for r in _step_records(resumed_dir)]
        assert steps == list(range(1, STEPS + 1))
        assert [m["train/loss"] for m in _step_records(resumed_dir)] == pytest.approx(
            [m["train/loss"] for m in _step_records(run_dir)], abs=1e-5)


def test_a_rank_without_samples_in_a_short_last_batch_still_steps_with_zero_weight():
    from yochameleon.data.samples import collate
    from yochameleon.training.distributed import rank_share

    batch = ["a", "b", "c"]  # a last batch of 3 samples over 4 processes
    shares = [rank_share(batch, rank, 4) for rank in range(4)]
    assert [specs for specs, _ in shares] == [["a"], ["b"], ["c"], ["a"]]  # rank 3 stands in the first sample
    # Gradients are averaged over the 4 ranks: the factors make that the mean over the 3 real samples.
    assert [factor for _, factor in shares] == [4 / 3, 4 / 3, 4 / 3, 0.0]
    assert sum(factor * len(specs) for specs, factor in shares) / 4 == 1.0
    assert rank_share(list("abcde"), 1, 2) == (["b", "d"], 2 / 5)
    with pytest.raises(ValueError, match="at least one sample"):
        collate([], pad_id=0)
