"""Hydra/OmegaConf glue: the config directory and the `${asset:...}` resolver."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "conf"
ASSET_DIR = PACKAGE_DIR / "assets"


def register_resolvers() -> None:
    """`${asset:demo/corgi/train}` -> absolute path inside the installed package's assets (and `${eval_set:..}`)."""
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", lambda rel: str(ASSET_DIR / rel))
    if not OmegaConf.has_resolver("toyworld"):  # `${toyworld:bo,train}` -> a toy concept's rendered photos
        OmegaConf.register_new_resolver("toyworld", _toy_concept_dir)
    if not OmegaConf.has_resolver("eval_set"):  # `${eval_set:dreambooth}` -> the shipped evaluation set
        OmegaConf.register_new_resolver("eval_set", lambda name: str(PACKAGE_DIR.parent / "evaluation" / "sets" / name))


def _toy_concept_dir(name: str, split: str) -> str:
    from yochameleon.toyworld.build import concept_dir

    return str(concept_dir(str(name), str(split)))
