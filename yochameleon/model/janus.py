"""Janus-Pro as a backbone family: the same recipe on DeepSeek's decoupled unified model.

Janus differs from Chameleon where the rest of the code assumed one shape, and this module
gives the rest of the code Chameleon's shape again, as ids:

* Generated images are VQ codes of a separate generation tokenizer, predicted by a generation
  head and read back through a generation embedding. Here code `c` is the id `V + c` (`V` the
  text vocabulary): `token_embeddings` sends those ids through `generation_embeddings` and
  `generation_aligner`, and `vocab_logits` appends the generation head's logits after the
  language head's, so logits have `V + n_codes` columns. The loss scores a text target within
  the text head and an image target within the image head (`token_cross_entropy`).
* An image *shown* in a prompt is vision-encoder (SigLIP) features through the aligner, not
  tokens. Each distinct shown image gets a slot `k` in an `ImageBank`; its `n` feature positions
  are the ids `V + n_codes + k * n + j`, computed on first use and kept in a small memory.
  Prompts, padding, batching and scoring therefore stay lists of ids for both families.
* The concept's rows are vocabulary rows the checkpoint leaves unused: the language model's
  embedding has more rows than the tokenizer has tokens (Janus-Pro: 102400 rows). Those rows
  are named `<reserved00000>`, `<reserved00001>`, ... in order of id and added to the
  tokenizer at load time, so a concept is written `<reserved00000> is ...` as on Chameleon and
  no frozen matrix is resized.

The model class is upstream `JanusForConditionalGeneration` (subclassed only to add the three
reads above), loaded with `from_pretrained` from a local directory.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from transformers import JanusForConditionalGeneration, JanusProcessor

from yochameleon.model.backbone import Backbone, BackboneError, _checkpoint_keys, load_frozen
from yochameleon.model.chat import JanusLayout
from yochameleon.model.janus_facts import JanusImageCodec, JanusSamplingDefaults, JanusTokenFacts

JANUS_LAYOUT = (
    "a Hugging Face Janus directory containing config.json (model_type 'janus'), model.safetensors or "
    "model.safetensors.index.json with its shards, tokenizer.json, tokenizer_config.json and "
    "processor_config.json / preprocessor_config.json; for example a local copy of "
    "deepseek-community/Janus-Pro-1B or deepseek-community/Janus-Pro-7B"
)
RESERVED_NAME = "<reserved{:05d}>"


class ImageBank:
    """Shown images <-> ids: image k's n feature positions are `base + k * n + j`.

    Slots are handed out per process in the order images are first shown and never reused; features
    are computed by the frozen vision encoder when an id is first embedded and kept for `capacity`
    images. The bank is bounded (a long-lived server shows images without end): it remembers the
    `max_images` most recently shown images (least recently shown forgotten first, with their pixels);
    ids of a forgotten image are refused by `lookup` with a clear error instead of meaning another image,
    and showing it again gives it a new slot.
    """

    def __init__(self, base: int, per_image: int, capacity: int = 64, max_images: int = 1024):
        if max_images < capacity:
            raise ValueError(f"max_images ({max_images}) must be at least capacity ({capacity})")
        self.base, self.per_image, self.capacity, self.max_images = base, per_image, capacity, max_images
        self.sources: OrderedDict[int, tuple[object, bool]] = OrderedDict()  # slot -> (path or PIL image, flip)
        self.slots: dict[tuple, int] = {}  # image key -> slot, for the remembered images only
        self.keys: dict[int, tuple] = {}  # slot -> image key
        self.next_slot = 0
        self.features: OrderedDict[int, torch.Tensor] = OrderedDict()

    def ids(self, image, flip: bool) -> list[int]:
        """The ids that stand for `image` (mirrored when `flip`) in a prompt."""
        key = (_image_key(image), bool(flip))
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = self.next_slot
            self.next_slot += 1
            self.sources[slot], self.keys[slot] = (image, bool(flip)), key
            while len(self.sources) > self.max_images:
                self._forget(next(iter(self.sources)))
        self.sources.move_to_end(slot)
        start = self.base + slot * self.per_image
        return list(range(start, start + self.per_image))

    def _forget(self, slot: int) -> None:
        del self.sources[slot]
        del self.slots[self.keys.pop(slot)]
        self.features.pop(slot, None)

    def _source(self, slot: int):
        if slot not in self.sources:
            raise BackboneError(f"image slot {slot} was forgotten: more than max_images={self.max_images} images were "
                                "shown between building a prompt and running it; build prompts closer to their "
                                "forward pass or raise ImageBank.max_images")
        return self.sources[slot]

    def lookup(self, ids: torch.Tensor, encode, lockstep: bool = False) -> torch.Tensor:
        """Feature rows (N, hidden) for bank ids (N,); `encode(list of (image, flip))` -> (k, n, hidden).

        `lockstep` (ZeRO-3): `encode` runs exactly once per call, on every wanted image, none kept,
        so every rank calls the vision encoder as often as the others whatever its images.
        """
        slot, position = (ids - self.base) // self.per_image, (ids - self.base) % self.per_image
        wanted = sorted(set(slot.tolist()))
        rows = encode([self._source(s) for s in wanted]) if lockstep else self._kept(wanted, encode)  # (k, n, hidden)
        index = torch.tensor([wanted.index(s) for s in slot.tolist()], dtype=torch.long, device=rows.device)
        return rows[index, position.to(rows.device)]

    def _kept(self, wanted: list[int], encode) -> torch.Tensor:
        """The features of `wanted` slots, encoding only those not kept, then keeping the latest `capacity`."""
        missing = [s for s in wanted if s not in self.features]
        if missing:
            for s, rows in zip(missing, encode([self._source(s) for s in missing])):
                self.features[s] = rows
        for s in wanted:
            self.features.move_to_end(s)
        rows = torch.stack([self.features[s] for s in wanted])
        while len(self.features) > max(self.capacity, len(wanted)):
            self.features.popitem(last=False)
        return rows


def _image_key(image) -> tuple:
    """What identifies an image: a file by path, size and modification time; a PIL image by its pixels."""
    if isinstance(image, (str, Path)):
        stat = Path(image).stat()
        return ("file", str(image), stat.st_size, stat.st_mtime_ns)
    return ("pixels", image.size, image.mode, hashlib.sha1(image.tobytes()).hexdigest())


class YoJanusForConditionalGeneration(JanusForConditionalGeneration):
    """Upstream Janus plus the id reads `PersonalizedChameleon` needs (see the module docstring)."""

    image_bank: ImageBank | None = None
    image_encoder = None  # (list of (image, flip)) -> pixel tensor, set by `load_janus_backbone`
    # DeepSpeed ZeRO-3 gathers a module's weights from every rank when it is called, so every rank must
    # call the same modules: with `lockstep` each forward runs the generation embedding and the vision
    # encoder once whatever its ids (the training recipe sets it under ZeRO-3).
    lockstep = False

    @property
    def text_vocab_size(self) -> int:
        """Columns of the language head; from here on the logits are the image-generation head's."""
        return int(self.config.text_config.vocab_size)

    @property
    def num_codes(self) -> int:
        return int(self.config.vq_config.num_embeddings)

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Text ids through the text embedding, code ids through the generation embedding and aligner,
        shown-image ids as vision-encoder features through the aligner."""
        text_ids = torch.where(input_ids < self.text_vocab_size, input_ids, torch.zeros_like(input_ids))
        embeds = self.get_input_embeddings()(text_ids)
        codes = (input_ids >= self.text_vocab_size) & (input_ids < self.text_vocab_size + self.num_codes)
        if self.lockstep or bool(codes.any()):
            rows = self.prepare_embeddings_for_image_generation(input_ids[codes] - self.text_vocab_size)
            embeds = embeds.index_put((codes,), rows.to(embeds.dtype))
        shown = input_ids >= self.text_vocab_size + self.num_codes
        if self.lockstep or bool(shown.any()):
            rows = self.image_bank.lookup(input_ids[shown].cpu(), self._shown_features, self.lockstep)
            embeds = embeds.index_put((shown,), rows.to(embeds.device, embeds.dtype))
        return embeds

    @torch.no_grad()
    def _shown_features(self, sources) -> torch.Tensor:
        """(k, n, hidden) aligned vision features of shown images, as `JanusModel.get_image_features`.

        No image (a lockstep forward without one): the encoder runs on one blank image, kept for none.
        """
        side = int(self.config.vision_config.image_size)
        pixels = self.image_encoder(sources) if sources else torch.zeros(1, 3, side, side)
        weight = self.model.vision_model.embeddings.patch_embedding.weight
        features = self.model.get_image_features(pixels.to(weight.device, weight.dtype)).pooler_output
        return features if sources else features[:0]

    def vocab_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Language-head logits, then the generation head's over the codes: (..., V + n_codes)."""
        return torch.cat([self.lm_head(hidden), self.model.generation_head(hidden)], dim=-1)


