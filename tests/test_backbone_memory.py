"""benchmarks/backbone_memory.py: the computed figures are the real models' and add up (meta device, no weights)."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import REPO

EXPECTED_PARAMS = {  # billions, the published checkpoints' sizes
    "anole-7b": (6.9, 7.2),  # Chameleon 7B (7.04 B) plus the Anole VQ decoder
    "janus-pro-1b": (1.9, 2.2),  # named after its 1.3 B language model
    "janus-pro-7b": (7.2, 7.6),
}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("backbone_memory", REPO / "benchmarks" / "backbone_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def figures(bench) -> dict:
    return {name: bench.computed_figures(name, 16, 16) for name in EXPECTED_PARAMS}


def test_every_config_is_computed_and_in_the_published_range(bench, figures):
    assert bench.config_names() == sorted(EXPECTED_PARAMS)
    for name, (low, high) in EXPECTED_PARAMS.items():
        assert low * 1e9 < figures[name]["params"] < high * 1e9, name
        assert sum(figures[name]["parts"].values()) == figures[name]["params"]


def test_language_heads_are_their_own_matrices(figures):
    for r in figures.values():  # untied: vocab x hidden each, as the checkpoints store them
        assert r["parts"]["lm_head"] == r["vocab"] * r["hidden"]
    assert figures["janus-pro-1b"]["parts"]["vision encoder + aligner"] > 300e6  # SigLIP-L


def test_concept_rows_are_two_times_33_rows_in_fp32_with_grads_and_adamw(figures):
    for r in figures.values():
        rows = r["bytes"]["rows"]
        assert r["trainable_params"] == 2 * 33 * r["hidden"]
        assert rows["params"] == 2 * 33 * r["hidden"] * 4
        assert rows["grads"] == rows["params"]
        assert rows["adamw"] == 2 * rows["params"]
        assert rows["total"] == rows["params"] + rows["grads"] + rows["adamw"]


def test_totals_add_up_and_name_the_smallest_gpu_that_holds_them(bench, figures):
    for r in figures.values():
        b = r["bytes"]
        assert b["weights_bf16"] == 2 * r["params"] and b["weights_fp32"] == 4 * r["params"]
        assert b["total"] == b["weights_bf16"] + b["rows"]["total"] + b["activations_estimate"] + b["logits_estimate"]
        gpu = r["smallest_gpu_gb"]
        usable = [gb * bench.GIB * (1 - bench.GPU_RESERVE) for gb in bench.GPUS_GB]
        assert b["total"] <= usable[bench.GPUS_GB.index(gpu)]
        assert all(b["total"] > u for gb, u in zip(bench.GPUS_GB, usable) if gb < gpu)


def test_estimates_follow_their_stated_formulas(bench):
    assert bench.layer_activation_bytes(4096, 11008, 2, qk_norm=False) == 16 * 4096 + 6 * 11008
    assert bench.layer_activation_bytes(4096, 11008, 2, qk_norm=True) == 20 * 4096 + 6 * 11008
    assert bench.logit_bytes(1084, 65536) == 2 * 1084 * 65536 * 4
    assert bench.rows_state_bytes(2048, 1 + 8 + 0)["total"] == 4 * 2 * 9 * 2048 * 4
    assert bench.smallest_gpu(81 * bench.GIB) is None


def test_a_failed_source_is_skipped_with_its_last_error_line(bench):
    stderr = "Traceback (most recent call last):\n  ...\nYoChameleonError: unknown backbone source 'x'\n\n"
    assert bench.failure_reason(stderr) == "YoChameleonError: unknown backbone source 'x'"
    assert "without a message" in bench.failure_reason("")


def test_the_concept_encoder_figures_count_the_real_module():
    """The encoder's parameters are `ConceptEncoder`'s own at that width (built on the meta device) and the
    features of a photo are T x hidden float32."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("backbone_memory", REPO / "benchmarks" / "backbone_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    figures = module.computed_figures("janus-pro-1b", 16, 16, encoder_width=256)["encoder"]
    assert figures["width"] == 256 and figures["features_per_photo"] == 576 * 2048 * 4
    queries, heads = 33 * 256, 2 * 33 * 2048 + 2 * 2048  # learned queries; input/output heads' weights and biases
    assert figures["params"] > queries + heads and figures["state_fp32_adamw"] == 16 * figures["params"]
