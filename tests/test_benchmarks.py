"""The benchmark scripts run and count what they claim (figures themselves are not asserted)."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO


def load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # one step of the full-matrix reference scheme: 45 s of the fast suite's 10 minutes
def test_train_step_benchmark_counts_trainable_rows_and_optimizer_state(cache_dir, tiny_path):
    bench = load("train_step")
    ours = bench.measure("ours", "tiny", steps=1)
    reference = bench.measure("reference", "tiny", steps=1)
    assert ours["trainable_params"] == 2 * 33 * 128  # input and output rows of 1 + 16 + 16 tokens
    assert reference["trainable_params"] == 2 * 65536 * 128  # the full embedding and output matrices
    assert ours["optimizer_state_bytes"] < reference["optimizer_state_bytes"] / 1000
    assert reference["tokens_per_batch"] == 4 * 1500 > ours["tokens_per_batch"]
