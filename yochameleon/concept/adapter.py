"""The concept adapter: a small directory a user can share and inspect.

    adapter_config.json   concept name, base model (name, path, shapes, checksum),
                          token names/ids, k_g / k_u, recipe facts
    adapter.safetensors   input_rows (n, hidden), output_rows (n, hidden)

`read_adapter_config` reads the JSON once into an `AdapterConfig` (typed, every field checked, errors naming
the file and the field); `load_adapter` and `read_adapter_rows` take that object, so a caller that has read
it passes it down instead of reading the folder again.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from yochameleon.concept.tokens import PersonalizedTokens, TokenLayoutError, reserved_token_names
from yochameleon.errors import YoChameleonError
from yochameleon.io import atomic_dir, read_safetensors

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


_FIX = "the adapter is damaged or was edited: copy it again from its training run (or re-train it)"
_MISSING = object()


def _field(raw: dict, key: str, kinds, path: Path, default=_MISSING, where: str = ""):
    """raw[key] checked to be of `kinds` (None allowed where the default is None); errors name the file and field."""
    name = f"{where}{key}"
    if key not in raw or (raw[key] is None and default is None):
        if default is _MISSING:
            raise AdapterError(f"{path}: field {name!r} is missing; {_FIX}")
        return default
    value = raw[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds)):
        wanted = " or ".join(k.__name__ for k in _as_tuple(kinds))
        raise AdapterError(f"{path}: field {name!r} is {value!r} ({type(value).__name__}), expected {wanted}; {_FIX}")
    return value


def _as_tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


@dataclass(frozen=True)
class BaseModel:
    """The backbone an adapter was trained on, as recorded (`Backbone.fingerprint` and training's source facts)."""

    name: str | None
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    embedding_probe: tuple[float, ...] | None
    record: dict  # the whole record as written (path, model_config, source, family, ...): `sources.recorded_source`

    SHAPES = ("vocab_size", "hidden_size", "num_hidden_layers")

    @classmethod
    def parse(cls, raw: dict, path: Path) -> "BaseModel":
        shapes = {key: _field(raw, key, int, path, where="base_model.") for key in cls.SHAPES}
        probe = _field(raw, "embedding_probe", list, path, None, "base_model.")
        if probe is not None and not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in probe):
            raise AdapterError(f"{path}: field 'base_model.embedding_probe' holds a non-number; {_FIX}")
        return cls(_field(raw, "name", str, path, None, "base_model."), **shapes,
                   embedding_probe=None if probe is None else tuple(float(x) for x in probe), record=dict(raw))

    def get(self, key: str, default=None):
        """A recorded value by name, as in the JSON (e.g. "path", "model_config", "source")."""
        return self.record.get(key, default)


@dataclass(frozen=True)
class AdapterConfig:
    """An adapter's adapter_config.json, read and checked once (`read_adapter_config`). Fields written by newer
    versions are optional, so adapters written before them still load: shared_tokens (False), self_prompting
    (True), recipe ({}), selected_on / selection / selection_metric / step / init / system_prefix (None)."""

    path: Path  # the adapter_config.json it was read from
    concept: str
    base_model: BaseModel
    token_names: tuple[str, ...]
    token_ids: tuple[int, ...]
    k_g: int
    k_u: int
    shared_tokens: bool
    self_prompting: bool
    recipe: dict  # the training recipe (conf/recipe/*.yaml, resolved)
    selected_on: str | None  # "val" for best/ (chosen on the validation split), None for adapter/
    selection: dict | None  # best/: each side's {"metric", "score", "step"}
    selection_metric: str | None
    step: int | None
    init: dict | None  # recipe.init: where the rows started
    system_prefix: str | None
    raw: dict  # every field as written, the run facts included

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def n_tokens(self) -> int:
        return 1 + self.k_g + self.k_u

    @property
    def self_prompt_mode(self) -> str:
        """recipe.inference.self_prompt: whether inference forces the token group ("forced") or lets the model emit it."""
        return str(self.recipe.get("inference", {}).get("self_prompt", "forced"))

    @property
    def generation_group(self):
        """recipe.generation_group ("full" for adapters written before it existed)."""
        return self.recipe.get("generation_group", "full")

    def get(self, key: str, default=None):
        """Any recorded field by its JSON name (e.g. the selection metric's own key in best/)."""
        return self.raw.get(key, default)

    def __getitem__(self, key: str):
        """`config["concept"]`, as when the config was a dict: the field as written."""
        return self.raw[key]


