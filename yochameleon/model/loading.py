"""Turn a `yochameleon/conf/model/*.yaml` config into a loaded backbone."""

from __future__ import annotations

from pathlib import Path

import torch

from yochameleon.errors import YoChameleonError
from yochameleon.model.backbone import Backbone, load_backbone
from yochameleon.model.tiny import ensure_tiny_checkpoint

DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(dtype, device: torch.device | str) -> str:
    """The backbone weights' dtype: `auto` is bfloat16 on a GPU and float32 on CPU (as trainer.precision=auto).

    A 7B backbone is ~28 GB in float32 and ~14 GB in bfloat16; an explicit dtype is used as given.
    """
    dtype = "auto" if dtype is None else str(dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise YoChameleonError(f"unknown backbone dtype {dtype!r}; choose one of {', '.join(DTYPES)} "
                               "(model.dtype=... / dtype=... / --dtype ...)")
    if dtype == "auto":
        return "bfloat16" if torch.device(device).type == "cuda" else "float32"
    return dtype


def resolve_model_path(model_cfg, cache_dir: str | Path) -> Path:
    """The local checkpoint directory: the cached tiny model (built on first use) or `model.path`."""
    if model_cfg.get("tiny"):
        return ensure_tiny_checkpoint(Path(cache_dir) / "models")
    if model_cfg.get("toyworld"):
        from yochameleon.toyworld.build import ensure_toyworld_checkpoint

        return ensure_toyworld_checkpoint(cache_dir)
    from yochameleon.model.backbone import check_backbone_dir

    return check_backbone_dir(model_cfg.get("path"))


def load_configured_backbone(model_cfg, cache_dir: str | Path, device: torch.device | str = "cpu",
                             dtype: str | None = None) -> Backbone:
    """Load the backbone a model config names, in `dtype` (default: `model.dtype`; see `resolve_dtype`)."""
    dtype = resolve_dtype(dtype if dtype is not None else model_cfg.get("dtype", "auto"), device)
    path = resolve_model_path(model_cfg, cache_dir)
    return load_backbone(path, name=str(model_cfg.name), dtype=dtype, device=device,
                         attn_implementation=str(model_cfg.get("attn_implementation", "sdpa")))
