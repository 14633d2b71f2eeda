"""An unreadable photo of the concept: preparation refuses it exactly as training does (never silently dropped)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import DEMO, compose
from yochameleon.data.concept import ConceptData
from yochameleon.data.preparation import prepare_concept
from yochameleon.errors import ImageError


@pytest.fixture
def broken_concept(tmp_path):
    shutil.copytree(DEMO, tmp_path / "demo")
    photos = tmp_path / "demo" / "corgi" / "train"
    (photos / "02b.jpg").write_bytes(b"this is not a jpeg")
    return photos


def _overrides(photos) -> list[str]:
    return ["+concept=demo", f"concept.photos={photos}", "recipe.conversations.generate_when_missing=false",
            "logger=none", "trainer.max_steps=1"]


def test_prepare_refuses_an_unreadable_concept_photo_like_training(tmp_path, backbone, cache_dir, broken_concept):
    from yochameleon.training.recipe import train

    cfg = compose(_overrides(broken_concept), cache_dir)
    with pytest.raises(ImageError) as prepared:
        prepare_concept(cfg, ConceptData.from_config(cfg.concept), backbone, tmp_path / "cache", progress=False)
    with pytest.raises(ImageError) as trained:
        train(cfg, tmp_path / "run")
    message = str(prepared.value)
    assert message == str(trained.value)
    assert str(broken_concept / "02b.jpg") in message and "Fix" in message
    assert not (tmp_path / "cache" / "prepare").exists() or not any((tmp_path / "cache" / "prepare").iterdir())


@pytest.mark.slow
def test_prepare_command_exits_with_the_error(tmp_path, cache_dir, tiny_path, broken_concept):
    env = {**os.environ, "YOCHAMELEON_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "yochameleon.prepare", *_overrides(broken_concept),
                             f"cache_dir={cache_dir}"], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=600)
    assert result.returncode == 1 and "02b.jpg" in result.stderr and "not an image" in result.stderr