def read_adapter_config(directory: str | Path) -> AdapterConfig:
    """The adapter's config, every field checked (type, the token list against k_g + k_u); errors name the file and
    the field. Older adapters, without the optional fields of `AdapterConfig`, read with their defaults."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.exists():
        raise AdapterError(f"{directory} is not a concept adapter (no {CONFIG_NAME}). Point at the 'adapter' folder "
                           "inside a training run (or 'best', chosen on a validation split when the concept has one), "
                           "e.g. outputs/<concept>/<run>/adapter")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{path} is not valid JSON ({err}); re-save the adapter from its training run") from err
    if not isinstance(raw, dict):
        raise AdapterError(f"{path} holds {type(raw).__name__}, not an adapter config object; {_FIX}")
    if raw.get("format_version") != FORMAT_VERSION:
        raise AdapterError(f"{path} has format_version {raw.get('format_version')}, this yochameleon reads "
                           f"{FORMAT_VERSION}; upgrade yochameleon or re-train the adapter")
    return _parse_config(raw, path)


def read_adapter_configs(directories) -> list[AdapterConfig]:
    """`read_adapter_config` of each directory, in order."""
    return [read_adapter_config(directory) for directory in directories]


def _parse_config(raw: dict, path: Path) -> AdapterConfig:
    k_g, k_u = _field(raw, "k_g", int, path), _field(raw, "k_u", int, path)
    names, ids = _field(raw, "token_names", list, path), _field(raw, "token_ids", list, path)
    if k_g < 0 or k_u < 0:
        raise AdapterError(f"{path}: fields 'k_g' / 'k_u' are {k_g} / {k_u}, expected counts of 0 or more; {_FIX}")
    if not all(isinstance(x, str) for x in names) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                                for x in ids):
        raise AdapterError(f"{path}: field 'token_names' must list strings and 'token_ids' integers; {_FIX}")
    if len(ids) != 1 + k_g + k_u or len(names) != 1 + k_g + k_u:
        raise AdapterError(f"{path} lists {len(ids)} token ids and {len(names)} token names, but k_g + k_u + 1 "
                           f"= {1 + k_g + k_u}; {_FIX}")
    recipe = _field(raw, "recipe", dict, path, {})
    mode = _field(_field(recipe, "inference", dict, path, {}, "recipe."), "self_prompt", str, path, "forced",
                  "recipe.inference.")
    if mode not in ("forced", "emitted"):
        raise AdapterError(f"{path}: field 'recipe.inference.self_prompt' is {mode!r}, expected forced or emitted")
    selection = _field(raw, "selection", dict, path, None)
    for side, kept in (selection or {}).items():
        if not isinstance(kept, dict) or not isinstance(kept.get("score", 0.0), (int, float, type(None))) \
                or not isinstance(kept.get("step", 0), (int, type(None))):
            raise AdapterError(f"{path}: field 'selection.{side}' is {kept!r}, expected a score and a step; {_FIX}")
    return AdapterConfig(
        path=path, concept=_field(raw, "concept", str, path),
        base_model=BaseModel.parse(_field(raw, "base_model", dict, path), path), token_names=tuple(names),
        token_ids=tuple(ids), k_g=k_g, k_u=k_u, shared_tokens=_field(raw, "shared_tokens", bool, path, False),
        self_prompting=_field(raw, "self_prompting", bool, path, True), recipe=recipe,
        selected_on=_field(raw, "selected_on", str, path, None), selection=selection,
        selection_metric=_field(raw, "selection_metric", str, path, None), step=_field(raw, "step", int, path, None),
        init=_field(raw, "init", dict, path, None), system_prefix=_field(raw, "system_prefix", str, path, None),
        raw=raw)


def check_backbone_match(config: AdapterConfig, fingerprint: dict, where: str) -> None:
    """Raise when an adapter (or checkpoint) was trained on a different backbone."""
    base = config.base_model
    for key in BaseModel.SHAPES:
        if getattr(base, key) != fingerprint.get(key):
            raise AdapterError(
                f"{where} was trained on backbone {base.name!r} ({key}={getattr(base, key)}) but the loaded "
                f"backbone {fingerprint.get('name')!r} has {key}={fingerprint.get(key)}. Load it with the backbone "
                "it was trained on (model=... model.path=...).")
    a, b = base.embedding_probe, fingerprint.get("embedding_probe")
    if a is not None and b is not None and not all(math.isclose(x, y, rel_tol=2e-2, abs_tol=1e-4)
                                                   for x, y in zip(a, b)):
        raise AdapterError(
            f"{where} was trained on backbone {base.name!r} whose weights differ from the loaded "
            f"{fingerprint.get('name')!r} (same shapes, different embedding values). Load it with the backbone it "
            "was trained on.")


def load_adapter(adapter: str | Path | AdapterConfig, backbone, taken_ids: set[int] | None = None,
                 fingerprint: dict | None = None) -> PersonalizedTokens:
    """Load an adapter (a directory, or its config as `read_adapter_config` read it) for `backbone`; if its ids
    collide with `taken_ids`, move it to free reserved ids.

    `fingerprint`: the backbone's, when it was read before its weights were partitioned (ZeRO-3)."""
    config = adapter if isinstance(adapter, AdapterConfig) else read_adapter_config(adapter)
    directory = config.directory
    fingerprint = fingerprint or backbone.fingerprint()
    check_backbone_match(config, fingerprint, f"adapter {directory}")
    input_rows, output_rows = read_adapter_rows(config, backbone.hidden_size)
    names, ids = list(config.token_names), list(config.token_ids)
    vocabulary = backbone.vocabulary_map
    wrong = [(name, i) for name, i in zip(names, ids) if vocabulary.get(name) != i]
    if wrong:
        name, i = wrong[0]
        raise AdapterError(f"{config.path}: token {name} is recorded as id {i}, but the loaded backbone "
                           f"{fingerprint.get('name')!r} has it as {vocabulary.get(name)} "
                           f"({len(wrong)} of {len(names)} tokens differ); the adapter is damaged or was edited: "
                           "copy it again from its training run")
    taken = taken_ids or set()
    if taken & set(ids):
        names, ids = _free_reserved_run(backbone.vocabulary_map, config.n_tokens, taken)
        log.warning("adapter %s: token ids collide with an already loaded concept; moved to %s..%s",
                    directory, names[0], names[-1])
    tokens = PersonalizedTokens(config.concept, names, ids, config.k_g, config.k_u,
                                input_rows, output_rows, config.shared_tokens)
    tokens.generation_group = str(config.generation_group)
    return tokens


