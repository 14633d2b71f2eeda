"""The concept adapter: a small directory a user can share and inspect.

    adapter_config.json   concept name, base model (name, path, shapes, checksum),
                          token names/ids, k_g / k_u, recipe facts
    adapter.safetensors   input_rows (n, hidden), output_rows (n, hidden)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from yochameleon.concept.tokens import PersonalizedTokens, TokenLayoutError, reserved_token_names
from yochameleon.errors import YoChameleonError
from yochameleon.io import atomic_dir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME = "adapter_config.json", "adapter.safetensors"


class AdapterError(YoChameleonError):
    """An adapter directory is unreadable or does not fit the loaded backbone."""


def save_adapter(directory: str | Path, tokens: PersonalizedTokens, backbone_fingerprint: dict,
                 extra: dict | None = None) -> Path:
    """Write `tokens` as an adapter directory (atomically)."""
    config = {
        "format_version": FORMAT_VERSION,
        "concept": tokens.name,
        "base_model": backbone_fingerprint,
        "token_names": tokens.token_names,
        "token_ids": tokens.token_ids.tolist(),
        "k_g": tokens.k_g,
        "k_u": tokens.k_u,
        "shared_tokens": tokens.shared,
        **(extra or {}),
    }
    with atomic_dir(directory) as staging:
        save_file({"input_rows": tokens.input_rows.detach().float().cpu().contiguous(),
                   "output_rows": tokens.output_rows.detach().float().cpu().contiguous()},
                  str(staging / WEIGHTS_NAME))
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return Path(directory)


def read_adapter_config(directory: str | Path) -> dict:
    """The adapter's JSON config, with a clear error when the directory is not an adapter."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.exists():
        raise AdapterError(f"{directory} is not a concept adapter (no {CONFIG_NAME}). Point at the 'adapter' folder "
                           "inside a training run (or 'best', chosen on a validation split when the concept has one), "
                           "e.g. outputs/<concept>/<run>/adapter")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{path} is not valid JSON ({err}); re-save the adapter from its training run") from err
    if config.get("format_version") != FORMAT_VERSION:
        raise AdapterError(f"{path} has format_version {config.get('format_version')}, this yochameleon reads "
                           f"{FORMAT_VERSION}; upgrade yochameleon or re-train the adapter")
    return config


def check_backbone_match(config: dict, fingerprint: dict, where: str) -> None:
    """Raise when an adapter (or checkpoint) was trained on a different backbone."""
    base = config["base_model"]
    for key in ("vocab_size", "hidden_size", "num_hidden_layers"):
        if base.get(key) != fingerprint.get(key):
            raise AdapterError(
                f"{where} was trained on backbone {base.get('name')!r} ({key}={base.get(key)}) but the loaded "
                f"backbone {fingerprint.get('name')!r} has {key}={fingerprint.get(key)}. Load it with the backbone "
                "it was trained on (model=... model.path=...).")
    a, b = base.get("embedding_probe"), fingerprint.get("embedding_probe")
    if a is not None and b is not None and not all(math.isclose(x, y, rel_tol=2e-2, abs_tol=1e-4)
                                                   for x, y in zip(a, b)):
        raise AdapterError(
            f"{where} was trained on backbone {base.get('name')!r} whose weights differ from the loaded "
            f"{fingerprint.get('name')!r} (same shapes, different embedding values). Load it with the backbone it "
            "was trained on.")


