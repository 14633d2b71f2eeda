"""Zero-shot concepts: a trained encoder turns 1-5 photos of a subject into a concept's rows.

PLVM ("Personalized Large Vision-Language Models", Pham et al. 2024) showed for understanding on LLaVA
that small trained projections over a frozen vision encoder can stand in for per-concept training. Here
the encoder produces *every* row a trained adapter holds (identifier, `<g-tokens>`, `<u-tokens>`: input
rows and output-head rows), so the result is a `PersonalizedTokens` that answers, draws, is evaluated,
shares a prompt with other concepts and is saved as an adapter exactly like a trained one.

    photos --(frozen backbone: hidden states over each photo's image tokens)--> features (R*T, F)
           --(ConceptEncoder: input projection, learned queries cross-attending to the features)--> rows

The image pathway is the backbone's own by default, so nothing is downloaded: Chameleon reads its VQ image
tokens, Janus its SigLIP + aligner slots (`Backbone.shown_image_codes`), both through the frozen language model;
`feature_layer` picks whose states: the last (normed) ones by default, or those after decoder layer n (the
last layer's are the default's).
`feature_source=vision` reads a local transformers vision checkpoint instead (DINOv2, CLIP, SigLIP: what PLVM
found best is DINOv2), recorded with the encoder and checked when it is loaded (`VisionFeatures`).
Each output row is the backbone's reserved row (where a fresh adapter starts) plus a zero-initialised
projection of its query, so an untrained encoder gives an untrained adapter.

An encoder directory holds `encoder.safetensors` (the weights) and `encoder_config.json` (the backbone's
fingerprint, the feature source, k_g / k_u, the sizes, the token layout and the recipe its rows were trained
for); it is refused on another backbone as an adapter is.
"""

from __future__ import annotations

import collections
import hashlib
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import save_file
from torch import nn

from yochameleon.concept.adapter import BaseModel, check_backbone_match
from yochameleon.concept.tokens import PersonalizedTokens, reserved_token_names
from yochameleon.errors import YoChameleonError
from yochameleon.io import atomic_dir, read_safetensors
from yochameleon.model.chat import chat_layout

ENCODER_FORMAT = 1
ENCODER_CONFIG, ENCODER_WEIGHTS = "encoder_config.json", "encoder.safetensors"
# backbone: the backbone's own hidden states over a photo's image tokens; vision: a local vision checkpoint's
FEATURE_SOURCES = ("backbone", "vision")


class EncoderError(YoChameleonError):
    """An encoder directory is unreadable, or does not fit the loaded backbone, or was given bad photos."""


@dataclass(frozen=True)
class EncoderConfig:
    """The sizes and facts an encoder is built from (and saved with)."""

    hidden_size: int  # the backbone's: the rows' width
    feature_dim: int  # the features' width (the backbone's hidden size for feature_source=backbone)
    feature_tokens: int  # features per photo (the backbone's image tokens per photo)
    k_g: int
    k_u: int
    token_names: tuple[str, ...]  # the reserved tokens the rows sit on (identifier first), as an adapter records
    token_ids: tuple[int, ...]
    width: int = 256
    layers: int = 2
    heads: int = 4
    max_photos: int = 5
    feature_source: str = "backbone"
    # feature_source=vision: the checkpoint (`VisionFeatures.record()`: its path and what identifies it)
    feature_model: dict | None = None
    # feature_source=backbone: None, the last hidden states (after the final norm); n, the states after decoder
    # layer n (1 .. the backbone's layers), e.g. a middle layer that keeps more of the photo's layout
    feature_layer: int | None = None
    # How the rows are used in prompts (the adapter's recipe facts): written into every adapter it makes.
    recipe: dict | None = None

    @property
    def n_rows(self) -> int:
        return 1 + self.k_g + self.k_u

    def to_json(self) -> dict:
        out = asdict(self)
        out["token_names"], out["token_ids"] = list(self.token_names), list(self.token_ids)
        return out


