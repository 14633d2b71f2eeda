"""Image embedders for retrieval: open_clip from a local checkpoint, or a weight-free fallback.

An embedder maps PIL images to L2-normalised vectors; cosine similarity is their dot
product. `key` identifies the embedder and its weights, so cached embeddings and
preparations are invalidated when it changes.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from yochameleon.errors import YoChameleonError

log = logging.getLogger(__name__)


class EmbedderError(YoChameleonError):
    """The configured embedder cannot be built from its local checkpoint."""


class OpenClipEmbedder:
    """open_clip image tower loaded from a local checkpoint file (never downloaded)."""

    quality = "clip"

    def __init__(self, model_name: str, checkpoint: str | Path, device: str | torch.device = "cpu",
                 batch_size: int = 32):
        import open_clip

        self.key = open_clip_key(model_name, checkpoint)  # also checks that the file exists
        checkpoint = Path(checkpoint).expanduser()
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(checkpoint),
                                                                         device=device)
        except (RuntimeError, KeyError, ValueError, AssertionError) as err:
            raise EmbedderError(f"{checkpoint} does not fit open_clip model {model_name!r} ({str(err)[:300]}). "
                                "Set retrieval.model to the architecture the checkpoint was trained with.") from err
        self.model, self.preprocess = model.eval(), preprocess
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def embed(self, images) -> torch.Tensor:
        """(N, D) unit vectors."""
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[start:start + self.batch_size]]).to(self.device)
            out.append(F.normalize(self.model.encode_image(batch).float(), dim=-1).cpu())
        return torch.cat(out)


class VQFeatureEmbedder:
    """Fallback without extra weights: pooled features of the backbone's own VQ encoder.

    Much weaker than CLIP (it was trained to reconstruct pixels, not to tell subjects
    apart); good enough to run the pipeline, and announced loudly when used.
    """

    quality = "fallback"

    def __init__(self, backbone, batch_size: int = 16):
        self.backbone, self.batch_size = backbone, batch_size
        self.key = vq_feature_key(backbone)
        log.warning("retrieval: no CLIP checkpoint configured (retrieval.checkpoint), falling back to pooled VQ-encoder "
                    "features of the backbone. Hard negatives and soft positives will be of LOWER QUALITY; set "
                    "retrieval.model and retrieval.checkpoint to a local open_clip checkpoint for real retrieval.")

    @torch.no_grad()
    def embed(self, images) -> torch.Tensor:
        """(N, D) unit vectors: mean and max pooled encoder latents, concatenated."""
        vq = self.backbone.model.model.vqmodel
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.backbone.processor.image_processor(images[start:start + self.batch_size],
                                                             return_tensors="pt")["pixel_values"]
            latents = vq.quant_conv(vq.encoder(pixels.to(self.backbone.device, vq.quant_conv.weight.dtype))).float()
            pooled = torch.cat([latents.mean(dim=(2, 3)), latents.amax(dim=(2, 3))], dim=1)
            out.append(F.normalize(pooled - pooled.mean(dim=1, keepdim=True), dim=-1).cpu())
        return torch.cat(out)


def open_clip_key(model_name: str, checkpoint: str | Path) -> str:
    """Cache key of an open_clip embedder: architecture + checkpoint file identity."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise EmbedderError(f"retrieval.checkpoint {path} does not exist; give the local open_clip weights for "
                            f"{model_name} (e.g. open_clip_pytorch_model.bin or .safetensors), or set "
                            "retrieval.checkpoint=null to use the weight-free fallback")
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"open_clip:{model_name}:{digest}"


def vq_feature_key(backbone) -> str:
    """Cache key of the fallback embedder: a checksum of the backbone's VQ encoder."""
    vq = backbone.model.model.vqmodel
    return f"vq-features:{float(vq.quant_conv.weight.double().abs().sum()):.6e}"


def embedder_key(retrieval_cfg, backbone) -> str:
    """The key `build_embedder` would give, without building it (open_clip takes seconds to build)."""
    if retrieval_cfg.get("checkpoint"):
        return open_clip_key(str(retrieval_cfg.model), retrieval_cfg.checkpoint)
    return vq_feature_key(backbone)


def build_embedder(retrieval_cfg, backbone):
    """The embedder a `retrieval` config asks for."""
    if retrieval_cfg.get("checkpoint"):
        return OpenClipEmbedder(str(retrieval_cfg.model), retrieval_cfg.checkpoint, device=backbone.device)
    return VQFeatureEmbedder(backbone)
