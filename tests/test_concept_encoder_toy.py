"""The concept encoder trained end to end on the toy world (slow: about 8 minutes on 2 cores), and the shipped one."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_a_small_toy_encoder_recognizes_held_out_identities_above_reference_photos(tmp_path, cache_dir):
    from hydra import compose, initialize_config_dir

    from evaluation.methods import baseline_method
    from yochameleon.config import CONFIG_DIR, register_resolvers
    from yochameleon.metrics.zero_shot import zero_shot_scores
    from yochameleon.training.encoder_recipe import EncoderTrainer

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train_encoder", overrides=[f"cache_dir={cache_dir}", "trainer.steps=400",
                                                  "trainer.warmup_steps=50", "trainer.eval_every=200",
                                                  "trainer.checkpoint_every=200", "logger=none",
                                                  "trainer.progress=false"])
    trainer = EncoderTrainer(cfg, tmp_path / "run")
    trainer.setup()
    trainer.train()
    summary = trainer.finish(0.0)
    assert summary["concepts"] == {"train": 96, "val": 24, "test": 24}
    encoded = summary["test"]["5_photos"]
    # The same held-out identities, images and protocol, the photos shown in the prompt instead.
    backbone, test = trainer.backbone, trainer.splits["test"]

    def reference_photos(folder, refs):
        method = baseline_method("reference_photos", backbone, {folder.name: folder.name}, {}, {folder.name: refs})
        return method.model, method.builder(folder.name)

    shown = zero_shot_scores(reference_photos, test, 5, 5, text_qa=False)
    assert encoded["auroc"] > shown["auroc"] + 0.1, (encoded["auroc"], shown["auroc"])
    assert encoded["seconds"] < 1.0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val/auroc" in r] == [200, 400]


def test_the_shipped_toy_encoder_loads_on_the_toy_backbone_and_records_no_machine_path(cache_dir):
    from yochameleon.concept.encoder import load_encoder, read_encoder_config
    from yochameleon.sources import load_configured_backbone
    from yochameleon.toyworld.encoder_pack import SHIPPED

    if not SHIPPED.exists():
        pytest.skip("no encoder shipped yet (make toyworld-encoder)")
    config, raw = read_encoder_config(SHIPPED)
    assert "path" not in raw["base_model"] and raw["base_model"]["source"] == "toyworld"
    assert raw["selected_on"] == "val"
    from omegaconf import OmegaConf

    model_cfg = OmegaConf.create({"name": "toyworld", "source": "toyworld", "path": None, "dtype": "float32",
                                  "attn_implementation": "sdpa"})
    backbone = load_configured_backbone(model_cfg, cache_dir)
    assert load_encoder(SHIPPED, backbone).config == config


def test_the_readme_zero_shot_example_runs(cache_dir, capsys, monkeypatch):
    """The README's zero-shot block, as written (from the repository root, where its encoder path is)."""
    import re

    from conftest import REPO

    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- zero-shot example[^\n]*\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(REPO)
    exec(compile(block, "README.md", "exec"), {})
    answer, colour = capsys.readouterr().out.splitlines()[-2:]
    assert answer.split()[0] in ("Yes", "No") and colour
