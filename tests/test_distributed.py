"""Two real processes on CPU (torchrun: DDP over gloo; DeepSpeed ZeRO-2 and ZeRO-3, with and without offload)
end with the same adapter as one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO

COMMON = ["+concept=demo", "logger=none", "trainer.max_steps=4", "trainer.eval_every=4", "trainer.progress=false",
          "trainer.sample_images=false", "trainer.deterministic=true", "trainer.device=cpu"]


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(tmp_path, cache_dir, tiny_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1"}
    args = [*COMMON, f"output_root={tmp_path}"]
    ddp = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "yochameleon.train", *args, "run_name=ddp"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "yochameleon.train", *args, "run_name=single"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    assert ddp.stdout.count("done: 4 steps") == 1  # only the main process reports
    assert json.loads((tmp_path / "corgi" / "ddp" / "summary.json").read_text())["launcher"] == "MULTI_CPU x2"
    a = load_file(str(tmp_path / "corgi" / "ddp" / "adapter" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "corgi" / "single" / "adapter" / "adapter.safetensors"))
    checkpointed = load_file(str(tmp_path / "corgi" / "single" / "checkpoint" / "adapter" / "adapter.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert torch.equal(checkpointed["input_rows"], b["input_rows"])  # the checkpoint holds the final rows
    metrics = (tmp_path / "corgi" / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 4  # one writer, one line per step


@pytest.mark.slow
@pytest.mark.parametrize("config", ["zero2", "zero2_offload", "zero3", "zero3_offload"])
def test_deepspeed_on_cpu_matches_one_process(config, tmp_path, cache_dir, tiny_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is the [deepspeed] extra; make setup installs it")
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
           "ACCELERATE_USE_DEEPSPEED": "true",
           "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(REPO / "recipes" / "deepspeed" / f"{config}.json")}
    # trainer.device=cpu would make accelerate pick plain CPU DDP; "auto" lets DeepSpeed run (on its CPU accelerator).
    args = [*[a for a in COMMON if a != "trainer.device=cpu"], f"output_root={tmp_path}"]
    zero2 = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "yochameleon.train", *args, "run_name=zero2"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert zero2.returncode == 0, zero2.stderr[-3000:]
    summary = json.loads((tmp_path / "corgi" / "zero2" / "summary.json").read_text())
    assert summary["launcher"] == "DEEPSPEED x2"  # really DeepSpeed, not a silent fallback to DDP
    assert summary["deepspeed_zero_stage"] == int(config[4])
    if config == "zero3":  # ZeRO-3 cannot continue a checkpoint exactly: refused, nothing touched
        before = (tmp_path / "corgi" / "zero2" / "checkpoint" / "state.json").read_text()
        again = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "yochameleon.train", *args, "run_name=zero2",
                                "trainer.resume=true"], capture_output=True, text=True, env=env, timeout=600)
        assert again.returncode != 0 and "ZeRO-3" in again.stderr + again.stdout
        assert (tmp_path / "corgi" / "zero2" / "checkpoint" / "state.json").read_text() == before
    plain_env = {k: v for k, v in env.items() if not k.startswith(("ACCELERATE_", "DS_"))}
    single = subprocess.run([sys.executable, "-m", "yochameleon.train", *args, "run_name=single"],
                            capture_output=True, text=True, env=plain_env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    a = load_file(str(tmp_path / "corgi" / "zero2" / "adapter" / "adapter.safetensors"))
    b = load_file(str(tmp_path / "corgi" / "single" / "adapter" / "adapter.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
