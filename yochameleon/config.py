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
    searched BEFORE them (`prepend_user_dirs`), so a user's `conf/concept/<name>.yaml` wins over a
    shipped file of the same name (a one-line note names both).
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
    """(user file, shipped file) pairs where a user's config has a shipped config's name: the user's is read."""
    return [(f, CONFIG_DIR / f.relative_to(d)) for d in dirs for f in sorted(d.rglob("*.yaml"))
            if (CONFIG_DIR / f.relative_to(d)).is_file()]


_NOTED: set[tuple[Path, Path]] = set()


def prepend_user_dirs(search_path) -> None:
    """Put the user's config directories before the shipped ones in a Hydra search path (ours only).

    Called by the SearchPathPlugin in hydra_plugins/yochameleon_searchpath for every composition
    (the commands and the compose API alike); another Hydra application is left alone.
    """
    from hydra.core.config_search_path import SearchPathQuery

    shipped = {str(CONFIG_DIR), f"file://{CONFIG_DIR}"}  # hydra.main gives the bare directory, compose file://
    if not any(e.provider == "main" and str(e.path).rstrip("/") in shipped for e in search_path.get_path()):
        return
    dirs = user_config_dirs()
    for mine, theirs in shadowed_user_configs(dirs):
        if (mine, theirs) not in _NOTED:
            _NOTED.add((mine, theirs))
            logging.getLogger(__name__).warning("note: %s is used instead of the shipped %s (same name)", mine, theirs)
    for directory in dirs:  # in order: $YOCHAMELEON_CONFIG_PATH entries, then ./conf
        search_path.prepend("yochameleon-user", f"file://{directory}", anchor=SearchPathQuery(provider="main"))


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
    if not OmegaConf.has_resolver("toyworld_identities"):  # `${toyworld_identities:}` -> 144 identity folders
        OmegaConf.register_new_resolver("toyworld_identities", _toy_identities)
    if not OmegaConf.has_resolver("checkout"):  # `${checkout:../shared/x}` -> beside the package's parent directory
        OmegaConf.register_new_resolver("checkout", lambda rel: str((PACKAGE_DIR.parent / str(rel)).resolve()))
    if not OmegaConf.has_resolver("eval_set"):  # `${eval_set:dreambooth}` -> the shipped evaluation set
        OmegaConf.register_new_resolver("eval_set", lambda name: str(PACKAGE_DIR.parent / "evaluation" / "sets" / name))


def _toy_concept_dir(name: str, split: str) -> str:
    # Imported on first use: only toy concepts need it, and the toy world's leaf pulls in torch.
    from yochameleon.toyworld.concepts import concept_dir

    return str(concept_dir(str(name), str(split)))


def _toy_identities() -> str:
    from yochameleon.toyworld.identities import identities_root

    return str(identities_root())


def _toy_text_checks(name: str) -> list[dict]:
    from yochameleon.toyworld.checks import text_checks

    return text_checks(str(name))


