"""Load a frozen Chameleon / Anole backbone from a local HF directory.

One path for every size: the tiny test model is built once and then read back
through exactly the `from_pretrained` call that loads the 7B checkpoints.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from transformers import ChameleonForConditionalGeneration, ChameleonProcessor

from yochameleon.errors import YoChameleonError
from yochameleon.model.vq_decoder import ChameleonVQDecoder

log = logging.getLogger(__name__)

DECODER_PREFIX = "model.vqmodel.decoder."
DTYPES = ("auto", "float32", "bfloat16", "float16")
EXPECTED_LAYOUT = (
    "a Hugging Face Chameleon/Anole directory containing config.json (model_type 'chameleon' with a "
    "vocabulary_map), model.safetensors or model.safetensors.index.json with its shards, tokenizer.json, "
    "tokenizer_config.json and preprocessor_config.json / processor_config.json; for example a local copy of "
    "leloy/Anole-7b-v0.1-hf (image generation) or facebook/chameleon-7b (understanding only)"
)


class BackboneError(YoChameleonError):
    """The backbone directory is missing or not a Chameleon checkpoint."""


class YoChameleonForConditionalGeneration(ChameleonForConditionalGeneration):
    """Upstream Chameleon plus the Anole VQ decoder at `model.vqmodel.decoder`.

    The decoder is a submodule so Anole-hf decoder weights load by name (no
    'unexpected keys'); a checkpoint without them (facebook/chameleon-7b) loads
    quietly and `Backbone.has_decoder` says image decoding is unavailable.
    """

    _keys_to_ignore_on_load_missing = [r"model\.vqmodel\.decoder\."]

    def __init__(self, config):
        super().__init__(config)
        self.model.vqmodel.decoder = ChameleonVQDecoder(config.vq_config)


class ImageTokenMap:
    """Vocabulary ids of image tokens <-> VQ codebook indices, from the checkpoint's vocabulary_map."""

    def __init__(self, vocabulary_map: dict[str, int], vocab_size: int, num_codes: int | None = None):
        # A codebook smaller than the IMGIMG range (the toy-world backbone) uses the first ids only.
        def code_of(name: str) -> int:
            return int("".join(str(ord(c) - ord("A")) for c in name[len("IMGIMG"):-1]))

        pairs = sorted((code_of(n), i) for n, i in vocabulary_map.items() if n.startswith("IMGIMG"))
        pairs = [(c, i) for c, i in pairs if num_codes is None or c < num_codes]
        if not pairs:
            raise BackboneError("config.json vocabulary_map has no IMGIMG...Z image tokens: not a Chameleon checkpoint")
        codes = torch.tensor([c for c, _ in pairs])
        ids = torch.tensor([i for _, i in pairs])
        self.code_to_id = torch.full((int(codes.max()) + 1,), -1, dtype=torch.long)
        self.code_to_id[codes] = ids
        self.id_to_code = torch.full((vocab_size,), -1, dtype=torch.long)
        self.id_to_code[ids] = codes
        self.is_image_token = self.id_to_code >= 0  # (vocab,) bool
        self.image_token_ids = ids

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """VQ codes (any shape) -> vocabulary ids."""
        return self.code_to_id.to(codes.device)[codes]

    def ids_to_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Vocabulary ids (any shape) -> VQ codes; raises if any id is not an image token."""
        codes = self.id_to_code.to(ids.device)[ids]
        if (codes < 0).any():
            raise ValueError("ids_to_codes got ids that are not image tokens")
        return codes


@dataclass
class Backbone:
    """A loaded frozen backbone and the token facts the rest of the code needs."""

    model: YoChameleonForConditionalGeneration
    processor: ChameleonProcessor
    path: Path
    name: str
    has_decoder: bool
    extra: dict = field(default_factory=dict)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @cached_property
    def image_map(self) -> ImageTokenMap:
        return ImageTokenMap(self.config.vocabulary_map, self.config.vocab_size,
                             int(self.config.vq_config.num_embeddings))

    def token_id(self, name: str) -> int:
        """Id of a named token, from the checkpoint's vocabulary_map (never hard-coded)."""
        try:
            return int(self.config.vocabulary_map[name])
        except KeyError:
            raise BackboneError(f"token {name!r} is not in {self.path}/config.json vocabulary_map") from None

    @cached_property
    def boi_id(self) -> int:
        return self.token_id("<racm3:break>")

    @cached_property
    def eoi_id(self) -> int:
        return self.token_id("<eoss>")

    @cached_property
    def end_of_turn_id(self) -> int:
        return self.token_id("<reserved08706>")

    @cached_property
    def bos_id(self) -> int:
        return self.token_id("<s>")

    def text_banned_ids(self, allow=()) -> torch.Tensor:
        """(vocab,) bool: ids a text answer may never contain.

        Every image token, begin-of-image, and every reserved token except end-of-turn and the
        ids in `allow` (a loaded concept's identifier may appear in an answer; other reserved
        ids are untrained and could collide with concept tokens).
        """
        banned = self.image_map.is_image_token.clone()
        banned[self.boi_id] = True
        banned[self.reserved_ids] = True
        banned[self.end_of_turn_id] = False
        banned[list(allow)] = False
        return banned

    @cached_property
    def reserved_ids(self) -> list[int]:
        """Ids of every <reservedNNNNN> token."""
        return [int(i) for name, i in self.config.vocabulary_map.items() if name.startswith("<reserved")]

    def text_stop_ids(self) -> list[int]:
        """Ids that end a text answer: end of turn and </s>."""
        return [self.end_of_turn_id, self.token_id("</s>")]

    @cached_property
    def image_seq_length(self) -> int:
        vq = self.config.vq_config
        side = vq.resolution // 2 ** (len(vq.channel_multiplier) - 1)
        return side * side

    def fingerprint(self) -> dict:
        """What an adapter records about the backbone it was trained on."""
        emb = self.model.get_input_embeddings().weight
        return {
            "name": self.name,
            "vocab_size": int(self.config.vocab_size),
            "hidden_size": int(self.config.hidden_size),
            "num_hidden_layers": int(self.config.num_hidden_layers),
            # A few weights tell apart two backbones with the same shapes (robust to bf16 vs fp32 loading).
            "embedding_probe": [round(float(x), 6) for x in emb.detach().reshape(-1)[:: emb.numel() // 16][:16]],
        }

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) -> image-token vocabulary ids (B, image_seq_length)."""
        vq = self.model.model.vqmodel
        pixel_values = pixel_values.to(device=self.device, dtype=vq.quant_conv.weight.dtype)
        return self.model.model.get_image_tokens(pixel_values).long()


def _checkpoint_keys(path: Path) -> set[str]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        return set(json.loads(index.read_text())["weight_map"])
    from safetensors import safe_open

    keys: set[str] = set()
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            keys.update(handle.keys())
    return keys


def check_backbone_dir(path: str | Path) -> Path:
    """Fail at once, with the expected layout, when `path` is not a usable checkpoint directory."""
    if path is None or str(path) in ("", "None", "???"):
        raise BackboneError(f"no model path given. Pass model.path=<local dir>, {EXPECTED_LAYOUT}.")
    path = Path(path).expanduser()
    if not path.is_dir():
        raise BackboneError(f"model path {path} does not exist or is not a directory. Expected {EXPECTED_LAYOUT}.")
    config = path / "config.json"
    if not config.exists():
        raise BackboneError(f"{path} has no config.json. Expected {EXPECTED_LAYOUT}.")
    try:
        data = json.loads(config.read_text())
    except json.JSONDecodeError as err:
        raise BackboneError(f"{config} is not valid JSON ({err}). Re-download or re-convert the checkpoint.") from err
    if data.get("model_type") != "chameleon" or "vocabulary_map" not in data:
        raise BackboneError(f"{config} is not a Chameleon config (model_type {data.get('model_type')!r}). "
                            f"Expected {EXPECTED_LAYOUT}.")
    if not any(path.glob("*.safetensors")):
        raise BackboneError(f"{path} has no *.safetensors weights. Expected {EXPECTED_LAYOUT}.")
    return path


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


def load_backbone(path: str | Path, name: str | None = None, dtype: str | torch.dtype = "float32",
                  device: str | torch.device = "cpu", attn_implementation: str = "sdpa") -> Backbone:
    """Load a frozen backbone (weights, tokenizer, processor) from a local HF directory."""
    path = check_backbone_dir(path)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = YoChameleonForConditionalGeneration.from_pretrained(
        str(path), dtype=torch_dtype, attn_implementation=attn_implementation, local_files_only=True,
    )
    model.requires_grad_(False)
    model.eval()
    model.to(device)
    processor = ChameleonProcessor.from_pretrained(str(path), local_files_only=True)
    has_decoder = any(k.startswith(DECODER_PREFIX) for k in _checkpoint_keys(path))
    if not has_decoder:
        log.info("%s has no VQ decoder weights: understanding works, image generation is unavailable", path)
    return Backbone(model=model, processor=processor, path=path, name=name or path.name, has_decoder=has_decoder)
