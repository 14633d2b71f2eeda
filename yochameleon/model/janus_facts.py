"""Janus's token facts, sampling defaults and image codec: the parts `JanusBackbone` composes.

The same members as Chameleon's parts (`model/token_facts.py`, `model/sampling_defaults.py`,
`model/image_codec.py`), read Janus's way (see `model/janus.py` for the id layout): ids come
from the tokenizer, drawn images are generation codes `V + c` after the text vocabulary, a shown
image is an `ImageBank` slot of vision features, and guidance is the generation_config's.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from yochameleon.errors import BackboneError
from yochameleon.model.image_codec import ImageCodec
from yochameleon.model.sampling_defaults import SamplingDefaults
from yochameleon.model.token_facts import ImageTokenMap


class JanusTokenFacts:
    """The ids of a Janus checkpoint: its tokenizer's specials, the unused rows named at load time, the codes."""

    def __init__(self, model, tokenizer, path: Path):
        self.model, self.tokenizer, self.path = model, tokenizer, path

    @cached_property
    def vocabulary_map(self) -> dict[str, int]:
        return dict(self.tokenizer.get_vocab())

    @property
    def logits_width(self) -> int:
        """The language head's columns, then the generation head's over the codes."""
        return self.model.text_vocab_size + self.model.num_codes

    @cached_property
    def image_map(self) -> ImageTokenMap:
        codes = torch.arange(self.model.num_codes)
        return ImageTokenMap(codes, codes + self.model.text_vocab_size, self.logits_width)

    def token_id(self, token: str) -> int:
        ids = self.tokenizer.convert_tokens_to_ids([token])
        if not ids or ids[0] is None or ids[0] == self.tokenizer.unk_token_id:
            raise BackboneError(f"token {token!r} is not in the tokenizer of {self.path}")
        return int(ids[0])

    @cached_property
    def bos_id(self) -> int:
        return int(self.tokenizer.bos_token_id)

    @cached_property
    def end_of_turn_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @cached_property
    def boi_id(self) -> int:
        return self.token_id(self.tokenizer.boi_token)

    @cached_property
    def eoi_id(self) -> int:
        return self.token_id(self.tokenizer.eoi_token)

    @cached_property
    def reserved_ids(self) -> list[int]:
        """The unused rows a concept may live on (named `<reservedNNNNN>` at load time)."""
        return [i for name, i in self.vocabulary_map.items() if name.startswith("<reserved")]

    def text_stop_ids(self) -> list[int]:
        return [self.end_of_turn_id]

    def text_banned_ids(self, allow=()) -> torch.Tensor:
        """(logits_width,) bool: every image code, begin-of-image, the image placeholder and every unused
        row except the ids in `allow` (a loaded concept's identifier)."""
        banned = self.image_map.is_image_token.clone()
        banned[[self.boi_id, self.token_id(self.tokenizer.image_token)]] = True
        banned[self.reserved_ids] = True
        banned[list(allow)] = False
        return banned


class JanusSamplingDefaults(SamplingDefaults):
    """Chameleon's rule with Janus's guidance: the checkpoint's recorded settings, else its generation_config's."""

    def __init__(self, path: Path, model):
        super().__init__(path)
        self.model = model

    @property
    def default_guidance(self) -> float:
        """Janus generates with classifier-free guidance: its generation_config's scale (Janus-Pro: 5)."""
        scale = getattr(self.model.generation_config, "guidance_scale", None)
        return float(scale) if scale else 5.0


class JanusImageCodec(ImageCodec):
    """A shown image is an `ImageBank` slot of SigLIP features; a drawn one is generation codes `V + c`."""

    def __init__(self, model, image_processor, path: Path):
        super().__init__(model, image_processor)
        self.path = path

    @property
    def pixel_scale(self) -> float:
        """Janus-Pro normalises with mean = std = 0.5: pixel = (x * 0.5 + 0.5) / rescale = (x + 1) / (2 * rescale)."""
        processor = self.image_processor
        if list(processor.image_mean) != [0.5] * 3 or list(processor.image_std) != [0.5] * 3:
            raise BackboneError(f"{self.path}: the image processor normalises with mean {processor.image_mean} / std "
                                f"{processor.image_std}, not Janus-Pro's 0.5 / 0.5; drawn images would be mis-scaled")
        return 2.0 * float(processor.rescale_factor)

    @cached_property
    def image_seq_length(self) -> int:
        return int(self.model.config.vision_config.num_image_tokens)

    def shown_image_codes(self, image, flip: bool = False, cache=None) -> list[int]:
        """Ids standing for the image's vision-encoder features (an `ImageBank` slot; `cache` unused)."""
        return self.model.image_bank.ids(image, flip)

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) -> generation-code ids `V + code` (B, image_seq_length)."""
        vq = self.model.model.vqmodel
        pixel_values = pixel_values.to(device=self.device, dtype=vq.quant_conv.weight.dtype)
        codes = vq.encode(pixel_values).image_tokens.view(len(pixel_values), -1)
        return codes.long() + self.model.text_vocab_size

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """VQ codes (B, image_seq_length) -> pixels (B, 3, H, W), roughly in [-1, 1] (Janus's decoder).

        Under ZeRO-3 the codebook lookup reads the partitioned codebook outside a module call (the
        decoder's modules gather their own weights), so only the quantizer is gathered first; every rank
        draws, so every rank enters."""
        vq = self.model.model.vqmodel
        partitioned = [p for p in vq.quantize.parameters() if hasattr(p, "ds_id")]
        if not partitioned:
            return vq.decode(codes)
        import deepspeed

        with deepspeed.zero.GatheredParameters(partitioned):
            return vq.decode(codes)
