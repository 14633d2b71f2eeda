"""Image -> VQ codes, computed once per photo (and its horizontal flip) and cached on disk.

The cache key is the image file's content hash plus a key of the VQ tokenizer,
so editing a photo or switching backbones never reuses stale codes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from PIL import ImageOps
from safetensors.torch import load_file, save_file

from yochameleon.data.images import load_image

log = logging.getLogger(__name__)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tokenizer_key(backbone) -> str:
    """Identifies the VQ tokenizer (config + codebook checksum + image size) of a backbone."""
    vq = backbone.model.model.vqmodel
    blob = json.dumps({
        "vq": backbone.config.vq_config.to_dict(),
        "codebook": float(vq.quantize.embedding.weight[:64].double().abs().sum()),
        "conv": float(vq.quant_conv.weight.double().abs().sum()),
        "processor": backbone.processor.image_processor.to_dict().get("crop_size"),
    }, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class VQCodeCache:
    """Maps image paths to image-token ids (2, L): row 0 the photo, row 1 its mirror image."""

    def __init__(self, backbone, cache_dir: str | Path | None):
        self.backbone = backbone
        self.directory = Path(cache_dir) / tokenizer_key(backbone) if cache_dir else None
        self.memory: dict[str, torch.Tensor] = {}
        self._digests: dict[tuple, str] = {}  # (path, size, mtime) -> content hash: hash each file once
        self.encoded = 0  # how many images this instance actually ran through the VQ encoder

    def codes(self, path: str | Path) -> torch.Tensor:
        """Image-token ids for `path`, shape (2, image_seq_length), from cache when possible."""
        stat = Path(path).stat()
        identity = (str(path), stat.st_size, stat.st_mtime_ns)
        if identity not in self._digests:  # training asks for the same photos every step
            self._digests[identity] = file_digest(path)
        key = self._digests[identity]
        if key in self.memory:
            return self.memory[key]
        stored = self.directory / f"{key}.safetensors" if self.directory else None
        if stored is not None and stored.exists():
            codes = load_file(str(stored))["ids"]
        else:
            codes = self._encode(path)
            if stored is not None:
                stored.parent.mkdir(parents=True, exist_ok=True)
                tmp = stored.with_name(f".{stored.name}.{os.getpid()}.tmp")  # ranks may write at once
                save_file({"ids": codes}, str(tmp))
                tmp.replace(stored)
        self.memory[key] = codes
        return codes

    def warm(self, paths, progress=None) -> None:
        """Make sure every path is encoded (shows progress on first use)."""
        for path in paths:
            self.codes(path)
            if progress is not None:
                progress.update(1)

    def _encode(self, path) -> torch.Tensor:
        image = load_image(path)
        pixels = self.backbone.processor.image_processor(
            [image, ImageOps.mirror(image)], return_tensors="pt")["pixel_values"]
        self.encoded += 1
        return self.backbone.encode_images(pixels).cpu()
