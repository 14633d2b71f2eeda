"""Image generation: constrained image-token sampling and VQ decoding to pixels.

After the prompt (which ends with begin-of-image), exactly one image's worth of
tokens is sampled, each restricted to the image-token ids of the vocabulary,
with a KV cache, temperature / top-k / top-p and optional classifier-free
guidance (conditional and unconditional prompts in one batch). The codes are
then decoded by the Anole VQ decoder and post-processed the way the Anole
processor does: pixels = clip((x + 1) / rescale_factor, 0, 255) as uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import DynamicCache

from yochameleon.errors import YoChameleonError
from yochameleon.model.decoding import left_pad


class GenerationUnavailable(YoChameleonError):
    """The backbone cannot draw images (no VQ decoder weights in the checkpoint)."""


@dataclass
class SamplingConfig:
    """How to pick each image token; temperature 0 means greedy."""

    temperature: float = 1.0
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # 1.0 = no nucleus filter
    guidance_scale: float = 1.0  # 1.0 = no classifier-free guidance

    def validate(self) -> None:
        """Reject values that have no meaning."""
        if self.temperature < 0:
            raise YoChameleonError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise YoChameleonError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise YoChameleonError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.guidance_scale < 0:
            raise YoChameleonError(f"guidance scale must be >= 0 (1 = off), got {self.guidance_scale}")


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus (top-p) filtering of (B, V) logits; filtered entries become -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return logits


def pick_tokens(logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Indices into the logits' last dimension: argmax, or a sample after temperature and filters."""
    if sampling.temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / sampling.temperature, sampling.top_k, sampling.top_p)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


def weight_rows(weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """weight[rows], also when DeepSpeed ZeRO-3 has partitioned the weight (then every rank must call
    this: the whole weight is gathered from all ranks while the rows are copied out)."""
    if not hasattr(weight, "ds_id"):  # an ordinary parameter
        return weight[rows]
    import deepspeed

    with deepspeed.zero.GatheredParameters([weight], modifier_rank=None):
        return weight[rows]  # a copy (advanced indexing), still whole after the gather ends


@torch.no_grad()
def sample_image_tokens(model, backbone, prompts: list[list[int]], sampling: SamplingConfig,
                        uncond_prompts: list[list[int]] | None = None, generator: torch.Generator | None = None,
                        use_cache: bool = True, progress=None) -> torch.Tensor:
    """Image-token vocabulary ids (B, image_seq_length) for prompts that end with begin-of-image.

    `model` is a `PersonalizedChameleon`; with `uncond_prompts` and guidance_scale != 1 the
    conditional and unconditional prompts run as one batch of 2B rows.
    """
    sampling.validate()
    guided = uncond_prompts is not None and sampling.guidance_scale != 1.0
    rows = prompts + (uncond_prompts if guided else [])
    device = backbone.device
    ids, mask = left_pad(rows, backbone.tokenizer.pad_token_id)
    ids, mask = ids.to(device), mask.to(device)
    image_ids = backbone.image_map.image_token_ids.to(device)  # the only ids that may be sampled
    image_logits = backbone.image_scorer()  # hidden -> logits over those ids (the family's image head)
    count, out = len(prompts), []
    cache = DynamicCache(config=backbone.config) if use_cache else None
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    hidden, cache = model.hidden_states(ids, mask, position_ids, cache, use_cache=use_cache)
    for _ in range(backbone.image_seq_length):
        logits = image_logits(hidden[:, -1]).float()  # (rows, n_image_tokens)
        if guided:
            cond, uncond = logits[:count], logits[count:]
            logits = uncond + sampling.guidance_scale * (cond - uncond)
        chosen = image_ids[pick_tokens(logits, sampling, generator)]  # (B,)
        out.append(chosen)
        step = chosen.repeat(2) if guided else chosen
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if progress is not None:
            progress.update(1)
        if use_cache:
            position_ids = position_ids[:, -1:] + 1
            hidden, cache = model.hidden_states(step[:, None], mask, position_ids, cache, use_cache=True)
        else:  # the slow reference path: re-run the whole sequence every token (benchmarks only)
            ids = torch.cat([ids, step[:, None]], dim=1)
            hidden, _ = model.hidden_states(ids, mask, (mask.cumsum(-1) - 1).clamp(min=0))
    return torch.stack(out, dim=1)


def require_decoder(backbone) -> None:
    """Raise, before any work, when the checkpoint has no VQ decoder weights."""
    if not backbone.has_decoder:
        raise GenerationUnavailable(
            f"{backbone.path} has no VQ decoder weights (model.vqmodel.decoder.*), so it cannot draw images. "
            "facebook/chameleon-7b ships without them; use an Anole checkpoint such as leloy/Anole-7b-v0.1-hf "
            "for image generation (understanding works with both).")


@torch.no_grad()
def decode_image_tokens(backbone, token_ids: torch.Tensor) -> torch.Tensor:
    """Image-token vocabulary ids (B, L) -> pixels (B, 3, H, W), roughly in [-1, 1]."""
    require_decoder(backbone)
    if token_ids.shape[1] != backbone.image_seq_length:
        raise ValueError(f"an image is {backbone.image_seq_length} tokens, got {token_ids.shape[1]}")
    return backbone.decode_codes(backbone.image_map.ids_to_codes(token_ids.to(backbone.device)))


def draw(model, backbone, prompts: list[list[int]], uncond_prompts: list[list[int]], sampling: SamplingConfig,
         generator: torch.Generator | None, batch_size: int, bar=None) -> list[Image.Image]:
    """One image per prompt (with its unconditional prompt for guidance), `batch_size` prompts per
    sampling call, in order from one generator; `bar` (a tqdm bar) counts the image tokens drawn."""
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        cond, uncond = prompts[start:start + batch_size], uncond_prompts[start:start + batch_size]
        tokens = sample_image_tokens(model, backbone, cond, sampling, uncond, generator,
                                     progress=None if bar is None else _Scaled(bar, len(cond)))
        images += to_pil(decode_image_tokens(backbone, tokens), backbone.pixel_scale)
    return images


class _Scaled:
    """Counts one sampling step of a batch as `rows` tokens on a tqdm bar."""

    def __init__(self, bar, rows: int):
        self.bar, self.rows = bar, rows

    def update(self, steps: int) -> None:
        self.bar.update(steps * self.rows)


def to_pil(pixels: torch.Tensor, rescale_factor: float) -> list[Image.Image]:
    """Decoder output (B, 3, H, W) -> PIL images, as the Anole processor's postprocess does."""
    array = pixels.detach().float().cpu().numpy().transpose(0, 2, 3, 1)
    array = ((array + 1.0).astype(np.float64) * (1.0 / rescale_factor)).astype(np.float32)
    return [Image.fromarray(image.clip(0, 255).astype(np.uint8)) for image in array]
