"""Shared fixtures: one tiny Chameleon and one tiny Janus per test session, built into a temporary cache."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "yochameleon" / "assets" / "demo"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("yc-cache")
    os.environ["YOCHAMELEON_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_path(cache_dir) -> Path:
    from yochameleon.tiny.chameleon import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint(cache_dir / "models")


@pytest.fixture(scope="session")
def backbone(tiny_path):
    from yochameleon.model.load import load_backbone

    return load_backbone(tiny_path, name="tiny")


@pytest.fixture(scope="session")
def janus_path(cache_dir) -> Path:
    from yochameleon.tiny.janus import ensure_tiny_janus

    return ensure_tiny_janus(cache_dir / "models")


@pytest.fixture(scope="session")
def janus_backbone(janus_path):
    from yochameleon.model.load import load_backbone

    return load_backbone(janus_path, name="janus-tiny")


@pytest.fixture(scope="session")
def demo_photos() -> list[Path]:
    return sorted((DEMO / "corgi" / "train").glob("*.jpg"))


@pytest.fixture
def tokens(backbone):
    """A concept <bo> of 4 g-tokens and 3 u-tokens on the tiny Chameleon's reserved rows."""
    from yochameleon.concept.tokens import PersonalizedTokens

    return PersonalizedTokens.from_backbone(backbone.model, backbone.config.vocabulary_map, "bo", 4, 3)


@pytest.fixture
def vq_cache(backbone, tmp_path):
    """An empty VQ-code cache of the tiny Chameleon."""
    from yochameleon.data.vq_cache import VQCodeCache

    return VQCodeCache(backbone, tmp_path / "vq")


def compose(overrides: list[str], cache: Path):
    """The training config exactly as `python -m yochameleon.train` composes it, without progress bars and
    without the end-of-run final samples (8 images cost about a minute on the tiny model: a test about them
    sets trainer.final_samples, a later override wins)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from yochameleon.config import CONFIG_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=[f"cache_dir={cache}", "trainer.progress=false",
                                                 "trainer.final_samples=0", *overrides])


def benchmark_module(name: str):
    """A script of benchmarks/ as a module, imported as `python benchmarks/<name>.py` finds its siblings."""
    import importlib
    import sys

    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    return importlib.import_module(name)
