"""Generation similarity: CLIP-I, CLIP-T (open_clip) and DINO (transformers), from local checkpoints only.

CLIP-I is the mean cosine between every generated image and every real photo of the
subject (as in DreamBooth and Yo'Chameleon); CLIP-T the mean cosine between each image
and its prompt; DINO the CLIP-I computation with a self-supervised ViT's CLS embedding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from yochameleon.errors import YoChameleonError


class SimilarityError(YoChameleonError):
    """An encoder checkpoint is missing or does not fit."""


def pairwise_mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean of a @ b.T for unit vectors a (N, D) and b (M, D)."""
    return float((a @ b.T).mean())


class ClipScorer:
    """open_clip model from a local checkpoint file (never downloaded)."""

    def __init__(self, model_name: str, checkpoint: str | Path, device: str = "cpu", batch_size: int = 32):
        import open_clip

        if model_name.endswith(".json"):  # an architecture open_clip does not ship: register its config file
            if not Path(model_name).is_file():
                raise SimilarityError(f"clip.model {model_name} does not exist; give an open_clip model name "
                                      "(e.g. ViT-B-32) or the path of a model config JSON")
            open_clip.add_model_config(model_name)
            model_name = Path(model_name).stem
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise SimilarityError(f"CLIP checkpoint {path} does not exist; set clip.checkpoint to local open_clip "
                                  f"weights for {model_name} (or clip.checkpoint=null to skip CLIP-I/CLIP-T)")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(path),
                                                                         device=device)
        except (RuntimeError, KeyError, ValueError, AssertionError) as err:
            raise SimilarityError(f"{path} does not fit open_clip model {model_name!r} ({str(err)[:300]}); set "
                                  "clip.model to the architecture the checkpoint was trained with") from err
        self.model, self.preprocess = model.eval(), preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def image_embeddings(self, images) -> torch.Tensor:
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[start:start + self.batch_size]])
            out.append(F.normalize(self.model.encode_image(batch.to(self.device)).float(), dim=-1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()

    def clip_i(self, generated, references) -> float:
        return pairwise_mean_cosine(self.image_embeddings(generated), self.image_embeddings(references))

    def clip_t(self, generated, prompts: list[str]) -> float:
        if len(generated) != len(prompts):
            raise ValueError(f"clip_t needs one prompt per image ({len(generated)} images, {len(prompts)} prompts)")
        return float((self.image_embeddings(generated) * self.text_embeddings(prompts)).sum(-1).mean())


class DinoScorer:
    """A self-supervised ViT (e.g. a local copy of facebook/dinov2-small) in HF format."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", batch_size: int = 32):
        from transformers import AutoImageProcessor, AutoModel

        path = Path(checkpoint).expanduser()
        if not (path / "config.json").is_file():
            raise SimilarityError(f"DINO checkpoint {path} is not a Hugging Face model directory (no config.json); "
                                  "set dino.checkpoint to a local copy of e.g. facebook/dinov2-small, or null")
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self.processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def image_embeddings(self, images) -> torch.Tensor:
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.processor(images[start:start + self.batch_size], return_tensors="pt")["pixel_values"]
            hidden = self.model(pixel_values=pixels.to(self.device)).last_hidden_state[:, 0]
            out.append(F.normalize(hidden.float(), dim=-1).cpu())
        return torch.cat(out)

    def dino(self, generated, references) -> float:
        return pairwise_mean_cosine(self.image_embeddings(generated), self.image_embeddings(references))


# ---- tiny random encoders: the same code paths in tests and demos, no downloads --------------------------
TINY_CLIP = "yc-tiny-clip"


def build_tiny_clip(directory: str | Path) -> tuple[str, Path]:
    """A random-weight open_clip ViT saved to a file; returns (config JSON path, checkpoint path).

    The JSON path works as `clip.model` (ClipScorer registers it with open_clip).
    """
    import open_clip

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"embed_dim": 32,
              "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    (directory / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(directory / f"{TINY_CLIP}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP)
    path = directory / "open_clip_model.bin"
    torch.save(model.state_dict(), path)
    return str(directory / f"{TINY_CLIP}.json"), path


def build_tiny_dino(directory: str | Path) -> Path:
    """A random-weight Dinov2 with a 64-pixel BitImageProcessor, saved with save_pretrained."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    directory = Path(directory)
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             patch_size=8, image_size=64)).save_pretrained(directory)
    BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(directory)
    return directory
