"""Load a frozen Chameleon / Anole backbone from a local HF directory.

One path for every size: the tiny test model is built once and then read back
through exactly the `from_pretrained` call that loads the 7B checkpoints. A loaded
`Backbone` composes its family's parts: token facts (`token_facts.py`), sampling
defaults (`sampling_defaults.py`) and the image codec (`image_codec.py`).
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

from yochameleon.errors import BackboneError, YoChameleonError
from yochameleon.model.chat import ChameleonLayout
from yochameleon.model.image_codec import ImageCodec
from yochameleon.model.sampling_defaults import SamplingDefaults
from yochameleon.model.token_facts import TokenFacts
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


def part_member(part: str, name: str) -> property:
    """A member of one of `Backbone`'s parts, read on the backbone itself (`backbone.boi_id` is
    `backbone.token_facts.boi_id`): the names callers have always used, the logic in the part."""
    return property(lambda self: getattr(getattr(self, part), name), doc=f"`{part}.{name}` (read through the part).")


@dataclass
class Backbone:
    """A loaded frozen backbone composed of its family's parts (docs/design.md, "Family facts in model/").

    `token_facts` (special and reserved ids, the image-token map, the vocabulary), `sampling_defaults`
    (the checkpoint's recorded image sampling over the family's guidance) and `codec` (pixels <-> ids,
    codes -> pixels) are Chameleon's here; `JanusBackbone` (model/janus.py) composes Janus's. The parts'
    members are also read on the backbone (`backbone.boi_id`, `backbone.sampling()`, ...).
    """

    model: YoChameleonForConditionalGeneration
    processor: ChameleonProcessor
    path: Path
    name: str
    has_decoder: bool
    extra: dict = field(default_factory=dict)

    family = "chameleon"
    default_first_token = "<reserved16200>"  # recipe.first_token=auto: Yo'Chameleon's identifier

    @cached_property
    def token_facts(self) -> TokenFacts:
        return TokenFacts(self.config, self.path)

    @cached_property
    def sampling_defaults(self) -> SamplingDefaults:
        return SamplingDefaults(self.path)

    @cached_property
    def codec(self) -> ImageCodec:
        return ImageCodec(self.model, self.processor.image_processor)

    vocabulary_map = part_member("token_facts", "vocabulary_map")
    logits_width = part_member("token_facts", "logits_width")
    image_map = part_member("token_facts", "image_map")
    token_id = part_member("token_facts", "token_id")
    bos_id = part_member("token_facts", "bos_id")
    boi_id = part_member("token_facts", "boi_id")
    eoi_id = part_member("token_facts", "eoi_id")
    end_of_turn_id = part_member("token_facts", "end_of_turn_id")
    reserved_ids = part_member("token_facts", "reserved_ids")
    text_banned_ids = part_member("token_facts", "text_banned_ids")
    text_stop_ids = part_member("token_facts", "text_stop_ids")

    default_guidance = part_member("sampling_defaults", "default_guidance")
    recorded_sampling = part_member("sampling_defaults", "recorded_sampling")
    sampling = part_member("sampling_defaults", "sampling")
    guidance = part_member("sampling_defaults", "guidance")

    pixel_scale = part_member("codec", "pixel_scale")
    image_seq_length = part_member("codec", "image_seq_length")
    pixels = part_member("codec", "pixels")
    image_codes = part_member("codec", "image_codes")
    shown_image_codes = part_member("codec", "shown_image_codes")
    encode_images = part_member("codec", "encode_images")
    decode_codes = part_member("codec", "decode_codes")

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def config(self):
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def max_positions(self) -> int:
        """The longest sequence the language model's positions cover."""
        return int(self.config.max_position_embeddings)

    def chat_layout(self):
        """The chat layout this family's prompts are written in (`model/chat.py`)."""
        return ChameleonLayout(self.tokenizer, self.bos_id, self.boi_id, self.eoi_id, self.end_of_turn_id)

    def image_scorer(self):
        """hidden (B, hidden) -> logits over `image_map.image_token_ids` (B, n_codes) for image sampling.

        Only the image-token rows of the head are ever needed (concept tokens are never image ids),
        so 8192 of the 65536 output rows are gathered once instead of the full vocabulary per token.
        """
        from yochameleon.model.image_generation import weight_rows

        head = weight_rows(self.model.lm_head.weight, self.image_map.image_token_ids.to(self.device))
        return lambda hidden: hidden @ head.T

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
