"""Hydra/OmegaConf glue: the config directory and the `${asset:...}` resolver."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR.parent / "conf"
ASSET_DIR = PACKAGE_DIR / "assets"


def register_resolvers() -> None:
    """`${asset:demo/corgi/train}` -> absolute path inside the installed package's assets (and `${eval_set:..}`)."""
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", lambda rel: str(ASSET_DIR / rel))
    if not OmegaConf.has_resolver("eval_set"):  # `${eval_set:dreambooth}` -> the shipped evaluation set
        OmegaConf.register_new_resolver("eval_set", lambda name: str(PACKAGE_DIR.parent / "evaluation" / "sets" / name))
