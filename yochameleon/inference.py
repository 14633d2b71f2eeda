"""Use trained concepts from Python: recognize, answer questions, chat about `<name>`.

    from yochameleon.inference import PersonalizedModel
    pm = PersonalizedModel.load(["outputs/corgi/yochameleon/adapter"])
    pm.recognize("photo.jpg")            # Recognition(answer='Yes', probability=0.93, concept='corgi')
    pm.answer("Describe <corgi>.")       # free text, KV cache, never image tokens
    pm.generate_images("A photo of <corgi> on the beach.", n=4, seed=0)   # list of PIL images
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from yochameleon.concept.adapter import AdapterConfig, load_adapter, read_adapter_config, read_adapter_configs
from yochameleon.data.images import load_image
from yochameleon.data.samples import SampleBuilder
from yochameleon.errors import YoChameleonError
from yochameleon.metrics.recognition import DEFAULT_QUESTION, yes_probabilities
from yochameleon.model.backbone import resolve_device, resolve_dtype
from yochameleon.model.decoding import generate_answer
from yochameleon.model.image_generation import draw, require_decoder
from yochameleon.model.load import load_backbone
from yochameleon.model.personalized import PersonalizedChameleon
from yochameleon.sources import recorded_source, resolve_source

log = logging.getLogger(__name__)


@dataclass
class Recognition:
    """A Yes/No verdict with P(Yes) from the answer logits."""

    concept: str
    answer: str
    probability: float


_SHAPES = ("vocab_size", "hidden_size", "num_hidden_layers")
FLAG = "--model-path <dir> (Python: model_path=)"  # how `answer`, `generate` and the API take a backbone


def adapter_concepts(adapters) -> list[str]:
    """The concept names the adapters hold, read from their configs: no weights, no backbone."""
    return [read_adapter_config(a).concept for a in adapters]


def check_concept_names(text: str, loaded) -> None:
    """Every `<name>` in a question or prompt must be a loaded concept (`<sks>` is the main one)."""
    loaded = list(loaded)
    unknown = [n for n in re.findall(r"<([A-Za-z0-9_-]+)>", text) if n not in loaded and n != "sks"]
    if unknown:
        raise YoChameleonError(f"unknown concept <{unknown[0]}> in {text!r}; loaded: "
                               + ", ".join(f"<{n}>" for n in loaded) + " (fix the name, or add its --adapter)")


def check_before_loading(adapters, texts=(), concept: str | None = None, encoded=()) -> None:
    """What `answer` and `generate` check before the backbone loads: every concept a question, a prompt or
    --concept names is one of the adapters' or one added from photos (`encoded` names; the same rule
    `PersonalizedModel` applies)."""
    names = adapter_concepts([Path(a) for a in adapters]) + list(encoded)
    for text in [t for t in texts if t] + ([f"<{concept.strip('<>')}>"] if concept else []):
        check_concept_names(text, names)


def encoded_concepts(values) -> tuple[dict[str, list[str]], str | None]:
    """`--concept` values of `answer` / `generate`: `name=<photo, folder or photo,photo,...>` adds a concept
    with the encoder; a bare name picks which loaded concept a recognition is about (at most one)."""
    added, picked = {}, [v for v in values or [] if "=" not in v]
    for value in values or []:
        name, sep, photos = value.partition("=")
        if not sep:
            continue
        if not photos:
            raise YoChameleonError(f"--concept {value!r}: give name=<photo, folder, or photos separated by commas>")
        added.setdefault(name.strip().strip("<>"), []).extend(p for p in photos.split(",") if p)
    if len(picked) > 1:
        raise YoChameleonError(f"--concept names {picked} to ask about: give one (name=photos adds a concept)")
    return added, (picked[0] if picked else None)


def load_for_command(adapters, encoder, added: dict, model_path, device, dtype) -> "PersonalizedModel":
    """The model `answer` / `generate` use: the adapters, then each concept of `added` from its photos."""
    if added and not encoder:
        raise YoChameleonError(f"--concept {next(iter(added))}=... adds a concept from photos: give --encoder <dir> "
                               "(a trained concept encoder, `python -m yochameleon.train_encoder`)")
    pm = PersonalizedModel.load(adapters or (), model_path=model_path, device=device, dtype=dtype, encoder=encoder)
    for name, photos in added.items():
        pm.add_concept(name, photos)
    return pm


def _directory_shapes(path: Path) -> dict | None:
    """A checkpoint directory's family and shapes from its config.json (None when unreadable: the loader says why)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    text = config.get("text_config") or {} if config.get("model_type") == "janus" else config
    return {"family": config.get("model_type"), **{k: text.get(k) for k in _SHAPES}}