def load_adapter(directory: str | Path, backbone, taken_ids: set[int] | None = None,
                 fingerprint: dict | None = None) -> PersonalizedTokens:
    """Load an adapter for `backbone`; if its ids collide with `taken_ids`, move it to free reserved ids.

    `fingerprint`: the backbone's, when it was read before its weights were partitioned (ZeRO-3)."""
    directory = Path(directory)
    config = read_adapter_config(directory)
    fingerprint = fingerprint or backbone.fingerprint()
    check_backbone_match(config, fingerprint, f"adapter {directory}")
    input_rows, output_rows = read_adapter_rows(directory, config, backbone.hidden_size)
    names, ids = config["token_names"], config["token_ids"]
    vocabulary = backbone.vocabulary_map
    wrong = [(name, i) for name, i in zip(names, ids) if vocabulary.get(name) != i]
    if wrong:
        name, i = wrong[0]
        raise AdapterError(f"{directory / CONFIG_NAME}: token {name} is recorded as id {i}, but the loaded backbone "
                           f"{fingerprint.get('name')!r} has it as {vocabulary.get(name)} "
                           f"({len(wrong)} of {len(names)} tokens differ); the adapter is damaged or was edited: "
                           "copy it again from its training run")
    n = 1 + config["k_g"] + config["k_u"]
    taken = taken_ids or set()
    if taken & set(ids):
        names, ids = _free_reserved_run(backbone.vocabulary_map, n, taken)
        log.warning("adapter %s: token ids collide with an already loaded concept; moved to %s..%s",
                    directory, names[0], names[-1])
    return PersonalizedTokens(config["concept"], names, ids, config["k_g"], config["k_u"],
                              input_rows, output_rows, bool(config.get("shared_tokens")))


ROW_TENSORS, ROW_DTYPE = ("input_rows", "output_rows"), torch.float32  # what `save_adapter` writes


def read_adapter_rows(directory: str | Path, config: dict, hidden_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (input, output) rows an adapter folder holds, every tensor checked before use: exactly `ROW_TENSORS`,
    each float32 of shape (1 + k_g + k_u, the backbone's hidden size), finite, and the config's token list
    as long. A damaged or edited adapter is refused here, naming the file and the mismatch."""
    weights_path = Path(directory) / WEIGHTS_NAME
    if not weights_path.exists():
        raise AdapterError(f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}; copy the whole adapter folder")
    fix = "the adapter is damaged or was edited: copy it again from its training run (or re-train it)"
    try:
        weights = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error types for a truncated or foreign file
        raise AdapterError(f"{weights_path} is not a readable safetensors file ({err}); {fix}") from err
    config_path = Path(directory) / CONFIG_NAME
    try:
        n = 1 + int(config["k_g"]) + int(config["k_u"])
        names, ids = list(config["token_names"]), list(config["token_ids"])
    except (KeyError, TypeError, ValueError) as err:
        raise AdapterError(f"{config_path} lacks a valid k_g, k_u, token_names or token_ids ({err!r}); {fix}") from err
    if len(ids) != n or len(names) != n:
        raise AdapterError(f"{config_path} lists {len(ids)} token ids and {len(names)} token names, but k_g + k_u + 1 "
                           f"= {n}; {fix}")
    if sorted(weights) != sorted(ROW_TENSORS):
        raise AdapterError(f"{weights_path} holds tensors {sorted(weights)}, expected exactly {list(ROW_TENSORS)}; {fix}")
    for key in ROW_TENSORS:
        tensor = weights[key]
        if tuple(tensor.shape) != (n, hidden_size):
            raise AdapterError(f"{weights_path}: {key} has shape {tuple(tensor.shape)}, expected ({n}, {hidden_size}) "
                               f"(1 + k_g + k_u rows from {CONFIG_NAME}, the backbone's hidden size); {fix}")
        if tensor.dtype != ROW_DTYPE:
            raise AdapterError(f"{weights_path}: {key} is {tensor.dtype}, expected {ROW_DTYPE} (what save_adapter "
                               f"writes); {fix}")
        if not bool(torch.isfinite(tensor).all()):
            raise AdapterError(f"{weights_path}: {key} holds NaN or infinite values; {fix}")
    return weights["input_rows"], weights["output_rows"]


def _free_reserved_run(vocabulary_map: dict[str, int], count: int, taken: set[int]):
    """First run of `count` consecutive reserved tokens from <reserved16200> (Chameleon) or <reserved00000>
    (Janus, whose unused rows are named from 0) upward that avoids `taken`."""
    start = 16200 if "<reserved16200>" in vocabulary_map else 0
    while start < 100000:
        try:
            names = reserved_token_names(vocabulary_map, f"<reserved{start:05d}>", count)
        except TokenLayoutError:
            break
        ids = [int(vocabulary_map[x]) for x in names]
        if not taken & set(ids):
            return names, ids
        start += count
    raise AdapterError(f"no {count} free reserved tokens left for another concept; load fewer adapters")