ROW_TENSORS, ROW_DTYPE = ("input_rows", "output_rows"), torch.float32  # what `save_adapter` writes


def read_adapter_rows(config: AdapterConfig, hidden_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The (input, output) rows beside an adapter's config, every tensor checked before use: exactly `ROW_TENSORS`,
    each float32 of shape (1 + k_g + k_u, the backbone's hidden size), finite (the token list's length against
    k_g + k_u is `read_adapter_config`'s check). A damaged or edited adapter is refused here, naming the file and
    the mismatch."""
    directory = config.directory
    weights_path = directory / WEIGHTS_NAME
    weights = read_safetensors(directory, CONFIG_NAME, WEIGHTS_NAME, AdapterError, _FIX)
    n = config.n_tokens
    if sorted(weights) != sorted(ROW_TENSORS):
        raise AdapterError(f"{weights_path} holds tensors {sorted(weights)}, expected exactly {list(ROW_TENSORS)}; {_FIX}")
    for key in ROW_TENSORS:
        tensor = weights[key]
        if tuple(tensor.shape) != (n, hidden_size):
            raise AdapterError(f"{weights_path}: {key} has shape {tuple(tensor.shape)}, expected ({n}, {hidden_size}) "
                               f"(1 + k_g + k_u rows from {CONFIG_NAME}, the backbone's hidden size); {_FIX}")
        if tensor.dtype != ROW_DTYPE:
            raise AdapterError(f"{weights_path}: {key} is {tensor.dtype}, expected {ROW_DTYPE} (what save_adapter "
                               f"writes); {_FIX}")
        if not bool(torch.isfinite(tensor).all()):
            raise AdapterError(f"{weights_path}: {key} holds NaN or infinite values; {_FIX}")
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
