"""Load a frozen Chameleon / Anole backbone from a local HF directory.

One path for every size: the tiny test model is built once and then read back
through exactly the `from_pretrained` call that loads the 7B checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from transformers import ChameleonForConditionalGeneration, ChameleonProcessor

from yochameleon.errors import YoChameleonError
from yochameleon.model.chat import ChameleonLayout
from yochameleon.model.vq_decoder import ChameleonVQDecoder

log = logging.getLogger(__name__)

DECODER_PREFIX = "model.vqmodel.decoder."
DTYPES = ("auto", "float32", "bfloat16", "float16")
EXPECTED_LAYOUT = (
    "a Hugging Face Chameleon/Anole directory containing config.json (model_type 'chameleon' with a "
    "vocabulary_map), model.safetensors or model.safetensors.index.json with its shards, tokenizer.json, "
    "tokenizer_config.json and preprocessor_config.json / processor_config.json; for example a local copy of "
    "leloy/Anole-7b-v0.1-hf (image generation) or facebook/chameleon-7b (understanding only); or a Janus "
    "directory (model_type 'janus'), e.g. a local copy of deepseek-community/Janus-Pro-1B"
)


class BackboneError(YoChameleonError):
    """The backbone directory is missing or not a Chameleon checkpoint."""


class YoChameleonForConditionalGeneration(ChameleonForConditionalGeneration):
    """Upstream Chameleon plus the Anole VQ decoder at `model.vqmodel.decoder`.

    The decoder is a submodule so Anole-hf decoder weights load by name (no
    'unexpected keys'); a checkpoint without them (facebook/chameleon-7b) loads
    quietly and `Backbone.has_decoder` says image decoding is unavailable.

    `token_embeddings`, `vocab_logits` and `text_vocab_size` are what `PersonalizedChameleon`
    reads of any backbone family (the Janus model has the same three, model/janus.py).
    """

    _keys_to_ignore_on_load_missing = [r"model\.vqmodel\.decoder\."]
    text_vocab_size = None  # one softmax over the whole vocabulary: image tokens are vocabulary ids

    def __init__(self, config):
        super().__init__(config)
        self.model.vqmodel.decoder = ChameleonVQDecoder(config.vq_config)

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of vocabulary ids (text and image tokens alike)."""
        return self.get_input_embeddings()(input_ids)

    def vocab_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the whole vocabulary from the frozen language head."""
        return self.lm_head(hidden)


class ImageTokenMap:
    """Vocabulary ids of image tokens <-> VQ codebook indices, from the checkpoint's vocabulary_map."""

    def __init__(self, codes: torch.Tensor, ids: torch.Tensor, vocab_size: int):
        # `vocab_size`: the width of the logits, image ids included.
        self.code_to_id = torch.full((int(codes.max()) + 1,), -1, dtype=torch.long)
        self.code_to_id[codes] = ids
        self.id_to_code = torch.full((vocab_size,), -1, dtype=torch.long)
        self.id_to_code[ids] = codes
        self.is_image_token = self.id_to_code >= 0  # (vocab,) bool
        self.image_token_ids = ids

    @classmethod
    def from_vocabulary_map(cls, vocabulary_map: dict[str, int], vocab_size: int,
                            num_codes: int | None = None) -> "ImageTokenMap":
        """Chameleon's map: code c is the token named IMGIMG<c in letters>Z."""
        # A codebook smaller than the IMGIMG range (the toy-world backbone) uses the first ids only.
        def code_of(name: str) -> int:
            return int("".join(str(ord(c) - ord("A")) for c in name[len("IMGIMG"):-1]))

        pairs = sorted((code_of(n), i) for n, i in vocabulary_map.items() if n.startswith("IMGIMG"))
        pairs = [(c, i) for c, i in pairs if num_codes is None or c < num_codes]
        if not pairs:
            raise BackboneError("config.json vocabulary_map has no IMGIMG...Z image tokens: not a Chameleon checkpoint")
        return cls(torch.tensor([c for c, _ in pairs]), torch.tensor([i for _, i in pairs]), vocab_size)

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

    family = "chameleon"
    default_first_token = "<reserved16200>"  # recipe.first_token=auto: Yo'Chameleon's identifier
    default_guidance = 1.0  # classifier-free guidance when none is asked for: off, as Anole samples

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def guidance(self, scale: float | None) -> float:
        """A classifier-free guidance scale as asked for, or the backbone's default for None."""
        return self.sampling(guidance_scale=scale).guidance_scale

    @cached_property
    def recorded_sampling(self) -> dict:
        """`image_sampling` of the checkpoint's generation_config.json ({} when absent): image-sampling
        defaults a build records there (transformers' GenerationConfig does not keep unknown keys)."""
        file = Path(self.path) / "generation_config.json"
        recorded = json.loads(file.read_text()).get("image_sampling") if file.is_file() else None
        unknown = set(recorded or {}) - {"temperature", "top_k", "top_p", "guidance_scale"}
        if unknown:
            raise YoChameleonError(f"{file}: image_sampling has unknown keys {sorted(unknown)}; "
                                   "use temperature, top_k, top_p, guidance_scale")
        return dict(recorded or {})

    def sampling(self, temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 guidance_scale: float | None = None):
        """Image-token sampling settings: each one asked for, or for None the backbone's default.

        The defaults are the checkpoint's recorded ones (`recorded_sampling`) when it has them (the
        toy-world backbone records the settings its drawing was measured with), else temperature 1,
        no top-k / top-p filter and the family's guidance (Chameleon: off, as Anole samples; Janus:
        its generation_config's scale)."""
        from yochameleon.model.image_generation import SamplingConfig

        defaults = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "guidance_scale": self.default_guidance,
                    **self.recorded_sampling}
        asked = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "guidance_scale": guidance_scale}
        chosen = {k: defaults[k] if v is None else v for k, v in asked.items()}
        config = SamplingConfig(float(chosen["temperature"]), int(chosen["top_k"]), float(chosen["top_p"]),
                                float(chosen["guidance_scale"]))
        config.validate()
        return config

    @property
    def vocabulary_map(self) -> dict[str, int]:
        """Token name -> id, the reserved tokens a concept lives on included."""
        return self.config.vocabulary_map

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def max_positions(self) -> int:
        """The longest sequence the language model's positions cover."""
        return int(self.config.max_position_embeddings)

    @property
    def logits_width(self) -> int:
        """Columns of `PersonalizedChameleon.logits`: the vocabulary (image tokens are in it)."""
        return int(self.config.vocab_size)

    @property
    def pixel_scale(self) -> float:
        """`to_pil`'s factor: decoder output x in [-1, 1] -> (x + 1) / pixel_scale in [0, 255]."""
        return float(self.processor.image_processor.rescale_factor)

    def chat_layout(self):
        """The chat layout this family's prompts are written in (`model/chat.py`)."""
        return ChameleonLayout(self.tokenizer, self.bos_id, self.boi_id, self.eoi_id, self.end_of_turn_id)

    def pixels(self, images) -> torch.Tensor:
        """PIL images -> the processor's pixel tensor (B, 3, H, W)."""
        return self.processor.image_processor(images, return_tensors="pt")["pixel_values"]

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

    def image_scorer(self):
        """hidden (B, hidden) -> logits over `image_map.image_token_ids` (B, n_codes) for image sampling.

        Only the image-token rows of the head are ever needed (concept tokens are never image ids),
        so 8192 of the 65536 output rows are gathered once instead of the full vocabulary per token.
        """
        from yochameleon.model.image_generation import weight_rows

        head = weight_rows(self.model.lm_head.weight, self.image_map.image_token_ids.to(self.device))
        return lambda hidden: hidden @ head.T

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """VQ codes (B, image_seq_length) -> pixels (B, 3, H, W), roughly in [-1, 1] (the Anole decoder)."""
        vq = self.model.model.vqmodel
        side = int(self.image_seq_length ** 0.5)
        latent = vq.quantize.embedding(codes).view(len(codes), side, side, -1).permute(0, 3, 1, 2).contiguous()
        return vq.decoder(vq.post_quant_conv(latent))

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @cached_property
    def image_map(self) -> ImageTokenMap:
        return ImageTokenMap.from_vocabulary_map(self.config.vocabulary_map, self.config.vocab_size,
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
    """Fail at once, with the expected layout, when `path` is not a usable checkpoint directory.

    Checks what every family's directory has (config.json); a Janus one is then checked by
    `model/janus.py` (`yochameleon.model.load` dispatches), a Chameleon one here.
    """
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
    if data.get("model_type") == "janus":
        return path  # its own checks: yochameleon.model.janus.check_janus_dir
    if data.get("model_type") != "chameleon" or "vocabulary_map" not in data:
        raise BackboneError(f"{config} is not a Chameleon or Janus config (model_type {data.get('model_type')!r}). "
                            f"Expected {EXPECTED_LAYOUT}.")
    if not any(path.glob("*.safetensors")):
        raise BackboneError(f"{path} has no *.safetensors weights. Expected {EXPECTED_LAYOUT}.")
    return path


def resolve_device(device: str | torch.device | None) -> str:
    """The one device rule of `answer`, `generate`, the Python API and the harness: `auto` (or None) is
    cuda when a GPU is visible, else cpu; anything else ("cpu", "cuda:1") is used as given."""
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


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


LARGE_CHECKPOINT_BYTES = 1 << 30  # transformers' weight-loading bar is shown from 1 GiB of weights up


@contextlib.contextmanager
def _progress_bar_when_large(path: Path):
    """transformers' "Loading weights" bar only where loading takes a while: a tiny or toy model loads silently."""
    from transformers.utils import logging as hf_logging

    size = sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))
    shown = hf_logging.is_progress_bar_enabled()
    if size < LARGE_CHECKPOINT_BYTES and shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_frozen(model_class, processor_class, path: Path, dtype, device, attn_implementation: str):
    """A model class's weights from a local directory, frozen and in eval mode on `device`, and its processor."""
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    with _progress_bar_when_large(path):
        model = model_class.from_pretrained(str(path), dtype=torch_dtype, attn_implementation=attn_implementation,
                                            local_files_only=True)
    model.requires_grad_(False)
    model.eval()
    model.to(device)
    return model, processor_class.from_pretrained(str(path), local_files_only=True)


def load_chameleon_backbone(path: str | Path, name: str | None = None, dtype: str | torch.dtype = "float32",
                            device: str | torch.device = "cpu", attn_implementation: str = "sdpa") -> Backbone:
    """Load a frozen Chameleon / Anole backbone (weights, tokenizer, processor) from a local HF directory.

    Callers use `yochameleon.model.load.load_backbone`, which checks the directory once
    (`check_backbone_dir`) and picks the family by `model_type`.
    """
    path = Path(path)
    model, processor = load_frozen(YoChameleonForConditionalGeneration, ChameleonProcessor, path, dtype, device,
                                   attn_implementation)
    has_decoder = any(k.startswith(DECODER_PREFIX) for k in _checkpoint_keys(path))
    if not has_decoder:
        log.info("%s has no VQ decoder weights: understanding works, image generation is unavailable", path)
    return Backbone(model=model, processor=processor, path=path, name=name or path.name, has_decoder=has_decoder)
