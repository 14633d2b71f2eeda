"""Build the tiny Chameleon used by tests, the demo and CPU benchmarks.

It is a real `ChameleonForConditionalGeneration` (random weights, fixed seed)
with the 7B model's vocabulary layout: 65536 ids, image codes `IMGIMG...Z` at
4-8195, `<eoss>` 8196, `<racm3:break>` 8197, `<reserved08706>` (end of turn)
8710, `<image>` 8711, BPE text tokens after it and `<reservedNNNNN>` tokens
filling the rest (so `<reserved16200>` exists, as Yo'Chameleon expects). It has
a VQ encoder and an Anole-layout VQ decoder, a byte-level BPE tokenizer built
with `tokenizers`, and a processor for 64x64 images. Everything is written in
HF format and read back through the same `from_pretrained` path as the 7B.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from yochameleon.data import templates

log = logging.getLogger(__name__)

VOCAB_SIZE = 65536
NUM_IMAGE_CODES = 8192
FIRST_IMAGE_ID = 4
EOI_ID, BOI_ID = 8196, 8197  # <eoss>, <racm3:break>
IMAGE_PLACEHOLDER_ID = 8711  # <image>
FIRST_TEXT_ID = 8712
TINY_BUILD_VERSION = "1"  # bump when the recipe below changes; the cache key includes it

TINY_SPEC = {
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 2048,
    "image_resolution": 64,
    "vq_base_channels": 32,
    "vq_channel_multiplier": [1, 2, 2],
    "vq_latent_channels": 32,
    "vq_attn_resolutions": [16],
    "text_vocab_size": 3000,
    "seed": 0,
}

_BASE_CORPUS = """
A photo of a dog. A photo of a cat. A picture of a toy on a table. This is a photo of a small brown
and white dog sitting on the grass. The dog is looking at the camera. Is there a dog in this image?
Yes, there is. No, there is not. What color is the object? It is red, blue, green, yellow, orange,
pink, purple, black, white, grey or brown. Describe the image. The image shows a person, an animal,
a plush toy, a backpack, a bowl, a can, a candle, a clock, a boot, a sneaker, a car, a duck, a sloth,
a bear, a pair of sunglasses. Where is it? It is on the beach, in the park, on a sofa, in the snow,
in the kitchen, on the street, next to a window, under a tree. What is it doing? It is sleeping,
running, sitting, playing, standing, smiling, eating. How many are there? One, two, three, four.
Question: Answer: Human: AI: I think so. I do not think so. I can see it in this picture. I cannot
see it here. The subject, the photo, this image, that picture, my friend, your pet, their toy.
"""


def training_corpus(extra: tuple[str, ...] = (), sentences=None) -> list[str]:
    """Text the tiny BPE is trained on: a fixed paragraph, prompt sentences and `extra` lines.

    `sentences` holds the template lists by their `yochameleon.data.templates` names (the default);
    the toy world passes its own fixed copy, `yochameleon.toyworld.sentences`.
    """
    sentences = templates if sentences is None else sentences
    lines = [line for line in _BASE_CORPUS.splitlines() if line.strip()]
    for group in (sentences.RECOGNITION_QUESTIONS, sentences.POSITIVE_ANSWERS,
                  sentences.NEGATIVE_ANSWERS, sentences.GENERATION_PROMPTS):
        lines += list(group)
    lines += [q + " " + a for q, a in sentences.FALLBACK_TEXT_QA]
    # Repeat the key answer words so "Yes" and "No" become single tokens.
    lines += ["Yes", "No", "Yes,", "No,", "Yes.", "No."] * 50
    return lines + list(extra)


def image_token_name(code: int) -> str:
    """Chameleon's name for VQ code `code`: decimal digits spelled A-J, then 'Z' (12 -> IMGIMGBCZ)."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def build_tokenizer(text_vocab_size: int, extra_corpus: tuple[str, ...] = (), sentences=None):
    """Byte-level BPE with the 7B id layout; returns a transformers fast tokenizer (`training_corpus` is its text)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=text_vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(training_corpus(extra_corpus, sentences), trainer)
    learned = json.loads(bpe.to_str())["model"]
    text_tokens = sorted(learned["vocab"], key=learned["vocab"].get)

    vocab: dict[str, int] = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for code in range(NUM_IMAGE_CODES):
        vocab[image_token_name(code)] = FIRST_IMAGE_ID + code
    vocab["<eoss>"], vocab["<racm3:break>"] = EOI_ID, BOI_ID
    for token_id in range(BOI_ID + 1, IMAGE_PLACEHOLDER_ID):
        vocab[f"<reserved{token_id - 4:05d}>"] = token_id  # 8710 -> <reserved08706>, as in the 7B
    vocab["<image>"] = IMAGE_PLACEHOLDER_ID
    for offset, token in enumerate(text_tokens):
        vocab[token] = FIRST_TEXT_ID + offset
    next_reserved = IMAGE_PLACEHOLDER_ID - 4
    for token_id in range(FIRST_TEXT_ID + len(text_tokens), VOCAB_SIZE):
        vocab[f"<reserved{next_reserved:05d}>"] = token_id
        next_reserved += 1
    assert len(vocab) == VOCAB_SIZE and "<reserved16200>" in vocab

    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                                                    for m in learned["merges"]]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = [name for name in vocab if name.startswith("<") and name.endswith(">")]
    tok.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in special])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>", sep_token="<reserved08706>",
    )
    return fast, vocab


def build_config(spec: dict, vocab: dict[str, int]):
    """ChameleonConfig for the tiny model (the 7B layout, small widths)."""
    from transformers import ChameleonConfig, ChameleonVQVAEConfig

    res = spec["image_resolution"]
    # The 7B codebook has 8192 codes, one per IMGIMG token; a smaller one uses the first ids only.
    vq = ChameleonVQVAEConfig(
        embed_dim=spec.get("vq_embed_dim", spec["vq_latent_channels"]),
        num_embeddings=spec.get("vq_num_codes", NUM_IMAGE_CODES),
        latent_channels=spec["vq_latent_channels"], resolution=res, in_channels=3,
        base_channels=spec["vq_base_channels"], channel_multiplier=list(spec["vq_channel_multiplier"]),
        num_res_blocks=1, attn_resolutions=list(spec["vq_attn_resolutions"]), attn_type="vanilla",
    )
    return ChameleonConfig(
        vocab_size=VOCAB_SIZE, hidden_size=spec["hidden_size"], intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"], num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_attention_heads"], max_position_embeddings=spec["max_position_embeddings"],
        bos_token_id=0, pad_token_id=1, eos_token_id=2, vq_config=vq.to_dict(), vocabulary_map=vocab,
        tie_word_embeddings=False,
    )


@torch.no_grad()
def _spread_codebook(model, resolution: int) -> None:
    """Place the random codebook on encoder latents of random smooth images.

    With default init every patch of a random encoder maps to the same code;
    sampling codebook entries from actual latents makes images use many codes,
    like a trained tokenizer, so reconstruction targets are not trivial.
    """
    vq = model.model.vqmodel
    generator = torch.Generator().manual_seed(1234)
    coarse = torch.rand(64, 3, 4, 4, generator=generator) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(resolution, resolution), mode="bilinear")
    images = images + 0.2 * torch.randn(images.shape, generator=generator)
    latents = vq.quant_conv(vq.encoder(images.clamp(-1, 1)))  # (N, D, h, w)
    vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    picks = torch.randint(0, vectors.shape[0], (vq.quantize.num_embeddings,), generator=generator)
    noise = 0.05 * vectors.std() * torch.randn(vq.quantize.num_embeddings, vectors.shape[1], generator=generator)
    vq.quantize.embedding.weight.copy_(vectors[picks] + noise)


def image_tokens_per_image(vq_config) -> int:
    """Number of VQ codes one image becomes (resolution / 2^(levels-1), squared)."""
    side = vq_config.resolution // 2 ** (len(vq_config.channel_multiplier) - 1)
    return side * side


def _spec_key(spec: dict) -> str:
    # The tokenizer is trained on our templates, so editing them must rebuild the model too.
    corpus = hashlib.sha256("\n".join(training_corpus()).encode()).hexdigest()
    blob = json.dumps({"version": TINY_BUILD_VERSION, "corpus": corpus, **spec}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def default_cache_dir() -> Path:
    """Where built tiny models live: $YOCHAMELEON_CACHE or ~/.cache/yochameleon."""
    root = os.environ.get("YOCHAMELEON_CACHE") or Path.home() / ".cache" / "yochameleon"
    return Path(root)


def build_tiny_checkpoint(out_dir: str | Path, spec: dict | None = None) -> Path:
    """Build the tiny model from `spec` and write it in HF format to `out_dir` (atomically)."""
    from yochameleon.model.backbone import YoChameleonForConditionalGeneration

    spec = {**TINY_SPEC, **(spec or {})}
    tokenizer, vocab = build_tokenizer(spec["text_vocab_size"])
    config = build_config(spec, vocab)
    torch.manual_seed(spec["seed"])
    model = YoChameleonForConditionalGeneration(config)
    _spread_codebook(model, spec["image_resolution"])
    return write_checkpoint(model, tokenizer, spec, _spec_key(spec), out_dir)


def build_processor(tokenizer, config):
    """The ChameleonProcessor of a small model: square images of the VQ resolution."""
    from transformers import ChameleonImageProcessor, ChameleonProcessor

    res = config.vq_config.resolution
    image_processor = ChameleonImageProcessor(size={"shortest_edge": res}, crop_size={"height": res, "width": res})
    return ChameleonProcessor(image_processor=image_processor, tokenizer=tokenizer,
                              image_seq_length=image_tokens_per_image(config.vq_config))


def write_checkpoint(model, tokenizer, spec: dict, key: str, out_dir: str | Path, extra_files: dict | None = None):
    """Save a small model, its processor and its build spec in HF format to `out_dir`, atomically."""
    out_dir = Path(out_dir)
    processor = build_processor(tokenizer, model.config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out_dir.parent))
    staging.chmod(0o755)
    try:
        model.save_pretrained(staging)
        if spec.get("draw_sampling"):  # the image-sampling defaults the build was measured with
            config_file = staging / "generation_config.json"
            generation = json.loads(config_file.read_text())
            config_file.write_text(json.dumps({**generation, "image_sampling": dict(spec["draw_sampling"])}, indent=2))
        # Record the upstream class, as the 7B checkpoints do; our subclass only adds the decoder module.
        config_path = staging / "config.json"
        config_json = json.loads(config_path.read_text())
        config_json["architectures"] = ["ChameleonForConditionalGeneration"]
        config_path.write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
        processor.save_pretrained(staging)
        (staging / "yochameleon_tiny.json").write_text(json.dumps({"spec": spec, "key": key}, indent=2))
        for name, content in (extra_files or {}).items():
            target = staging / name
            target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def ensure_tiny_checkpoint(cache_dir: str | Path | None = None, spec: dict | None = None) -> Path:
    """Return the cached tiny checkpoint directory, building it once if absent."""
    spec = {**TINY_SPEC, **(spec or {})}
    target = Path(cache_dir or default_cache_dir()) / f"tiny-chameleon-{_spec_key(spec)}"
    if not (target / "config.json").exists():
        log.info("building the tiny Chameleon in %s (once; cached afterwards)", target)
        build_tiny_checkpoint(target, spec)
    return target
