"""Generation similarity: CLIP-I, CLIP-T (open_clip) and DINO (transformers), from local checkpoints only.

CLIP-I is the mean cosine between every generated image and every real photo of the
subject (as in DreamBooth and Yo'Chameleon); CLIP-T the mean cosine between each image
and its own prompt; DINO the CLIP-I computation with a self-supervised ViT's CLS embedding.

Nothing here downloads: open_clip weights come from a local file (`clip.checkpoint` in
yochameleon/conf/eval.yaml), the DINO model from a local Hugging Face directory (`dino.checkpoint`),
and a CLIP tokenizer that would have to be fetched from the hub is refused with an error.
`build_tiny_clip` / `build_tiny_dino` write random-weight encoders that take the same
loading paths, for tests and the demo.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from yochameleon.errors import YoChameleonError

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

TINY_CLIP = "yc-tiny-clip"
# The DINO processor's normalisation: ImageNet statistics, as in facebook/dinov2-*.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class SimilarityError(YoChameleonError):
    """An encoder checkpoint or tokenizer for the similarity metrics is missing or does not fit."""


# ---- shared ---------------------------------------------------------------------------------------------
def pairwise_mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine over all pairs of rows: mean of a @ b.T for unit vectors a (N, D) and b (M, D)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"pairwise_mean_cosine needs (N, D) and (M, D) tensors, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if len(a) == 0 or len(b) == 0:
        raise ValueError("pairwise_mean_cosine needs at least one vector on each side")
    return float((a.float() @ b.float().T).mean())


def _check_images(images: list, what: str) -> None:
    """Reject an empty image list early (torch.cat would fail with an obscure message)."""
    if len(images) == 0:
        raise ValueError(f"{what}: no images given")


def _batched_embeddings(images: list, batch_size: int, embed) -> torch.Tensor:
    """Run `embed` (a list of images -> (B, D) tensor) over batches; (N, D) float unit vectors on CPU."""
    out = []
    for start in range(0, len(images), batch_size):
        out.append(F.normalize(embed(images[start:start + batch_size]).float(), dim=-1).cpu())
    return torch.cat(out)


# ---- CLIP ---------------------------------------------------------------------------------------------
def resolve_clip_model_name(model_name: str) -> str:
    """The open_clip name to build: a built-in name as is, or a config JSON registered with open_clip.

    A path ending in .json is an architecture open_clip does not ship (e.g. the tiny test
    model): it is registered with `open_clip.add_model_config` and its file stem is the name.
    `local-dir:<directory>` names pass through to open_clip unchanged.
    Names that open_clip would resolve on the Hugging Face Hub (hf-hub:...) are refused.
    """
    import open_clip

    if model_name.startswith("hf-hub:"):
        raise SimilarityError(f"clip.model {model_name!r} would be downloaded from the Hugging Face Hub; give a "
                              "built-in open_clip name (e.g. ViT-B-32) or the path of a model config JSON, and "
                              "the local weights as clip.checkpoint")
    if model_name.endswith(".json"):
        path = Path(model_name).expanduser()
        if not path.is_file():
            raise SimilarityError(f"clip.model {path} does not exist; give an open_clip model name (e.g. ViT-B-32) "
                                  "or the path of an open_clip model config JSON")
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SimilarityError(f"clip.model {path} is not a readable JSON model config ({err})") from err
        if not isinstance(config, dict) or "vision_cfg" not in config or "text_cfg" not in config:
            raise SimilarityError(f"clip.model {path} is not an open_clip model config (it needs embed_dim, "
                                  "vision_cfg and text_cfg)")
        open_clip.add_model_config(path)
        return path.stem
    if model_name.startswith("local-dir:"):  # open_clip reads the config (and tokenizer) from that directory
        return model_name
    if open_clip.get_model_config(model_name) is None:
        raise SimilarityError(f"clip.model {model_name!r} is not an open_clip architecture; pick one of "
                              "open_clip.list_models() (e.g. ViT-B-32) or give the path of a model config JSON")
    return model_name


def clip_tokenizer(model_name: str):
    """open_clip's tokenizer for a resolved model name, without touching the network.

    Standard CLIP models use open_clip's SimpleTokenizer, whose BPE vocabulary ships inside
    the open_clip package. Models whose text tower uses a Hugging Face tokenizer
    (text_cfg.hf_tokenizer_name) load it with local_files_only=True, so it must be a local
    directory or already in the Hugging Face cache; otherwise a SimilarityError says so.
    """
    import open_clip

    config = open_clip.get_model_config(model_name) or {}
    hf_name = (config.get("text_cfg") or {}).get("hf_tokenizer_name")
    if hf_name:
        try:
            return open_clip.get_tokenizer(model_name, local_files_only=True)
        except (OSError, ValueError) as err:
            raise SimilarityError(
                f"open_clip model {model_name!r} tokenizes prompts with the Hugging Face tokenizer {hf_name!r}, "
                "which is not available locally and will not be downloaded. Put a copy in the Hugging Face cache "
                "(or point text_cfg.hf_tokenizer_name of a model config JSON given as clip.model at a local "
                f"directory), or use a standard CLIP architecture such as ViT-B-32 ({str(err)[:200]})") from err
    if "siglip" in model_name.lower():
        # open_clip would fetch a sentencepiece vocabulary from storage.googleapis.com.
        raise SimilarityError(f"open_clip model {model_name!r} needs a SigLIP tokenizer vocabulary from the "
                              "internet; use a standard CLIP architecture (e.g. ViT-B-32) for clip.model")
    return open_clip.get_tokenizer(model_name)


class ClipScorer:
    """An open_clip model from a local checkpoint file (never downloaded): CLIP-I and CLIP-T."""

    def __init__(self, model_name: str, checkpoint: str | Path, device: str | torch.device = "cpu",
                 batch_size: int = 32):
        """model_name: an open_clip architecture (ViT-B-32) or a model config JSON path; checkpoint: weights file."""
        import open_clip

        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise SimilarityError(f"CLIP checkpoint {path} does not exist; set clip.checkpoint (yochameleon/conf/eval.yaml, "
                                  f"e.g. `python -m evaluation.run clip.checkpoint=/path/open_clip_model.safetensors`) "
                                  f"to local open_clip weights for {model_name}, or clip.checkpoint=null to skip "
                                  "CLIP-I/CLIP-T")
        name = resolve_clip_model_name(str(model_name))
        self.tokenizer = clip_tokenizer(name)  # before the (slow) model build: fail early
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(path), device=device)
        except (RuntimeError, KeyError, ValueError, AssertionError, OSError) as err:
            raise SimilarityError(f"{path} does not fit open_clip model {name!r} ({str(err)[:300]}); set "
                                  "clip.model to the architecture the checkpoint was trained with") from err
        self.model_name, self.checkpoint = name, path
        self.model, self.preprocess = model.eval(), preprocess
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        """(N, D) unit vectors of PIL images."""
        _check_images(images, "image_embeddings")

        def embed(batch: list) -> torch.Tensor:
            pixels = torch.stack([self.preprocess(im) for im in batch]).to(self.device)
            return self.model.encode_image(pixels)

        return _batched_embeddings(images, self.batch_size, embed)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(N, D) unit vectors of texts (truncated to the model's context length by the tokenizer)."""
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError("text_embeddings needs a non-empty list of strings")
        return _batched_embeddings(list(texts), self.batch_size,
                                   lambda batch: self.model.encode_text(self.tokenizer(batch).to(self.device)))

    def clip_i(self, generated: list[Image.Image], references: list[Image.Image]) -> float:
        """Mean cosine over all (generated, reference) pairs of image embeddings."""
        _check_images(generated, "clip_i generated")
        _check_images(references, "clip_i references")
        return pairwise_mean_cosine(self.image_embeddings(generated), self.image_embeddings(references))

    def clip_t(self, generated: list[Image.Image], prompts: list[str]) -> float:
        """Mean cosine between each generated image and its own prompt (prompts[i] belongs to generated[i])."""
        if isinstance(prompts, str) or len(generated) != len(prompts):
            count = "a single string" if isinstance(prompts, str) else f"{len(prompts)} prompts"
            raise ValueError(f"clip_t needs one prompt per image ({len(generated)} images, {count})")
        _check_images(generated, "clip_t")
        return float((self.image_embeddings(generated) * self.text_embeddings(prompts)).sum(-1).mean())


