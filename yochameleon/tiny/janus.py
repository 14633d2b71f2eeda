"""Build the tiny Janus used by tests and CPU runs of the Janus family.

It is a real `JanusForConditionalGeneration` (random weights, fixed seed) with Janus-Pro's
layout at small widths: a LLaMA language model, a SigLIP vision encoder and aligner for shown
images, a VQ generation tokenizer with its generation embedding, aligner and head, and Janus's
special tokens (`<｜begin▁of▁sentence｜>`, `<|User|>`, `<|Assistant|>`, `<image_placeholder>`,
`<begin_of_image>`, `<end_of_image>`). As in Janus-Pro, the embedding has more rows than the
tokenizer has tokens; a concept lives on those unused rows. 64x64 images are 16 vision
positions when shown and 16 VQ codes when drawn. Written in HF format with its processor and
generation config, and read back through the `from_pretrained` path a Janus-Pro checkpoint takes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from yochameleon.io import atomic_dir
from yochameleon.tiny.chameleon import default_cache_dir, training_corpus

log = logging.getLogger(__name__)

TINY_JANUS_VERSION = "2"  # bump when the recipe below changes; the cache key includes it
SPECIAL_TOKENS = {
    "bos": "<｜begin▁of▁sentence｜>", "eos": "<｜end▁of▁sentence｜>", "pad": "<｜▁pad▁｜>",
    "user": "<|User|>", "assistant": "<|Assistant|>",
    "image": "<image_placeholder>", "boi": "<begin_of_image>", "eoi": "<end_of_image>",
}
TINY_JANUS_SPEC = {
    "text_vocab_size": 2000,  # BPE tokens; the specials follow
    "unused_rows": 256,  # embedding rows past the tokenizer (Janus-Pro-1B: 102400 rows)
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 2048,
    "image_size": 64,
    "patch_size": 16,  # 64 / 16 = 4 -> 16 positions per shown image and 16 codes per drawn one
    "vision_hidden_size": 64,
    "vision_layers": 2,
    "vq_num_codes": 512,
    "vq_base_channels": 32,
    "seed": 0,
}
# Janus's turns put a space before the first word of a question and of an answer (" Yes", " A"):
# repeated so those become single tokens, as they are in Janus-Pro's tokenizer.
CHAT_LINES = ("<|User|>: What is in this photo?\n\n<|Assistant|>: A photo of a dog.",
              *[f"<|User|>: Is it there?\n\n<|Assistant|>: {word}" for word in ("Yes", "No", "Yes.", "No.")] * 50,
              *[f": {letter}" for letter in "ABCDEFGH"] * 50)


def build_tokenizer(text_vocab_size: int):
    """Byte-level BPE on the project's training corpus, then Janus's special tokens after it."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=text_vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(training_corpus(CHAT_LINES), trainer)
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS.values()])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=SPECIAL_TOKENS["bos"], eos_token=SPECIAL_TOKENS["eos"],
        pad_token=SPECIAL_TOKENS["pad"],
        extra_special_tokens={"image_token": SPECIAL_TOKENS["image"], "boi_token": SPECIAL_TOKENS["boi"],
                              "eoi_token": SPECIAL_TOKENS["eoi"]},
    )