def _check_same_backbone(config: AdapterConfig, name: str, shapes: dict) -> None:
    """Refuse, naming both backbones and the flag to pass, when `shapes` are not the adapter's backbone's."""
    base, adapter_dir = config.base_model, config.directory
    differ = [k for k in _SHAPES if shapes.get(k) is not None and shapes[k] != base.get(k)]
    if differ:
        theirs = ", ".join(f"{k}={base.get(k)}" for k in differ)
        ours = ", ".join(f"{k}={shapes.get(k)}" for k in differ)
        raise YoChameleonError(
            f"adapter {adapter_dir} was trained on backbone {base.get('name')!r} ({theirs}), but {name!r} has "
            f"{ours}. Load it with the backbone it was trained on: {FLAG}, or leave the model path out to use "
            "the adapter's recorded one")


def _base_model_path(config: AdapterConfig, model_path, cache_dir) -> Path:
    """The backbone an adapter names (its recorded source), unless the caller gives one."""
    if model_path is not None:
        return Path(model_path)
    base = config.base_model
    source = recorded_source(base.record)
    recorded = Path(base.get("path", ""))
    if source == "local" and not recorded.is_dir():
        raise YoChameleonError(f"adapter {config.directory} was trained on {base.name!r} at {recorded}, which is "
                               "not here; pass the local checkpoint directory with --model-path / model_path=")
    return resolve_source(source, cache_dir, recorded)


