"""Turn a `yochameleon/conf/model/*.yaml` config into a loaded backbone."""

from __future__ import annotations

from pathlib import Path

import torch

from yochameleon.model.backbone import Backbone, load_backbone
from yochameleon.model.tiny import ensure_tiny_checkpoint


def resolve_model_path(model_cfg, cache_dir: str | Path) -> Path:
    """The local checkpoint directory: the cached tiny model (built on first use) or `model.path`."""
    if model_cfg.get("tiny"):
        return ensure_tiny_checkpoint(Path(cache_dir) / "models")
    if model_cfg.get("toyworld"):
        from yochameleon.toyworld.build import ensure_toyworld_checkpoint

        return ensure_toyworld_checkpoint(cache_dir)
    from yochameleon.model.backbone import check_backbone_dir

    return check_backbone_dir(model_cfg.get("path"))


def load_configured_backbone(model_cfg, cache_dir: str | Path, device: torch.device | str = "cpu") -> Backbone:
    """Load the backbone a model config names; bf16 weights only where the device supports them."""
    path = resolve_model_path(model_cfg, cache_dir)
    dtype = str(model_cfg.get("dtype", "float32"))
    if torch.device(device).type == "cpu" and dtype == "bfloat16" and not model_cfg.get("allow_cpu_bf16", False):
        dtype = "float32"  # bf16 matmuls on CPU are slow and inexact; keep fp32 there
    return load_backbone(path, name=str(model_cfg.name), dtype=dtype, device=device,
                         attn_implementation=str(model_cfg.get("attn_implementation", "sdpa")))