def write_run_record(run_dir, cfg, summary: dict) -> None:
    """What a finished command leaves beside its outputs: the resolved config.yaml and summary.json."""
    import json

    run_dir = Path(run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(plain_config(cfg)))
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def plain_config(cfg) -> dict:
    """A composed config as plain data (resolved; closed choices and paths as strings): for config.yaml,
    W&B and JSON records."""
    from pathlib import PurePath

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, PurePath) else value

    return plain(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


# ---- the commands' configs: checked before anything runs, mistakes reported in one line ------------------
class ConfigError(Exception):
    """A composed config the schema refuses (message: one line naming the key, the file and the fix)."""


def _schema_type(schema, parts: list[str]):
    """The dataclass the schema has at a dotted path (None where it has none, e.g. a plain dict)."""
    import dataclasses
    import typing

    node = schema
    for part in parts:
        if not dataclasses.is_dataclass(node):
            return None
        hints = typing.get_type_hints(node)
        if part not in hints:
            return None
        node = hints[part]
        if typing.get_origin(node) is typing.Union:  # Optional[X]
            node = next(a for a in typing.get_args(node) if a is not type(None))
    return node if dataclasses.is_dataclass(node) else None


def _nearest(key: str, group: str, schema) -> str:
    import dataclasses
    import difflib

    node = _schema_type(schema, group.split(".") if group else [])
    if node is None:
        return ""
    names = [f.name for f in dataclasses.fields(node)]
    near = difflib.get_close_matches(key, names, n=3, cutoff=0.6) or sorted(names)
    where = f"{group}'s" if group else "top-level"
    return f"; {where} keys {'nearest to it' if len(near) < len(names) else 'are'}: {', '.join(near)}"


def unknown_key_message(full_key: str, schema, origin: str) -> str:
    group, _, key = full_key.rpartition(".")
    return (f"unknown key {full_key} ({origin}){_nearest(key, group, schema)}. Every key and its type: "
            "yochameleon/schema.py")


def check_known_keys(cfg, schema, overrides: tuple[str, ...] = ()) -> None:
    """Refuse keys the schema lacks. Hydra lets `+group.key=value` add any key to a typed config."""
    import dataclasses

    from omegaconf import DictConfig

    def walk(node, path: list[str]) -> None:
        kind = _schema_type(schema, path)
        if kind is None:
            return
        names = {f.name for f in dataclasses.fields(kind)}
        for key in node.keys():
            full = ".".join([*path, str(key)])
            if key not in names:
                given = next((o for o in overrides if o.lstrip("+").split("=", 1)[0] == full), None)
                origin = f"on the command line: {given}" if given else "in the config"
                raise ConfigError(unknown_key_message(full, schema, origin))
            child = node._get_node(key)
            if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
                walk(child, [*path, str(key)])

    walk(cfg, [])


def _user_file(config_path: str) -> str:
    """`concept/my-dog` -> the file Hydra read it from (the user's directories first, as Hydra searches)."""
    for directory in [*user_config_dirs(), CONFIG_DIR]:
        candidate = directory / f"{config_path}.yaml"
        if candidate.is_file():
            return str(candidate)
    return config_path


def one_line(error: BaseException, schema) -> str:
    """A Hydra/OmegaConf composition error as one line: the key, where it came from, the choices or the fix."""
    import re

    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    chain = _causes(error)
    top = str(error).strip()
    in_file = re.match(r"In '([^']+)'", top)
    override = re.search(r"(?:Could not override|Error merging override|Could not append to config\. An item is "
                         r"already at) '?([^'\s]+)'?", top)
    origin = (f"in {_user_file(in_file.group(1))}" if in_file else
              f"on the command line: {override.group(1)}" if override else "in the config")
    omega = next((e for e in chain if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None)), None)
    if omega is not None:
        full_key, message = str(omega.full_key), str(getattr(omega, "msg", "") or omega).splitlines()[0]
        if isinstance(omega, ConfigKeyError) or "not in struct" in message or re.match(r"Key '.*' not in", message):
            return unknown_key_message(full_key, schema, origin)
        return f"{full_key}: {message} ({origin})"  # a ValidationError names the value and the choices
    if "Could not find '" in top or "Could not load '" in top:
        wanted = re.search(r"Could not (?:find|load) '([^']+)'", top).group(1)
        group = wanted.rsplit("/", 1)[0]
        options = re.findall(r"^\t(\S+)$", top, flags=re.M)
        return (f"no config {wanted}.yaml" + (f"; {group} choices: {', '.join(options)}" if options else "")
                + f" (yours go in ./conf/{group}/<name>.yaml or under ${USER_CONFIG_ENV})")
    lines = [line.strip() for line in top.splitlines() if line.strip()]
    return "; ".join(lines[:2]) if lines else type(error).__name__


def _compose_checks(config_name: str, argv: list[str]) -> list[list[str]]:
    """The override lists one command line composes: itself, or under --multirun each swept value once."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.cfg or args.experimental_rerun:
        return []  # Hydra's own output
    overrides = list(args.overrides)
    if not (args.multirun or "hydra.mode=MULTIRUN" in overrides):
        return [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    firsts = [o.input_line if not o.is_sweep_override() else
              f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" for o in parsed]
    jobs = [firsts]
    for index, override in enumerate(parsed):
        if override.is_sweep_override():
            for value in list(override.sweep_string_iterator())[1:]:
                jobs.append([*firsts[:index], f"{override.get_key_element()}={value}", *firsts[index + 1:]])
    return [[o for o in job if o != "hydra.mode=MULTIRUN"] for job in jobs]


def check_command_line(config_name: str, schema, argv: list[str]) -> None:
    """Compose the config a command line asks for and refuse it, in one line, where the schema does."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    for overrides in _compose_checks(config_name, argv):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            try:
                cfg = compose(config_name, overrides=overrides)
            except Exception as err:  # Hydra's and OmegaConf's composition errors
                from yochameleon.errors import YoChameleonError

                ours = next((e for e in _causes(err) if isinstance(e, YoChameleonError)), None)
                raise ConfigError(str(ours) if ours else one_line(err, schema)) from err
        check_known_keys(cfg, schema, tuple(overrides))


def _causes(error: BaseException) -> list[BaseException]:
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def hydra_command(config_name: str, schema):
    """`hydra.main` for the commands: the command line's config is composed and checked against `schema`
    first, so a misspelt key (with or without `+`) or a value outside its choices stops the command with
    one line on stderr (exit status 1) before anything runs; HYDRA_FULL_ERROR=1 shows Hydra's own report."""
    import functools
    import sys

    import hydra

    def decorate(task):
        run = hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, version_base="1.3")(task)

        @functools.wraps(task)
        def main(cfg=None):
            if cfg is not None:  # a composed config handed over (tests, Python callers)
                return task(cfg)
            if not os.environ.get("HYDRA_FULL_ERROR"):
                try:
                    check_command_line(config_name, schema, sys.argv[1:])
                except ConfigError as err:
                    print(f"error: {err}", file=sys.stderr)
                    sys.exit(1)
            return run()

        return main

    return decorate