class PersonalizedModel:
    """A backbone with one or more concept adapters loaded (each on its own reserved ids)."""

    def __init__(self, backbone, concepts, self_prompting: dict[str, bool], self_prompt_mode: dict[str, str]):
        self.backbone = backbone
        self.concepts = {c.name: c for c in concepts}
        self.self_prompting = self_prompting
        self.self_prompt_mode = self_prompt_mode  # forced | emitted, per concept
        self.model = PersonalizedChameleon(backbone.model, list(concepts)).to(backbone.device).eval()

    @classmethod
    def load(cls, adapters=(), model_path=None, device: str | None = None, dtype: str = "auto",
             cache_dir=None, encoder=None) -> "PersonalizedModel":
        """Load the backbone (from the first adapter's record, else the encoder's, unless `model_path`), every
        adapter, and a concept encoder (`encoder`: its directory) for `add_concept`.

        `dtype` is the backbone's: "auto" (bfloat16 on a GPU, float32 on CPU), "float32", "bfloat16"
        or "float16"; the concept rows keep their own precision and are cast where they are used.
        """
        adapters = [Path(a) for a in ([adapters] if isinstance(adapters, (str, Path)) else adapters)]
        if not adapters and encoder is None:
            raise YoChameleonError("give at least one adapter directory, or a concept encoder to add concepts with")
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        configs = read_adapter_configs(adapters)  # each read and checked once, then passed down
        from yochameleon.concept.encoder import encoder_record

        first = configs[0] if configs else encoder_record(encoder)
        path = _base_model_path(first, model_path, cache_dir)
        # The loaded backbone's name: the adapter's record, or the directory given in its place.
        name = first.base_model.name if model_path is None else Path(model_path).name
        shapes = _directory_shapes(path)
        for config in configs:  # before the 10-15 s of loading: config.json is enough
            if shapes is not None:
                _check_same_backbone(config, name, shapes)
        backbone = load_backbone(path, name=name, dtype=dtype, device=device)
        fingerprint = backbone.fingerprint()
        concepts, taken, self_prompting, modes = [], set(), {}, {}
        for config in configs:
            _check_same_backbone(config, name, fingerprint)
            tokens = load_adapter(config, backbone, taken, fingerprint)
            if tokens.name in {c.name for c in concepts}:
                raise YoChameleonError(f"two adapters are both named <{tokens.name}> ({config.directory}); rename one")
            taken |= set(tokens.token_ids.tolist())
            concepts.append(tokens.to(device))
            self_prompting[tokens.name], modes[tokens.name] = config.self_prompting, config.self_prompt_mode
        model = cls(backbone, concepts, self_prompting, modes)
        if encoder is not None:
            model.encoder = model._zero_shot(encoder)
        return model

    encoder = None  # the concept encoder `add_concept` uses by default (`load(..., encoder=)`)

    def _zero_shot(self, encoder):
        """A `ZeroShot` over this backbone from an encoder directory (or one given as it is)."""
        from yochameleon.concept.encoder import ZeroShot, load_encoder

        if encoder is None:
            if self.encoder is None:
                raise YoChameleonError("no concept encoder: pass encoder=<directory> to add_concept (or to load)")
            return self.encoder
        if isinstance(encoder, ZeroShot):
            return encoder
        return ZeroShot(load_encoder(encoder, self.backbone), self.backbone)

    def add_concept(self, name: str, photos, encoder=None):
        """Add `<name>` from 1-5 photos (paths, a folder, PIL images) with a concept encoder, no training: from
        now on questions and prompts may name it beside the concepts already loaded (as PLVM adds a person in
        the middle of a dialogue). Returns its `PersonalizedTokens` (`save_adapter` writes it as an adapter).

        Refused with nothing changed: a name already loaded or not allowed, no or unreadable photos, too many,
        an encoder trained on another backbone."""
        from yochameleon.concept.adapter import _free_reserved_run
        from yochameleon.data.images import list_images, validate_concept_name

        name = validate_concept_name(str(name).strip("<>"))
        if name in self.concepts:
            raise YoChameleonError(f"<{name}> is already loaded; add the new concept under another name")
        zero_shot = self._zero_shot(encoder)
        items = [photos] if isinstance(photos, (str, Path, Image.Image)) else list(photos)
        if len(items) == 1 and isinstance(items[0], (str, Path)) and Path(items[0]).is_dir():
            items = list_images(items[0], f"photos of <{name}>")
        images = [self._image(item) for item in items]  # an unreadable file is named here
        config = zero_shot.config
        names, ids = list(config.token_names), list(config.token_ids)
        taken = {i for c in self.concepts.values() for i in c.token_ids.tolist()}
        if taken & set(ids):
            names, ids = _free_reserved_run(self.backbone.vocabulary_map, config.n_rows, taken)
        tokens = zero_shot.encode(name, images, names, ids).to(self.backbone.device)
        recipe = config.recipe or {}
        self.concepts[name] = tokens
        self.self_prompting[name] = bool(recipe.get("self_prompting", True))
        self.self_prompt_mode[name] = str(recipe.get("inference", {}).get("self_prompt", "forced"))
        self.model = PersonalizedChameleon(self.backbone.model, list(self.concepts.values())).to(
            self.backbone.device).eval()
        return tokens

    def builder(self, concept: str | None) -> SampleBuilder:
        """The prompt builder for `<concept>` (the first loaded one for None) with every other loaded concept
        introduced beside it (`concepts="all"`); what a prompt gets by default is `prompt_builder`'s rule."""
        return self.prompt_builder("", concept, concepts="all")

    def introduced(self, text: str, concept: str | None = None, concepts=None) -> list[str]:
        """The loaded concepts whose introduction (soft prompt) enters the prompt `text`.

        By default only those the prompt names: `<name>`, `<sks>` (the concept `concept` picks) or `concept`
        itself, so a prompt that names none is the plain backbone's prompt and its answer is the backbone's.
        `concepts="all"`: every loaded concept (e.g. "Who is in this photo?"); a list of names: those.
        The first one is the prompt's main concept (its `<sks>`, its self-prompt group).
        """
        if concepts is None:
            names = [n for n in self.concepts if f"<{n}>" in text]
            if concept is not None or "<sks>" in text:
                names = [self._pick(concept), *names]
        elif concepts == "all":
            names = [self._pick(concept, text), *self.concepts]
        elif isinstance(concepts, str):
            raise YoChameleonError(f"concepts={concepts!r}: give 'all', a list of loaded concept names, or None "
                                   "(the concepts the prompt names)")
        else:
            names = [self._pick(n) for n in ([concept] if concept is not None else []) + list(concepts)]
        return list(dict.fromkeys(names))

    def prompt_builder(self, text: str, concept: str | None = None, concepts=None) -> SampleBuilder:
        """The builder of the prompt `text`: it introduces `introduced(text, concept, concepts)` and nothing
        else (no concept at all when the prompt names none)."""
        names = self.introduced(text, concept, concepts)
        if not names:
            return SampleBuilder(self.backbone, None, None, False)
        main, others = self.concepts[names[0]], tuple(self.concepts[n] for n in names[1:])
        return SampleBuilder(self.backbone, main, None, self.self_prompting[names[0]], others)

    def _mode(self, builder: SampleBuilder, self_prompt: str | None) -> str:
        """The self-prompt mode of a builder's main concept (its adapter's recipe unless the caller says)."""
        if self_prompt is not None:
            return self_prompt
        return self.self_prompt_mode[builder.tokens.name] if builder.tokens is not None else "forced"

    def _pick(self, concept: str | None, text: str = "") -> str:
        if concept is not None:
            name = concept.strip("<>")
            if name not in self.concepts:
                raise YoChameleonError(f"unknown concept <{name}>; loaded: "
                                       + ", ".join(f"<{n}>" for n in self.concepts))
            return name
        named = [n for n in self.concepts if f"<{n}>" in text]
        return named[0] if named else next(iter(self.concepts))

    @staticmethod
    def _image(image):
        return image.convert("RGB") if isinstance(image, Image.Image) else load_image(image)

    def recognize(self, image, concept: str | None = None, question: str = DEFAULT_QUESTION,
                  self_prompt: str | None = None, concepts=None) -> Recognition:
        """Is `<concept>` in this photo? Scored from the Yes/No logits in one forward pass.

        `self_prompt` ("forced" | "emitted") defaults to what the adapter's recipe says. Introduced: `<concept>`
        and any concept the question names (`concepts="all"`: every loaded one; see `introduced`).
        """
        name = self._pick(concept)
        builder = self.prompt_builder(question, name, concepts)
        p_yes = float(yes_probabilities(self.model, builder, [self._image(image)], question,
                                        self_prompt=self._mode(builder, self_prompt))[0])
        return Recognition(concept=name, answer="Yes" if p_yes > 0.5 else "No", probability=p_yes)

    def answer(self, question: str, image=None, max_new_tokens: int = 64, temperature: float = 0.0,
               seed: int = 0, concept: str | None = None, self_prompt: str | None = None, concepts=None) -> str:
        """Free-form answer, with or without a photo; text only (image tokens are banned).

        Only the concepts the question names (or `concept`) are introduced; a question that names none is
        asked as the plain backbone is, so its answer is the backbone's. `concepts="all"` introduces every
        loaded concept (e.g. "Who is in this photo?"). `self_prompt` ("forced" | "emitted") defaults to
        what the main concept's adapter recipe says.
        """
        self.check_prompt(question)
        builder = self.prompt_builder(question, concept, concepts)
        generator = torch.Generator(device=self.backbone.device).manual_seed(seed)
        return generate_answer(self.model, builder, question, self._image(image) if image is not None else None,
                               self._mode(builder, self_prompt), max_new_tokens, temperature, generator)

    def answer_prompt_ids(self, question: str, image=None, concept: str | None = None, self_prompt: str | None = None,
                          concepts=None) -> list[int]:
        """The ids `answer` continues: the prompt it builds and, under self-prompting, the group (forced or emitted)."""
        from yochameleon.model.decoding import answer_prompts

        builder = self.prompt_builder(question, concept, concepts)
        prompt = builder.prompt_ids(question, self._image(image) if image is not None else None)
        return answer_prompts(self.model, builder, [prompt], "text_qa", self._mode(builder, self_prompt))[0]

    def check_prompt(self, prompt: str) -> None:
        """Every `<name>` in a question or prompt must be a loaded concept (`check_concept_names`)."""
        check_concept_names(prompt, self.concepts)

    def image_prompts(self, prompt: str, concept: str | None = None, concepts=None) -> tuple[list[int], list[int]]:
        """(conditional, unconditional) prompt ids, both ending with begin-of-image.

        The conditional prompt carries the soft prompts of the concepts it names (`introduced`) and, under
        self-prompting, the main one's `<g-tokens>` group; the unconditional one is an empty turn without any concept.
        """
        self.check_prompt(prompt)
        builder = self.prompt_builder(prompt, concept, concepts)
        cond = builder.image_prompt_ids(prompt)
        uncond = builder.unconditional_image_prompt_ids(cond)
        bb = self.backbone
        limit = bb.max_positions
        if len(cond) + bb.image_seq_length + 1 > limit:
            raise YoChameleonError(f"prompt is {len(cond)} tokens; with one image ({bb.image_seq_length} tokens) it "
                                   f"exceeds the context window of {limit}. Shorten the prompt.")
        return cond, uncond

    def generate_images(self, prompt: str, n: int = 1, guidance_scale: float | None = None,
                        temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                        seed: int = 0, batch_size: int = 4, concept: str | None = None,
                        progress: bool = False, concepts=None) -> list[Image.Image]:
        """Draw `n` images for `prompt` (e.g. "A photo of <bo> on the beach."); same seed, same images.

        A sampling setting left None is the backbone's default (`Backbone.sampling`: the checkpoint's
        recorded settings, else temperature 1, no filter, the family's guidance: Chameleon off, Janus 5)."""
        if n <= 0:
            raise YoChameleonError(f"number of images must be positive, got {n}")
        sampling = self.backbone.sampling(temperature, top_k, top_p, guidance_scale)
        require_decoder(self.backbone)
        cond, uncond = self.image_prompts(prompt, concept, concepts)
        generator = torch.Generator(device=self.backbone.device).manual_seed(seed)
        from tqdm.auto import tqdm

        with tqdm(total=n * self.backbone.image_seq_length, desc="image tokens", unit="tok",
                  disable=not progress) as bar:
            return draw(self.model, self.backbone, [cond] * n, [uncond] * n, sampling, generator, batch_size, bar)
