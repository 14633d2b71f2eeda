"""Load a frozen backbone of either family from a local HF directory: the family is its `model_type`.

`chameleon` (Chameleon, Anole, the tiny and toy models) is read by `model/backbone.py`,
`janus` (Janus-Pro, the tiny Janus) by `model/janus.py`. One path for every size: the tiny
models are built once and read back through the same `from_pretrained` call as the 7B and 1B.
"""

from __future__ import annotations

from pathlib import Path

import torch

from yochameleon.model.backbone import Backbone, check_backbone_dir, load_chameleon_backbone
from yochameleon.model.janus import check_janus_dir, is_janus_dir, load_janus_backbone


def check_directory(path: str | Path) -> Path:
    """Fail at once, with the expected layout, when `path` is not a usable checkpoint of either family."""
    path = check_backbone_dir(path)  # every family's checks, and a Chameleon directory's own
    return check_janus_dir(path) if is_janus_dir(path) else path


def load_backbone(path: str | Path, name: str | None = None, dtype: str | torch.dtype = "float32",
                  device: str | torch.device = "cpu", attn_implementation: str = "sdpa") -> Backbone:
    """Load a frozen backbone (weights, tokenizer, processor) from a local HF directory (checked once, here)."""
    path = check_directory(path)
    loader = load_janus_backbone if is_janus_dir(path) else load_chameleon_backbone
    return loader(path, name, dtype, device, attn_implementation)
