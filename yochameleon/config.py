"""Hydra/OmegaConf glue: the config directory, the user's config directories and the `${asset:...}` resolver."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "conf"
ASSET_DIR = PACKAGE_DIR / "assets"
USER_CONFIG_ENV = "YOCHAMELEON_CONFIG_PATH"  # more config directories, separated like PATH


def user_config_dirs() -> list[Path]:
    """Config directories of the user's own: `$YOCHAMELEON_CONFIG_PATH` entries, then `./conf` of the working directory.

    They hold the same groups as the shipped configs (`concept/<name>.yaml`, `model/...`) and are
    searched after them, so a user's `conf/concept/<name>.yaml` works with the installed package.
    """
    entries = [e for e in os.environ.get(USER_CONFIG_ENV, "").split(os.pathsep) if e]
    dirs: list[Path] = []
    for entry in entries:
        path = Path(entry).expanduser().resolve()
        if not path.is_dir():
            from yochameleon.errors import YoChameleonError

            raise YoChameleonError(f"{USER_CONFIG_ENV} names {path}, which is not a directory; fix or unset it")
        dirs.append(path)
    local = Path.cwd() / "conf"
    if local.is_dir():
        dirs.append(local.resolve())
    return [d for i, d in enumerate(dirs) if d != CONFIG_DIR.resolve() and d not in dirs[:i]]


def shadowed_user_configs(dirs: list[Path]) -> list[tuple[Path, Path]]:
    """(user file, shipped file) pairs where a user's config has a shipped config's name: Hydra reads the shipped one."""
    return [(f, CONFIG_DIR / f.relative_to(d)) for d in dirs for f in sorted(d.rglob("*.yaml"))
            if (CONFIG_DIR / f.relative_to(d)).is_file()]


def _hydra_searchpath() -> list[str]:
    # `hydra.searchpath` of train.yaml / eval.yaml: only directories that exist (Hydra warns about missing ones).
    dirs = user_config_dirs()
    for mine, shipped in shadowed_user_configs(dirs):
        logging.getLogger(__name__).warning(
            "%s has the name of a shipped config (%s), which Hydra reads instead: rename yours "
            "(e.g. conf/concept/my-%s) and select it by its new name", mine, shipped, mine.name)
    return [f"file://{d}" for d in dirs]


def register_resolvers() -> None:
    """`${asset:demo/corgi/train}` -> absolute path inside the installed package's assets (and `${eval_set:..}`),
    and the config schemas (yochameleon/schema.py) in Hydra's ConfigStore."""
    from yochameleon.schema import register_schemas

    register_schemas()
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", lambda rel: str(ASSET_DIR / rel))
    if not OmegaConf.has_resolver("toyworld"):  # `${toyworld:bo,train}` -> a toy concept's rendered photos
        OmegaConf.register_new_resolver("toyworld", _toy_concept_dir)
    if not OmegaConf.has_resolver("toyworld_checks"):  # `${toyworld_checks:bo}` -> a toy concept's text checks
        OmegaConf.register_new_resolver("toyworld_checks", _toy_text_checks)
    if not OmegaConf.has_resolver("yochameleon_searchpath"):  # train.yaml's hydra.searchpath: the user's conf dirs
        OmegaConf.register_new_resolver("yochameleon_searchpath", _hydra_searchpath)
    if not OmegaConf.has_resolver("eval_set"):  # `${eval_set:dreambooth}` -> the shipped evaluation set
        OmegaConf.register_new_resolver("eval_set", lambda name: str(PACKAGE_DIR.parent / "evaluation" / "sets" / name))


def _toy_concept_dir(name: str, split: str) -> str:
    # Imported on first use: only toy concepts need it, and the toy world's leaf pulls in torch.
    from yochameleon.toyworld.concepts import concept_dir

    return str(concept_dir(str(name), str(split)))


def _toy_text_checks(name: str) -> list[dict]:
    from yochameleon.toyworld.checks import text_checks

    return text_checks(str(name))
