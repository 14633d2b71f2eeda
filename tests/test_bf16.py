"""A bfloat16 backbone end to end on CPU (train, answer, draw, evaluate): the 7B path's dtypes, on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import DEMO, compose
from yochameleon.config import CONFIG_DIR
from yochameleon.errors import YoChameleonError
from yochameleon.inference import PersonalizedModel
from yochameleon.model.backbone import resolve_dtype
from yochameleon.sources import load_configured_backbone


def test_auto_dtype_is_bfloat16_on_a_gpu_and_float32_on_cpu():
    assert resolve_dtype("auto", "cuda") == "bfloat16" and resolve_dtype("auto", torch.device("cuda:0")) == "bfloat16"
    assert resolve_dtype("auto", "cpu") == "float32" and resolve_dtype(None, "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"  # an explicit dtype is used as given
    assert resolve_dtype(torch.float16, "cpu") == "float16"
    with pytest.raises(YoChameleonError, match="float32, bfloat16"):
        resolve_dtype("fp8", "cpu")


@pytest.mark.slow
def test_bfloat16_backbone_trains_answers_draws_and_evaluates(tmp_path, cache_dir, tiny_path, monkeypatch):
    # bf16 matmuls and convolutions are emulated on most CPUs: the smallest run that still
    # trains (two steps, both kinds of samples), evaluates, draws and answers.
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from evaluation.run import evaluate
    from evaluation.similarity import build_tiny_clip, build_tiny_dino
    from yochameleon.training import recipe

    loaded = []

    def load_and_record(*args, **kwargs):  # the real loader; records the dtype training got
        backbone = load_configured_backbone(*args, **kwargs)
        loaded.append(backbone.model.lm_head.weight.dtype)
        return backbone

    monkeypatch.setattr(recipe, "load_configured_backbone", load_and_record)
    run = tmp_path / "run"
    summary = recipe.train(compose(["+concept=demo", "model.dtype=bfloat16", "logger=none", "trainer.max_steps=2",
                                  "trainer.batch_size=2", "trainer.eval_every=2", "trainer.eval_batch_size=4",
                                  "recipe.conversations.generate_when_missing=false"], cache_dir), run)
    assert loaded == [torch.bfloat16]
    assert summary["steps"] == 2 and all(math.isfinite(x) for x in (summary["loss_first_10pct"],
                                                                    summary["loss_last_10pct"]))
    assert (run / "samples" / "step_000002.png").exists()  # drew its sample image in bf16
    rows = load_file(str(run / "adapter" / "adapter.safetensors"))
    assert all(torch.isfinite(t.float()).all() for t in rows.values())

    pm = PersonalizedModel.load([run / "adapter"], cache_dir=cache_dir, dtype="bfloat16", device="cpu")
    assert pm.backbone.model.lm_head.weight.dtype == torch.bfloat16
    photo = sorted((DEMO / "corgi" / "test").glob("*.jpg"))[0]
    verdict = pm.recognize(photo)
    assert verdict.answer in ("Yes", "No") and 0.0 <= verdict.probability <= 1.0
    assert isinstance(pm.answer("What is <corgi>?", max_new_tokens=4), str)
    assert isinstance(pm.answer("Is <corgi> here?", image=photo, max_new_tokens=4), str)
    (image,) = pm.generate_images("A photo of <corgi>.", n=1, seed=0)
    assert image.size == (64, 64)

    clip_model, clip_checkpoint = build_tiny_clip(tmp_path / "clip")
    out = tmp_path / "eval"
    overrides = ["+concept=demo", f"adapter={run / 'adapter'}", "dtype=bfloat16", "logger=none",
                 "tasks=[recognition,generation]", "methods=[adapter]", "generation.n=1",
                 "recognition.max_new_tokens=3", f"cache_dir={cache_dir}", f"clip.model={clip_model}",
                 f"clip.checkpoint={clip_checkpoint}", f"dino.checkpoint={build_tiny_dino(tmp_path / 'dino')}"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose("eval", overrides=overrides)
    metrics = evaluate(cfg, out)  # what `python -m evaluation.run ... dtype=bfloat16` runs
    row = metrics["methods"]["adapter"]
    assert 0 <= row["recognition"]["weighted"] <= 1 and row["generation"]["n"] == 1
    assert -1 <= row["generation"]["clip_i"] <= 1