# ---- DINO ---------------------------------------------------------------------------------------------
class DinoScorer:
    """A self-supervised ViT (e.g. a local copy of facebook/dinov2-small) in Hugging Face format.

    The embedding of an image is the CLS token of the last hidden state, L2-normalised.
    """

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu", batch_size: int = 32):
        """checkpoint: a directory with config.json, the weights and preprocessor_config.json."""
        from transformers import AutoImageProcessor, AutoModel

        path = Path(checkpoint).expanduser()
        if not (path / "config.json").is_file():
            what = "does not exist" if not path.exists() else "is not a Hugging Face model directory (no config.json)"
            raise SimilarityError(f"DINO checkpoint {path} {what}; set dino.checkpoint (yochameleon/conf/eval.yaml) to a local "
                                  "copy of e.g. facebook/dinov2-small, or dino.checkpoint=null to skip DINO")
        try:
            model, info = AutoModel.from_pretrained(str(path), local_files_only=True, output_loading_info=True)
            self.processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
        except RuntimeError as err:  # transformers refuses weights whose shapes differ from config.json
            raise SimilarityError(_MISFIT.format(path=path, detail=str(err)[:300])) from err
        except (OSError, ValueError, KeyError) as err:
            raise SimilarityError(f"DINO checkpoint {path} cannot be loaded ({str(err)[:300]}); dino.checkpoint "
                                  "must be a complete Hugging Face directory (config.json, model weights, "
                                  "preprocessor_config.json) such as a copy of facebook/dinov2-small") from err
        _check_loading_info(path, info)
        self.checkpoint = path
        self.model = model.to(device).eval()
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        """(N, D) unit vectors: the CLS token of the last hidden state."""
        _check_images(images, "image_embeddings")

        def embed(batch: list) -> torch.Tensor:
            pixels = self.processor(images=[im.convert("RGB") for im in batch], return_tensors="pt")["pixel_values"]
            return self.model(pixel_values=pixels.to(self.device)).last_hidden_state[:, 0]

        return _batched_embeddings(images, self.batch_size, embed)

    def dino(self, generated: list[Image.Image], references: list[Image.Image]) -> float:
        """Mean cosine over all (generated, reference) pairs of DINO embeddings."""
        _check_images(generated, "dino generated")
        _check_images(references, "dino references")
        return pairwise_mean_cosine(self.image_embeddings(generated), self.image_embeddings(references))