@dataclass
class JanusBackbone(Backbone):
    """A loaded frozen Janus: `Backbone` composed of Janus's parts (`model/janus_facts.py`)."""

    model: YoJanusForConditionalGeneration
    processor: JanusProcessor

    family = "janus"
    default_first_token = RESERVED_NAME.format(0)  # the first unused row

    @cached_property
    def token_facts(self) -> JanusTokenFacts:
        return JanusTokenFacts(self.model, self.tokenizer, self.path)

    @cached_property
    def sampling_defaults(self) -> JanusSamplingDefaults:
        return JanusSamplingDefaults(self.path, self.model)

    @cached_property
    def codec(self) -> JanusImageCodec:
        return JanusImageCodec(self.model, self.processor.image_processor, self.path)

    @property
    def hidden_size(self) -> int:
        return int(self.config.text_config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(self.config.text_config.max_position_embeddings)

    def chat_layout(self):
        return JanusLayout(self.tokenizer, self.bos_id, self.boi_id, self.eoi_id, self.end_of_turn_id,
                           int(self.tokenizer.pad_token_id))

    def image_scorer(self):
        """hidden (B, hidden) -> the generation head's logits over the codes (B, n_codes)."""
        return self.model.model.generation_head

    def fingerprint(self) -> dict:
        text = self.config.text_config
        emb = self.model.get_input_embeddings().weight
        return {
            "name": self.name, "family": self.family, "vocab_size": int(text.vocab_size),
            "hidden_size": int(text.hidden_size), "num_hidden_layers": int(text.num_hidden_layers),
            "embedding_probe": [round(float(x), 6) for x in emb.detach().reshape(-1)[:: emb.numel() // 16][:16]],
        }


def is_janus_dir(path: Path) -> bool:
    """Whether a checkpoint directory holds a Janus config (else it is read as Chameleon)."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type") == "janus"
    except (OSError, json.JSONDecodeError):
        return False


def check_janus_dir(path: Path) -> Path:
    """Fail at once, with the expected layout, when `path` (passed `check_backbone_dir`) is not a usable
    Janus checkpoint."""
    if not any(path.glob("*.safetensors")):
        raise BackboneError(f"{path} has no *.safetensors weights. Expected {JANUS_LAYOUT}.")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (path / name).exists():
            raise BackboneError(f"{path} has no {name}. Expected {JANUS_LAYOUT}.")
    return path


def name_unused_rows(tokenizer, rows: int) -> int:
    """Add `<reservedNNNNN>` for every embedding row past the tokenizer's last id; returns how many."""
    first = len(tokenizer)
    if first > rows:
        raise BackboneError(f"the tokenizer has {first} tokens but the embedding only {rows} rows")
    from tokenizers import AddedToken

    names = [RESERVED_NAME.format(i) for i in range(rows - first)]
    tokenizer.add_tokens([AddedToken(n, special=True, normalized=False) for n in names], special_tokens=True)
    got = tokenizer.convert_tokens_to_ids(names[:1] + names[-1:]) if names else []
    if names and got != [first, rows - 1]:
        raise BackboneError(f"naming the unused rows {first}..{rows - 1} gave ids {got}: the tokenizer does not "
                            "end where the embedding's used rows do")
    return len(names)


def load_janus_backbone(path: str | Path, name: str | None = None, dtype: str | torch.dtype = "float32",
                        device: str | torch.device = "cpu", attn_implementation: str = "sdpa") -> JanusBackbone:
    """Load a frozen Janus (weights, tokenizer, processor) from a local HF directory that
    `yochameleon.model.load.check_directory` has checked."""
    path = Path(path)
    model, processor = load_frozen(YoJanusForConditionalGeneration, JanusProcessor, path, dtype, device,
                                   attn_implementation)
    unused = name_unused_rows(processor.tokenizer, model.text_vocab_size)
    if unused == 0:
        raise BackboneError(f"{path}: the tokenizer covers every embedding row, so no row is free for a concept")
    n = int(model.config.vision_config.num_image_tokens)
    model.image_bank = ImageBank(model.text_vocab_size + model.num_codes, n)
    model.image_encoder = lambda sources: _pixels_of(processor, sources)
    has_decoder = any(k.startswith("model.vqmodel.decoder.") for k in _checkpoint_keys(path))
    return JanusBackbone(model=model, processor=processor, path=path, name=name or path.name,
                         has_decoder=has_decoder, extra={"unused_rows": unused})


def _pixels_of(processor, sources) -> torch.Tensor:
    """The processor's pixels of (path or PIL image, flip) pairs."""
    from PIL import ImageOps

    from yochameleon.model.images import load_image

    images = []
    for image, flip in sources:
        image = load_image(image) if isinstance(image, (str, Path)) else image
        images.append(ImageOps.mirror(image) if flip else image)
    return processor.image_processor(images, return_tensors="pt")["pixel_values"]
