"""A Chameleon backbone's image codec: images <-> the ids a prompt holds, and codes back to pixels.

One part of a backbone family (`Backbone.codec`); Janus's version (SigLIP slots for a shown image,
a separate VQ tokenizer for a drawn one) is `model/janus_facts.py`. On Chameleon an image is the
same VQ image tokens whether it is shown or drawn.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch


class ImageCodec:
    """Pixels, VQ image-token ids and decoded pixels of a Chameleon / Anole model and its image processor."""

    def __init__(self, model, image_processor):
        self.model, self.image_processor = model, image_processor

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def pixel_scale(self) -> float:
        """`to_pil`'s factor: decoder output x in [-1, 1] -> (x + 1) / pixel_scale in [0, 255]."""
        return float(self.image_processor.rescale_factor)

    @cached_property
    def image_seq_length(self) -> int:
        """VQ codes per image: (resolution / 2^(levels-1))^2."""
        vq = self.model.config.vq_config
        side = vq.resolution // 2 ** (len(vq.channel_multiplier) - 1)
        return side * side

    def pixels(self, images) -> torch.Tensor:
        """PIL images -> the processor's pixel tensor (B, 3, H, W)."""
        return self.image_processor(images, return_tensors="pt")["pixel_values"]

    def shown_image_codes(self, image, flip: bool = False, cache=None) -> list[int]:
        """The ids an image *shown* in a prompt takes: on Chameleon the image tokens it would draw."""
        return self.image_codes(image, flip, cache)

    def image_codes(self, image, flip: bool = False, cache=None) -> list[int]:
        """An image's VQ image-token ids (mirrored when `flip`): a path from `cache`, a PIL image encoded now."""
        if isinstance(image, (str, Path)):
            return cache.codes(image)[int(flip)].tolist()
        if flip:
            from PIL import ImageOps

            image = ImageOps.mirror(image)
        return self.encode_images(self.pixels(image))[0].tolist()

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) -> image-token vocabulary ids (B, image_seq_length)."""
        vq = self.model.model.vqmodel
        pixel_values = pixel_values.to(device=self.device, dtype=vq.quant_conv.weight.dtype)
        return self.model.model.get_image_tokens(pixel_values).long()

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """VQ codes (B, image_seq_length) -> pixels (B, 3, H, W), roughly in [-1, 1] (the Anole decoder)."""
        vq = self.model.model.vqmodel
        side = int(self.image_seq_length ** 0.5)
        latent = vq.quantize.embedding(codes).view(len(codes), side, side, -1).permute(0, 3, 1, 2).contiguous()
        return vq.decoder(vq.post_quant_conv(latent))
