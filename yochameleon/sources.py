"""Where a backbone comes from: `model.source` (local | tiny | toyworld | janus-tiny), resolved in this one place.

Training resolves a model config's source here and records it in the adapter; inference
resolves the adapter's record here again. This module sits above `model/` and `toyworld/`,
so neither of them needs to know the other. A source may also provide a judge of what its
backbones draw (the toy world's reads shape, colour and pattern): training asks here
(`drawing_judge`), so it imports nothing of the toy world. The toy world itself is imported
only when a config asks for it (its checkpoint, or a toy concept's judge).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from yochameleon.errors import YoChameleonError
from yochameleon.model.backbone import Backbone, resolve_dtype
from yochameleon.model.load import check_directory, load_backbone
from yochameleon.tiny.chameleon import default_cache_dir, ensure_tiny_checkpoint
from yochameleon.tiny.janus import ensure_tiny_janus

Verdicts = list[dict[str, bool]]  # per image, {attribute: read right}


@dataclass(frozen=True)
class Source:
    """A kind of backbone: its checkpoint, and (optionally) a judge of the images its backbones draw."""

    checkpoint: Callable[[Path, str | Path | None], Path]  # (cache root, `path`) -> the local HF checkpoint directory
    judge: Callable[[Path, object], Callable[[list], Verdicts] | None] | None = None  # (backbone dir, concept) -> judge


def _toyworld_checkpoint(cache: Path, path) -> Path:
    from yochameleon.toyworld.build import ensure_toyworld_checkpoint  # the toy build, only when a config asks

    return ensure_toyworld_checkpoint(cache)


def _toyworld_judge(backbone_dir: Path, concept) -> Callable[[list], Verdicts] | None:
    if concept.category != "toy":  # nothing of the toy world is imported for other concepts
        return None
    from yochameleon.toyworld.judge import drawing_judge

    return drawing_judge(backbone_dir, concept.name)


# Each kind: its checkpoint, built or unpacked on first use, and its judge of drawings where it has one.
SOURCES = {
    "local": Source(lambda cache, path: check_directory(path)),  # a checkpoint you downloaded: model.path
    "tiny": Source(lambda cache, path: ensure_tiny_checkpoint(cache / "models")),  # random weights, built in seconds
    "toyworld": Source(_toyworld_checkpoint, _toyworld_judge),  # pretrained on the toy world; judged by its judge
    "janus-tiny": Source(lambda cache, path: ensure_tiny_janus(cache / "models")),  # a random Janus, in seconds
}


def resolve_source(source: str, cache_dir: str | Path | None = None, path: str | Path | None = None) -> Path:
    """The local checkpoint directory of a backbone source (`path` is read by `local` only)."""
    if source not in SOURCES:
        raise YoChameleonError(f"unknown backbone source {source!r}; choose one of {', '.join(SOURCES)} "
                               "(model.source in conf/model/<name>.yaml, or base_model.source in an adapter's "
                               "adapter_config.json)")
    return SOURCES[source].checkpoint(Path(cache_dir or default_cache_dir()), path)


def drawing_judge(backbone_dir: str | Path, concept) -> Callable[[list], Verdicts] | None:
    """The judge of `concept`'s drawings on the backbone in `backbone_dir`: images -> per image {attribute: read
    right}; None where no source provides one (the toy world's judges a toy concept on a backbone shipped with
    its judge).

    Every source's judge is asked, not only the configured source's: a judge is a file beside the checkpoint,
    so a toy backbone given as `model.source=local` with its `model.path` is judged as well.
    """
    for source in SOURCES.values():
        judge = source.judge(Path(backbone_dir), concept) if source.judge else None
        if judge is not None:
            return judge
    return None


def configured_source(model_cfg) -> str:
    """The source kind a model config names (`model.source`; `resolve_source` refuses an unknown one)."""
    return str(model_cfg.source)


def recorded_source(base_model: dict) -> str:
    """The source an adapter's `base_model` records; adapters written before `source` existed name it by config."""
    if base_model.get("source"):
        return str(base_model["source"])
    # Then only the tiny and toy-world configs were built in the cache; every other one was a local directory.
    return base_model.get("model_config") if base_model.get("model_config") in ("tiny", "toyworld") else "local"


def source_record(backbone, model_cfg) -> dict:
    """What an adapter or an encoder records of the backbone it was trained on: the fingerprint (shapes and an
    embedding probe, checked on load) and where it came from (`recorded_source` finds it again)."""
    return backbone.fingerprint() | {"path": str(backbone.path), "model_config": str(model_cfg.name),
                                     "source": configured_source(model_cfg)}


def load_configured_backbone(model_cfg, cache_dir: str | Path, device: torch.device | str = "cpu",
                             dtype: str | None = None) -> Backbone:
    """Load the backbone a model config names, in `dtype` (default: `model.dtype`; see `resolve_dtype`)."""
    dtype = resolve_dtype(dtype if dtype is not None else model_cfg.dtype, device)
    path = resolve_source(configured_source(model_cfg), cache_dir, model_cfg.path)
    return load_backbone(path, name=str(model_cfg.name), dtype=dtype, device=device,
                         attn_implementation=str(model_cfg.attn_implementation))