class ConceptEncoder(nn.Module):
    """Photos' features -> a concept's (input_rows, output_rows): a small resampler over frozen features.

    Learned queries (one per row) attend to each other and to every feature of every reference photo
    (`nn.TransformerDecoder` blocks, pre-norm); a learned position per feature token tells the tokens of a
    photo apart, and none tells photos apart, so the photos' order does not matter. The rows are the
    backbone's reserved rows (`base_input` / `base_output`, trained too) plus zero-initialised projections.
    """

    def __init__(self, config: EncoderConfig, base_input: torch.Tensor, base_output: torch.Tensor):
        super().__init__()
        c = config
        if c.feature_source not in FEATURE_SOURCES:
            raise EncoderError(f"feature_source {c.feature_source!r} is not one of {', '.join(FEATURE_SOURCES)}")
        if c.width % c.heads:
            raise EncoderError(f"encoder width {c.width} is not divisible by its {c.heads} heads")
        expected = (c.n_rows, c.hidden_size)
        for name, rows in (("base_input", base_input), ("base_output", base_output)):
            if tuple(rows.shape) != expected:
                raise EncoderError(f"{name} has shape {tuple(rows.shape)}, expected {expected}")
        self.config = config
        self.in_proj = nn.Sequential(nn.LayerNorm(c.feature_dim), nn.Linear(c.feature_dim, c.width))
        self.positions = nn.Parameter(torch.randn(c.feature_tokens, c.width) * 0.02)
        self.queries = nn.Parameter(torch.randn(c.n_rows, c.width) * 0.02)
        block = nn.TransformerDecoderLayer(c.width, c.heads, 4 * c.width, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerDecoder(block, c.layers, norm=nn.LayerNorm(c.width))
        self.to_input = nn.Linear(c.width, c.hidden_size)
        self.to_output = nn.Linear(c.width, c.hidden_size)
        for head in (self.to_input, self.to_output):  # an untrained encoder gives the reserved rows
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.base_input = nn.Parameter(base_input.detach().clone().float())
        self.base_output = nn.Parameter(base_output.detach().clone().float())

    def forward(self, features: torch.Tensor, photo_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (B, R, T, F) for R photos of T tokens each; photo_mask (B, R) True where a photo is there
        (None: all are). Returns input_rows and output_rows, each (B, 1 + k_g + k_u, hidden)."""
        b, r, t, _ = features.shape
        if t != self.config.feature_tokens:
            raise EncoderError(f"{t} features per photo, but this encoder was built for {self.config.feature_tokens}")
        memory = self.in_proj(features.float()) + self.positions  # (B, R, T, W)
        memory = memory.reshape(b, r * t, -1)
        padding = None
        if photo_mask is not None:
            padding = ~photo_mask.bool().repeat_interleave(t, dim=1)  # True = ignore
        queries = self.queries.unsqueeze(0).expand(b, -1, -1)
        out = self.blocks(queries, memory, memory_key_padding_mask=padding)
        return self.base_input + self.to_input(out), self.base_output + self.to_output(out)


class _FeatureMemory:
    """Per-photo features kept in memory by path (the feature model never changes), the least recently used
    dropped beyond `memory_gib` (a 7B's photo is T=1024 x 4096 floats, 16 MiB: a dataset of thousands of photos
    would not fit) and computed again when asked for. Subclasses compute a batch (`_compute`)."""

    feature_dim: int
    tokens_per_photo: int

    def __init__(self, batch_size: int = 16, memory_gib: float = 4.0):
        self.batch_size = batch_size
        self.memory: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self.memory_bytes, self.max_bytes = 0, int(float(memory_gib) * 2**30)

    def _compute(self, photos: list) -> list[torch.Tensor]:
        raise NotImplementedError

    def _remember(self, key: str, features: torch.Tensor) -> None:
        """Keep `features` under `key`, the most recently used; drop the least recently used beyond the bound."""
        size = features.numel() * features.element_size()
        if size > self.max_bytes:
            return
        self.memory[key] = features
        self.memory_bytes += size
        while self.memory_bytes > self.max_bytes:
            _, dropped = self.memory.popitem(last=False)
            self.memory_bytes -= dropped.numel() * dropped.element_size()

    @torch.no_grad()
    def __call__(self, photos: list) -> torch.Tensor:
        """(len(photos), T, F) float32 on the CPU; photos are paths or PIL images."""
        keys = [str(p) if isinstance(p, (str, Path)) else None for p in photos]
        todo = [i for i, k in enumerate(keys) if k is None or k not in self.memory]
        computed: dict[int, torch.Tensor] = {}
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            computed.update(zip(chunk, self._compute([photos[i] for i in chunk])))
        out = [computed[i] if i in computed else self.memory[key] for i, key in enumerate(keys)]
        for i, key in enumerate(keys):
            if key is None:
                continue
            if i in computed:
                if key not in self.memory:  # the same path twice in one call is computed twice, kept once
                    self._remember(key, computed[i])
            else:
                self.memory.move_to_end(key)
        return torch.stack(out)


class PhotoFeatures(_FeatureMemory):
    """The frozen backbone's hidden states over a photo's image tokens: (T, hidden) per photo, the last (normed)
    ones, or with `layer` n those after decoder layer n.

    The photo is shown as a prompt shows it (`shown_image_codes` in the family's chat layout) after
    begin-of-sentence, with no text.
    """

    def __init__(self, backbone, code_cache=None, batch_size: int = 16, memory_gib: float = 4.0,
                 layer: int | None = None):
        from yochameleon.model.personalized import PersonalizedChameleon

        super().__init__(batch_size, memory_gib)
        layers = int(backbone.model.config.get_text_config().num_hidden_layers)
        if layer is not None and not 1 <= int(layer) <= layers:
            raise EncoderError(f"encoder.feature_layer={layer}: the backbone has decoder layers 1 to {layers} "
                               "(null: the last hidden states)")
        self.layer = None if layer is None else int(layer)
        self.backbone, self.cache = backbone, code_cache
        self.plain = PersonalizedChameleon(backbone.model, [])
        self.layout = chat_layout(backbone)
        self.feature_dim = int(backbone.hidden_size)

    def _readable(self, photo):
        """A path goes through the VQ cache when there is one; without, it is read here (errors name the file)."""
        if isinstance(photo, (str, Path)) and self.cache is None:
            from yochameleon.data.images import load_image

            return load_image(photo)
        return photo

    @property
    def tokens_per_photo(self) -> int:
        return int(self.backbone.image_seq_length)

    def _compute(self, photos: list) -> list[torch.Tensor]:
        rows = [[self.backbone.bos_id] + self.layout.image(
            self.backbone.shown_image_codes(self._readable(photo), False, self.cache)) for photo in photos]
        ids = torch.tensor(rows, device=self.backbone.device)
        if self.layer is None:
            hidden, _ = self.plain.hidden_states(ids, torch.ones_like(ids))
        else:  # hidden_states[0] is the embeddings, [n] the output of decoder layer n
            out = self.plain.backbone.model(inputs_embeds=self.plain.embed(ids), attention_mask=torch.ones_like(ids),
                                            output_hidden_states=True)
            hidden = out.hidden_states[self.layer]
        first = 2  # begin-of-sentence, begin-of-image, then the image's tokens
        return [hidden[row, first:first + self.tokens_per_photo].float().cpu() for row in range(len(photos))]


class VisionFeatures(_FeatureMemory):
    """A local transformers vision checkpoint's last hidden states (every patch token, and its class token where
    it has one): (T, F) per photo. Any folder `AutoModel` and `AutoImageProcessor` read: DINOv2, CLIP or SigLIP
    (their vision tower). Nothing is downloaded: the folder must hold the weights and the processor's config."""

    def __init__(self, directory: str | Path, device="cpu", batch_size: int = 16, memory_gib: float = 4.0):
        from transformers import AutoImageProcessor, AutoModel

        super().__init__(batch_size, memory_gib)
        self.directory, self.device = Path(directory), torch.device(device)
        if not (self.directory / "config.json").is_file():
            raise EncoderError(f"{self.directory} is not a vision checkpoint (no config.json): give the folder of a "
                               "local DINOv2 / CLIP / SigLIP checkpoint (its config.json, weights and "
                               "preprocessor_config.json)")
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(self.directory), local_files_only=True)
            model = AutoModel.from_pretrained(str(self.directory), dtype=torch.float32, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise EncoderError(f"cannot load the vision checkpoint {self.directory} ({err}); it needs config.json, "
                               "its weights and preprocessor_config.json") from err
        self.model = getattr(model, "vision_model", model).eval().requires_grad_(False).to(self.device)
        self.feature_dim = int(self.model.config.hidden_size)
        from PIL import Image

        self.tokens_per_photo = int(self._compute([Image.new("RGB", (64, 64))])[0].shape[0])

    def _compute(self, photos: list) -> list[torch.Tensor]:
        from yochameleon.data.images import load_image

        images = [load_image(p) if isinstance(p, (str, Path)) else p.convert("RGB") for p in photos]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        hidden = self.model(pixel_values=pixels).last_hidden_state.float().cpu()
        return list(hidden)

    def record(self) -> dict:
        """What an encoder records of its feature model: the folder, and what tells another checkpoint apart."""
        digest = hashlib.sha256((self.directory / "config.json").read_bytes()).hexdigest()
        return {"path": str(self.directory.resolve()), "model_type": str(self.model.config.model_type),
                "hidden_size": self.feature_dim, "tokens": self.tokens_per_photo, "config_sha256": digest}


def photo_features(config: EncoderConfig, backbone, code_cache=None, memory_gib: float = 4.0) -> _FeatureMemory:
    """The features an encoder of `config` reads: the backbone's, or its recorded vision checkpoint's (refused,
    naming the folder, when that checkpoint is missing or not the one the encoder was trained on)."""
    if config.feature_source == "backbone":
        return PhotoFeatures(backbone, code_cache, memory_gib=memory_gib, layer=config.feature_layer)
    record = config.feature_model or {}
    directory = Path(str(record.get("path", "")))
    fix = f"put that checkpoint there, or edit feature_model.path in the encoder's {ENCODER_CONFIG}"
    if not record.get("path") or not directory.is_dir():
        raise EncoderError(f"this encoder reads its features from the vision checkpoint {directory}, which is not "
                           f"there: {fix}")
    features = VisionFeatures(directory, backbone.device, memory_gib=memory_gib)
    found = features.record()
    differs = [k for k in ("model_type", "hidden_size", "tokens", "config_sha256") if found[k] != record.get(k)]
    if differs:
        raise EncoderError(f"the vision checkpoint {directory} is not the one this encoder was trained on ({differs[0]}: "
                           f"{found[differs[0]]!r}, recorded {record.get(differs[0])!r}): {fix}")
    return features


def encoder_config_for(backbone, k_g: int, k_u: int, first_token: str, features: _FeatureMemory | None = None,
                       **sizes) -> EncoderConfig:
    """An `EncoderConfig` for `backbone` with the concept's tokens from `first_token` (as a fresh adapter's), over
    `features` (None: the backbone's own; a `VisionFeatures`: that checkpoint's, recorded)."""
    names = reserved_token_names(backbone.vocabulary_map, first_token, 1 + k_g + k_u)
    ids = tuple(int(backbone.vocabulary_map[n]) for n in names)
    source = {"feature_dim": int(backbone.hidden_size), "feature_tokens": int(backbone.image_seq_length),
              "feature_layer": getattr(features, "layer", None)}
    if isinstance(features, VisionFeatures):
        source = {"feature_dim": features.feature_dim, "feature_tokens": features.tokens_per_photo,
                  "feature_source": "vision", "feature_model": features.record()}
    return EncoderConfig(hidden_size=int(backbone.hidden_size), k_g=k_g, k_u=k_u, token_names=tuple(names),
                         token_ids=ids, **(sizes | source))


def new_encoder(backbone, config: EncoderConfig) -> ConceptEncoder:
    """An untrained encoder whose rows start at the backbone's reserved rows (where a fresh adapter starts)."""
    index = torch.tensor(config.token_ids, device=backbone.model.lm_head.weight.device)
    return ConceptEncoder(config, backbone.model.get_input_embeddings().weight[index].float().cpu(),
                          backbone.model.lm_head.weight[index].float().cpu())


def rows_as_tokens(config: EncoderConfig, name: str, input_rows: torch.Tensor, output_rows: torch.Tensor,
                   token_names=None, token_ids=None) -> PersonalizedTokens:
    """A `PersonalizedTokens` whose rows are the given tensors *as they are* (gradients flow back into the
    encoder: training), not copies held as parameters."""
    names = list(token_names or config.token_names)
    ids = list(token_ids or config.token_ids)
    empty = torch.zeros(config.n_rows, config.hidden_size)
    tokens = PersonalizedTokens(name, names, ids, config.k_g, config.k_u, empty, empty)
    del tokens.input_rows, tokens.output_rows  # parameters -> plain attributes holding the encoder's output
    tokens.input_rows, tokens.output_rows = input_rows, output_rows
    tokens.generation_group = _generation_group(config)
    return tokens


def _generation_group(config: EncoderConfig) -> str:
    """The self-prompt group before an image the encoder's rows were trained with (its recipe's)."""
    return str((config.recipe or {}).get("generation_group", "full"))


class ZeroShot:
    """A trained encoder and the frozen backbone's features: `encode(name, photos)` -> `PersonalizedTokens`."""

    def __init__(self, encoder: ConceptEncoder, backbone, code_cache=None):
        self.encoder, self.backbone = encoder.eval(), backbone
        self.features = photo_features(encoder.config, backbone, code_cache)

    @property
    def config(self) -> EncoderConfig:
        return self.encoder.config

    @torch.no_grad()
    def encode(self, name: str, photos: list, token_names=None, token_ids=None) -> PersonalizedTokens:
        """The concept `<name>` from 1..max_photos photos (paths or PIL images), as a loadable, savable concept."""
        photos = list(photos)
        if not photos:
            raise EncoderError(f"no photos given for <{name}>: give 1 to {self.config.max_photos} photos of it")
        if len(photos) > self.config.max_photos:
            raise EncoderError(f"{len(photos)} photos given for <{name}>, this encoder reads at most "
                               f"{self.config.max_photos}; pass the {self.config.max_photos} best ones")
        started = time.perf_counter()
        features = self.features(photos).unsqueeze(0)
        device = next(self.encoder.parameters()).device
        input_rows, output_rows = self.encoder(features.to(device))
        config = self.config
        tokens = PersonalizedTokens(name, list(token_names or config.token_names), list(token_ids or config.token_ids),
                                    config.k_g, config.k_u, input_rows[0].cpu(), output_rows[0].cpu())
        tokens.generation_group = _generation_group(config)
        tokens.encoded_seconds = time.perf_counter() - started  # what adding this concept cost
        return tokens


def save_encoder(directory: str | Path, encoder: ConceptEncoder, backbone_fingerprint: dict,
                 extra: dict | None = None) -> Path:
    """Write the encoder's weights and config (atomically)."""
    config = {"format_version": ENCODER_FORMAT, "kind": "yochameleon-concept-encoder",
              "base_model": backbone_fingerprint, **encoder.config.to_json(), **(extra or {})}
    with atomic_dir(directory) as staging:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in encoder.state_dict().items()},
                  str(staging / ENCODER_WEIGHTS))
        (staging / ENCODER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return Path(directory)


def read_encoder_config(directory: str | Path) -> tuple[EncoderConfig, dict]:
    """The encoder's config (checked) and the raw JSON; errors name the file and the field."""
    directory = Path(directory)
    path = directory / ENCODER_CONFIG
    if not path.exists():
        raise EncoderError(f"{directory} is not a concept encoder (no {ENCODER_CONFIG}); point at the 'encoder' "
                           "folder of a `python -m yochameleon.train_encoder` run (or its 'best' folder)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EncoderError(f"{path} is not valid JSON ({err}); copy the encoder folder again") from err
    if not isinstance(raw, dict) or raw.get("format_version") != ENCODER_FORMAT:
        raise EncoderError(f"{path}: format_version {raw.get('format_version') if isinstance(raw, dict) else None} "
                           f"is not {ENCODER_FORMAT}; upgrade yochameleon or re-train the encoder")
    values = {}
    for name in (f.name for f in fields(EncoderConfig)):
        if name not in raw:
            if name in ("width", "layers", "heads", "max_photos", "feature_source", "feature_model", "feature_layer",
                        "recipe"):
                continue
            raise EncoderError(f"{path}: field {name!r} is missing; the encoder is damaged: copy it again")
        values[name] = raw[name]
    for name in ("hidden_size", "feature_dim", "feature_tokens", "k_g", "k_u", "width", "layers", "heads",
                 "max_photos"):
        if name in values and (not isinstance(values[name], int) or isinstance(values[name], bool)
                               or values[name] < 0):
            raise EncoderError(f"{path}: field {name!r} is {values[name]!r}, expected a count")
    values["token_names"], values["token_ids"] = tuple(values["token_names"]), tuple(values["token_ids"])
    if len(values["token_ids"]) != 1 + values["k_g"] + values["k_u"]:
        raise EncoderError(f"{path} lists {len(values['token_ids'])} token ids for 1 + k_g + k_u = "
                           f"{1 + values['k_g'] + values['k_u']} rows; the encoder is damaged: copy it again")
    if values.get("feature_source", "backbone") not in FEATURE_SOURCES:
        raise EncoderError(f"{path}: feature_source {values['feature_source']!r} is not one of "
                           f"{', '.join(FEATURE_SOURCES)}; upgrade yochameleon or re-train the encoder")
    layer = values.get("feature_layer")
    if layer is not None and (not isinstance(layer, int) or isinstance(layer, bool) or layer < 1):
        raise EncoderError(f"{path}: field 'feature_layer' is {layer!r}, expected null or a decoder layer (1, 2, ...)")
    if values.get("feature_source") == "vision" and not isinstance(values.get("feature_model"), dict):
        raise EncoderError(f"{path}: feature_source is vision but feature_model (the vision checkpoint) is missing; "
                           "the encoder is damaged: copy it again")
    if not isinstance(raw.get("base_model"), dict):
        raise EncoderError(f"{path}: field 'base_model' is missing; the encoder is damaged: copy it again")
    return EncoderConfig(**values), raw


def encoder_record(directory: str | Path) -> SimpleNamespace:
    """What an encoder records of its backbone, in an adapter config's shape (`base_model`, `directory`): how
    `PersonalizedModel.load(encoder=...)` finds the backbone when no adapter is given."""
    _, raw = read_encoder_config(directory)
    path = Path(directory) / ENCODER_CONFIG
    return SimpleNamespace(base_model=BaseModel.parse(raw["base_model"], path), directory=Path(directory))


def load_encoder(directory: str | Path, backbone, fingerprint: dict | None = None) -> ConceptEncoder:
    """An encoder directory for `backbone`: refused (naming the file and the difference) when it was trained on
    another backbone, when a tensor is missing or of the wrong shape."""
    directory = Path(directory)
    config, raw = read_encoder_config(directory)
    path = directory / ENCODER_CONFIG
    fingerprint = fingerprint or backbone.fingerprint()
    check_backbone_match(SimpleNamespace(base_model=BaseModel.parse(raw["base_model"], path)), fingerprint,
                         f"encoder {directory}")
    vocabulary = backbone.vocabulary_map
    wrong = [(n, i) for n, i in zip(config.token_names, config.token_ids) if vocabulary.get(n) != i]
    if wrong:
        raise EncoderError(f"{path}: token {wrong[0][0]} is recorded as id {wrong[0][1]}, the loaded backbone has "
                           f"{vocabulary.get(wrong[0][0])}; the encoder is damaged or for another backbone")
    weights_path = directory / ENCODER_WEIGHTS
    weights = read_safetensors(directory, ENCODER_CONFIG, ENCODER_WEIGHTS, EncoderError, "copy it again")
    empty = torch.zeros(config.n_rows, config.hidden_size)
    encoder = ConceptEncoder(config, empty, empty)
    expected = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if expected != got:
        diff = sorted(set(expected.items()) ^ set(got.items()))
        raise EncoderError(f"{weights_path} does not match {ENCODER_CONFIG} (first difference: {diff[0]}); "
                           "the encoder is damaged: copy it again")
    if not all(bool(torch.isfinite(v).all()) for v in weights.values()):
        raise EncoderError(f"{weights_path} holds NaN or infinite values; copy it again or re-train")
    encoder.load_state_dict(weights)
    return encoder.to(backbone.device)