_MISFIT = ("DINO checkpoint {path}: the weights do not fit its config.json ({detail}); give dino.checkpoint a "
           "directory whose config and weights belong together (an unmodified copy of e.g. facebook/dinov2-small)")


def _check_loading_info(path: Path, info: dict) -> None:
    """Refuse weights that do not fit the config: transformers would re-initialise missing ones at random."""
    missing, mismatched = sorted(info.get("missing_keys") or []), sorted(info.get("mismatched_keys") or [])
    if missing or mismatched:
        shown = [str(k) for k in (mismatched or missing)[:3]]
        detail = (f"{len(missing)} weights missing, {len(mismatched)} of the wrong shape, e.g. {shown}; they would "
                  "be scored with random values")
        raise SimilarityError(_MISFIT.format(path=path, detail=detail))
    if info.get("unexpected_keys"):
        log.warning("DINO checkpoint %s: %d weights not used by the model (e.g. %s)", path,
                    len(info["unexpected_keys"]), sorted(info["unexpected_keys"])[:3])


# ---- tiny random encoders: the same loading paths in tests and demos, no downloads -------------------------
def tiny_clip_config() -> dict:
    """open_clip config of a tiny ViT CLIP that keeps the standard tokenizer (vocab 49408, context 77)."""
    return {"embed_dim": 32,
            "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def build_tiny_clip(directory: str | Path, seed: int = 0) -> tuple[str, Path]:
    """A random-weight open_clip ViT saved into `directory`; returns (config JSON path, checkpoint path).

    The JSON path works as `clip.model` and as ClipScorer's model_name (it is registered with
    open_clip there, so it also works in a fresh process); the checkpoint is a plain state_dict
    loaded through `create_model_and_transforms(..., pretrained=<file>)`.
    """
    import open_clip

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / f"{TINY_CLIP}.json"
    config_path.write_text(json.dumps(tiny_clip_config(), indent=2))
    open_clip.add_model_config(config_path)
    torch.manual_seed(seed)
    model = open_clip.create_model(TINY_CLIP)
    checkpoint = directory / "open_clip_model.bin"
    torch.save(model.state_dict(), checkpoint)
    return str(config_path), checkpoint


def build_tiny_dino(directory: str | Path, seed: int = 0) -> Path:
    """A random-weight Dinov2 and its image processor, saved with save_pretrained into `directory`.

    The processor mirrors facebook/dinov2-* (BitImageProcessor: bicubic resize of the shortest
    edge, center crop, ImageNet mean/std) at 64 pixels instead of 256/224.
    """
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=8, image_size=64)
    Dinov2Model(config).save_pretrained(directory)
    BitImageProcessor(do_resize=True, size={"shortest_edge": 64}, resample=3, do_center_crop=True,
                      crop_size={"height": 64, "width": 64}, do_rescale=True, rescale_factor=1 / 255,
                      do_normalize=True, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                      do_convert_rgb=True).save_pretrained(directory)
    return directory
