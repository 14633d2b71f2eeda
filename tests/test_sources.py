"""Backbone sources: `model.source` is resolved in one place, recorded in the adapter and reused by inference."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from conftest import compose
from yochameleon.config import CONFIG_DIR
from yochameleon.errors import YoChameleonError
from yochameleon.sources import load_configured_backbone, recorded_source, resolve_source


def test_an_unknown_model_source_names_the_choices_and_the_key(cache_dir):
    model = OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "model" / "tiny.yaml"), {"source": "hub"})
    with pytest.raises(YoChameleonError, match=r"'hub'; choose one of local, tiny, toyworld, janus-tiny \(model\.source"):
        load_configured_backbone(model, cache_dir)
    with pytest.raises(YoChameleonError, match="choose one of local, tiny, toyworld"):
        resolve_source("hub", cache_dir)


def test_every_shipped_model_config_names_a_known_source():
    sources = {f.stem: OmegaConf.load(f).source for f in sorted((CONFIG_DIR / "model").glob("*.yaml"))}
    assert sources == {"anole-7b": "local", "chameleon-7b": "local", "tiny": "tiny", "toyworld": "toyworld",
                       "janus-tiny": "janus-tiny", "janus-pro-1b": "local", "janus-pro-7b": "local"}


def test_the_adapter_records_its_source_and_inference_resolves_it(tmp_path, cache_dir, tiny_path):
    from yochameleon.inference import PersonalizedModel
    from yochameleon.training.recipe import train

    train(compose(["+concept=demo", "logger=none", "trainer.max_steps=1", "trainer.eval_every=1000",
                   "trainer.sample_images=false"], cache_dir), tmp_path / "run")
    adapter = tmp_path / "run" / "adapter"
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model"]
    assert base["source"] == "tiny" and base["model_config"] == "tiny"
    pm = PersonalizedModel.load([adapter], device="cpu", cache_dir=cache_dir)
    assert pm.backbone.path == tiny_path


def test_adapters_written_before_sources_fall_back_to_their_model_config():
    assert recorded_source({"model_config": "tiny"}) == "tiny"
    assert recorded_source({"model_config": "toyworld"}) == "toyworld"
    assert recorded_source({"model_config": "anole-7b", "path": "/data/anole"}) == "local"
    assert recorded_source({"model_config": "tiny", "source": "local"}) == "local"  # the record wins


def test_the_toy_world_is_imported_only_when_a_config_asks_for_it():
    """`import yochameleon.inference` (and the sources' table) loads no toy pretraining code and no toy build."""
    import subprocess
    import sys

    code = ("import sys, yochameleon.inference, yochameleon.sources; "
            "print(sorted(m for m in sys.modules if m.startswith('yochameleon.toyworld')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_training_imports_nothing_of_the_toy_world():
    """The toy world's judge reaches training through its backbone source (`sources.drawing_judge`)."""
    import ast

    from conftest import REPO

    for path in sorted((REPO / "yochameleon" / "training").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("yochameleon.toyworld") for n in names), f"{path.name} imports {names}"


def test_a_source_provides_the_judge_of_drawings(tmp_path):
    from types import SimpleNamespace

    from yochameleon.sources import drawing_judge
    from yochameleon.toyworld.spec import JUDGE_FILE

    bo, real = SimpleNamespace(category="toy", name="bo"), SimpleNamespace(category="dog", name="bo")
    assert drawing_judge(tmp_path, bo) is None  # no judge beside this checkpoint
    (tmp_path / JUDGE_FILE).write_bytes(b"")
    assert drawing_judge(tmp_path, real) is None  # not a toy concept: no toy judge, whatever the directory holds
    assert drawing_judge(tmp_path, SimpleNamespace(category="toy", name="rex")) is None  # no toy concept of that name