def build_config(spec: dict, tokenizer):
    """JanusConfig of the tiny model: Janus-Pro's parts at small widths."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    hidden, side = spec["hidden_size"], spec["image_size"] // spec["patch_size"]
    text = LlamaConfig(
        vocab_size=len(tokenizer) + spec["unused_rows"], hidden_size=hidden,
        intermediate_size=spec["intermediate_size"], num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"], num_key_value_heads=spec["num_attention_heads"],
        max_position_embeddings=spec["max_position_embeddings"], bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision = JanusVisionConfig(
        hidden_size=spec["vision_hidden_size"], num_hidden_layers=spec["vision_layers"], num_attention_heads=4,
        image_size=spec["image_size"], patch_size=spec["patch_size"], projection_dim=hidden, depth=2,
        num_image_tokens=side * side,
    )
    # Five levels (four halvings), as Janus-Pro's VQ: 64 px -> a 4 x 4 code grid.
    vq = JanusVQVAEConfig(
        embed_dim=8, num_embeddings=spec["vq_num_codes"], latent_channels=spec["vq_base_channels"],
        base_channels=spec["vq_base_channels"], channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=1,
        projection_dim=hidden, image_token_embed_dim=hidden, num_hidden_layers=2,
    )
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq,
                       image_token_id=tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["image"]),
                       tie_word_embeddings=False)


@torch.no_grad()
def _spread_codebook(model, size: int) -> None:
    """Place the random codebook on encoder latents of random smooth images, so images use many codes
    (a random encoder maps every patch to one code), as the tiny Chameleon does."""
    vq = model.model.vqmodel
    generator = torch.Generator().manual_seed(1234)
    coarse = torch.rand(64, 3, 4, 4, generator=generator) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    images = (images + 0.2 * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
    latents = vq.quant_conv(vq.encoder(images))
    vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    picks = torch.randint(0, vectors.shape[0], (vq.quantize.num_embeddings,), generator=generator)
    vq.quantize.embedding.weight.copy_(vectors[picks])


def spec_key(spec: dict) -> str:
    corpus = hashlib.sha256("\n".join(training_corpus(CHAT_LINES)).encode()).hexdigest()
    blob = json.dumps({"version": TINY_JANUS_VERSION, "corpus": corpus, **spec}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def build_tiny_janus(out_dir: str | Path, spec: dict | None = None) -> Path:
    """Build the tiny Janus from `spec` and write it in HF format to `out_dir` (atomically)."""
    from transformers import GenerationConfig, JanusImageProcessor, JanusProcessor

    from yochameleon.model.janus import YoJanusForConditionalGeneration

    spec = {**TINY_JANUS_SPEC, **(spec or {})}
    tokenizer = build_tokenizer(spec["text_vocab_size"])
    config = build_config(spec, tokenizer)
    torch.manual_seed(spec["seed"])
    model = YoJanusForConditionalGeneration(config).eval()
    _spread_codebook(model, spec["image_size"])
    # What Janus-Pro's generation_config.json holds for image generation: guidance 5, begin-of-image.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, guidance_scale=5,
        generation_kwargs={"boi_token_id": tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS["boi"])},
    )
    size = spec["image_size"]
    # Janus-Pro normalises to [-1, 1] (mean = std = 0.5), what its VQ encoder and decoder work in.
    image_processor = JanusImageProcessor(size={"height": size, "width": size}, min_size=14,
                                          image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = JanusProcessor(image_processor=image_processor,
                               tokenizer=tokenizer, num_image_tokens=config.vision_config.num_image_tokens)
    with atomic_dir(out_dir) as staging:
        model.save_pretrained(staging)
        config_path = staging / "config.json"
        data = json.loads(config_path.read_text())
        data["architectures"] = ["JanusForConditionalGeneration"]  # the upstream class, as Janus-Pro records
        config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        processor.save_pretrained(staging)
        (staging / "yochameleon_tiny.json").write_text(json.dumps({"spec": spec, "key": spec_key(spec)}, indent=2))
    return Path(out_dir)


def ensure_tiny_janus(cache_dir: str | Path | None = None, spec: dict | None = None) -> Path:
    """Return the cached tiny Janus directory, building it once (seconds) if absent."""
    spec = {**TINY_JANUS_SPEC, **(spec or {})}
    target = Path(cache_dir or default_cache_dir() / "models") / f"tiny-janus-{spec_key(spec)}"
    if not (target / "config.json").exists():
        log.info("building the tiny Janus in %s (once; cached afterwards)", target)
        build_tiny_janus(target, spec)
    return target
