"""Where a backbone comes from: `model.source` (local | tiny | toyworld | janus-tiny), resolved in this one place.

Training resolves a model config's source here and records it in the adapter; inference
resolves the adapter's record here again. This module sits above `model/` and `toyworld/`,
so neither of them needs to know the other.
"""

from __future__ import annotations

from pathlib import Path

import torch

from yochameleon.errors import YoChameleonError
from yochameleon.model.backbone import Backbone, resolve_dtype
from yochameleon.model.load import check_directory, load_backbone
from yochameleon.model.tiny import default_cache_dir, ensure_tiny_checkpoint
from yochameleon.model.tiny_janus import ensure_tiny_janus
from yochameleon.toyworld.build import ensure_toyworld_checkpoint

# Each kind -> (cache root, `path`) -> the local HF checkpoint directory, built or unpacked on first use.
SOURCES = {
    "local": lambda cache, path: check_directory(path),  # a checkpoint you downloaded: model.path
    "tiny": lambda cache, path: ensure_tiny_checkpoint(cache / "models"),  # random weights, built in seconds
    "toyworld": lambda cache, path: ensure_toyworld_checkpoint(cache),  # pretrained on the toy world
    "janus-tiny": lambda cache, path: ensure_tiny_janus(cache / "models"),  # a random Janus, built in seconds
}


def resolve_source(source: str, cache_dir: str | Path | None = None, path: str | Path | None = None) -> Path:
    """The local checkpoint directory of a backbone source (`path` is read by `local` only)."""
    if source not in SOURCES:
        raise YoChameleonError(f"unknown backbone source {source!r}; choose one of {', '.join(SOURCES)} "
                               "(model.source in conf/model/<name>.yaml, or base_model.source in an adapter's "
                               "adapter_config.json)")
    return SOURCES[source](Path(cache_dir or default_cache_dir()), path)


def configured_source(model_cfg) -> str:
    """The source kind a model config names (`model.source`; `resolve_source` refuses an unknown one)."""
    return str(model_cfg.source)


def recorded_source(base_model: dict) -> str:
    """The source an adapter's `base_model` records; adapters written before `source` existed name it by config."""
    if base_model.get("source"):
        return str(base_model["source"])
    # Then only the tiny and toy-world configs were built in the cache; every other one was a local directory.
    return base_model.get("model_config") if base_model.get("model_config") in ("tiny", "toyworld") else "local"


def load_configured_backbone(model_cfg, cache_dir: str | Path, device: torch.device | str = "cpu",
                             dtype: str | None = None) -> Backbone:
    """Load the backbone a model config names, in `dtype` (default: `model.dtype`; see `resolve_dtype`)."""
    dtype = resolve_dtype(dtype if dtype is not None else model_cfg.dtype, device)
    path = resolve_source(configured_source(model_cfg), cache_dir, model_cfg.path)
    return load_backbone(path, name=str(model_cfg.name), dtype=dtype, device=device,
                         attn_implementation=str(model_cfg.attn_implementation))
