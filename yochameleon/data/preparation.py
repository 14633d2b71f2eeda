"""Prepare a concept once (cached): retrieval of hard negatives, easy negatives, soft-positive tiers.

    python -m yochameleon.prepare +concept=demo      (training runs this automatically)

Embeds the concept photos and the negative pool, then:
  hard negatives  = for each photo, the most similar pool images that are not the subject,
  easy negatives  = random pool images,
  soft positives  = the pool images closest to the photos, split into tiers (closer tier ->
                    more generation tokens describe it),
  conversations   = when the concept has none, the base model's answers to attribute questions.
Writes a readable manifest.json and contact sheets, cached by a key of the photos' content,
the pool's files, the embedder and the settings: a rerun costs a hash and a file read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from yochameleon.data import templates
from yochameleon.data.embedders import build_embedder, embedder_key
from yochameleon.data.images import load_image
from yochameleon.data.retrieval import closeness, easy_negatives, hard_negatives, soft_positive_tiers
from yochameleon.data.vq_cache import file_digest
from yochameleon.errors import YoChameleonError
from yochameleon.io import atomic_dir
from yochameleon.model.chat import chat_layout
from yochameleon.model.decoding import left_pad
from yochameleon.model.personalized import IGNORE_INDEX

log = logging.getLogger(__name__)
PREPARE_VERSION = 1


@dataclass
class Preparation:
    """What training takes from the preparation step."""

    directory: Path
    hard_negatives: list[str]
    easy_negatives: list[str]
    soft_positives: list[tuple[str, int]]  # (path, number of generation tokens describing it)
    conversations: list[dict] = field(default_factory=list)
    from_cache: bool = False

    @classmethod
    def from_manifest(cls, directory: Path, from_cache: bool) -> "Preparation":
        m = json.loads((directory / "manifest.json").read_text())
        return cls(directory, [h["path"] for h in m["hard_negatives"]], [e["path"] for e in m["easy_negatives"]],
                   [(i["path"], t["n_tokens"]) for t in m["soft_positive_tiers"] for i in t["items"]],
                   m.get("generated_conversations", []), from_cache)


def _pool_signature(paths: list[Path]) -> list:
    # Pools can hold millions of files: identify them by path, size and mtime rather than reading every byte.
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]


def preparation_key(cfg, concept, backbone, embedder_key: str) -> str:
    """Content hash of everything the preparation depends on."""
    blob = json.dumps({
        "version": PREPARE_VERSION, "embedder": embedder_key, "backbone": backbone.fingerprint(),
        "photos": [file_digest(p) for p in concept.photos], "pool": _pool_signature(concept.negatives),
        "held_out": [file_digest(p) for p in [*concept.val_photos, *concept.test_photos]],
        "retrieval": _plain(cfg.retrieval), "soft": _plain(cfg.recipe.soft_positives), "k_g": int(cfg.recipe.k_g),
        "conversations": bool(concept.conversations) or _plain(cfg.recipe.conversations),
        # What the generated conversations are made of: whether they are generated, the questions asked
        # (per category) and how long an answer may be.
        "generated_qa": None if concept.conversations or not _generates_conversations(cfg) else
        generated_qa_facts(concept) | {"agree": bool(cfg.recipe.conversations.agree)},
        "noun": concept.class_noun, "category": concept.category, "seed": int(cfg.seed),
    }, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _generates_conversations(cfg) -> bool:
    """Whether preparation asks the backbone for text QA (the concept has no conversation file of its own)."""
    return bool(cfg.recipe.conversations.generate_when_missing) and bool(cfg.recipe.tasks.text_qa)


def generated_qa_facts(concept) -> dict:
    """What `generate_conversations`' answers about a concept's photos are made of, for a cache key: the
    questions as asked and how long an answer may be (the photos' content is the caller's to add)."""
    return {"questions": _attribute_questions(concept), "max_new_tokens": CONVERSATION_MAX_NEW_TOKENS}


def _attribute_questions(concept) -> list[str]:
    """The questions the backbone is asked about each photo, as they are asked."""
    noun = concept.class_noun or "subject"
    questions = templates.ATTRIBUTE_QUESTIONS.get(concept.category, templates.ATTRIBUTE_QUESTIONS["object"])
    return [q.format(noun=noun) for q in questions]


def _plain(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if hasattr(node, "_metadata") else node


def prepare_concept(cfg, concept, backbone, cache_dir: str | Path, progress: bool = True) -> Preparation:
    """Run (or reuse) the preparation of `concept` for this backbone and recipe."""
    key = preparation_key(cfg, concept, backbone, embedder_key(cfg.retrieval, backbone))
    directory = Path(cache_dir) / "prepare" / f"{concept.name}-{key}"
    if (directory / "manifest.json").exists():
        log.info("preparation of <%s> from cache: %s", concept.name, directory)
        return Preparation.from_manifest(directory, from_cache=True)
    with atomic_dir(directory) as staging:
        _prepare(cfg, concept, backbone, staging, key, progress)
    return Preparation.from_manifest(directory, from_cache=False)


def _load_all(paths, progress: bool, what: str):
    """Load images, skipping unreadable ones (listed, never fatal for the pool)."""
    from tqdm.auto import tqdm

    images, kept, skipped = [], [], []
    for path in tqdm(paths, desc=f"read {what}", disable=not progress):
        try:
            images.append(load_image(path))
            kept.append(Path(path))
        except YoChameleonError as err:
            skipped.append({"path": str(path), "error": str(err)})
    return images, kept, skipped


def _prepare(cfg, concept, backbone, out: Path, key: str, progress: bool) -> None:
    rcfg = cfg.retrieval
    embedder = build_embedder(rcfg, backbone)
    # The concept's own photos are the training data: an unreadable one is refused (ImageError naming the
    # file and the fix, as training's VQ encoding refuses it), never silently dropped like a pool image.
    photos = list(concept.photos)
    photo_images = [load_image(p) for p in photos]
    pool_images, pool, skipped = _load_all(concept.negatives, progress, "negative pool")
    warnings = []
    if skipped:
        warnings.append(f"{len(skipped)} unreadable pool images skipped (listed under skipped_unreadable)")
    photo_emb, pool_emb = embedder.embed(photo_images), embedder.embed(pool_images)
    duplicates = _concept_duplicates(concept, photo_images, pool, pool_images, photo_emb, pool_emb, rcfg)
    hard, easy, tiers = _choose_negatives(cfg, len(photos), len(pool), photo_emb, pool_emb, set(duplicates), warnings)
    for message in warnings:
        log.warning("prepare <%s>: %s", concept.name, message)

    conversations = []
    if not concept.conversations and _generates_conversations(cfg):
        conversations = generate_conversations(backbone, photos, photo_images, concept, progress,
                                               CONVERSATION_MAX_NEW_TOKENS, agree=bool(cfg.recipe.conversations.agree))

    manifest = {
        "concept": concept.name, "key": key, "embedder": embedder.key, "embedder_quality": embedder.quality,
        "similarity": "cosine of L2-normalised image embeddings; higher = closer to the concept photos",
        "photos": [str(p) for p in photos],
        "hard_negatives": [{"path": str(pool[i]), "score": round(s, 4), "closest_photo": str(photos[p])}
                           for i, s, p in hard],
        "easy_negatives": [{"path": str(pool[i])} for i in easy],
        "soft_positive_tiers": [{"tier": t, "n_tokens": tier["n_tokens"],
                                 "items": [{"path": str(pool[i]), "score": round(s, 4)} for i, s in tier["items"]]}
                                for t, tier in enumerate(tiers)],
        "duplicates_excluded": [{"path": str(pool[i]), "reason": r} for i, r in sorted(duplicates.items())],
        "skipped_unreadable": skipped, "warnings": warnings, "generated_conversations": conversations,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    _write_sheets(out, manifest, dict(zip(map(str, pool), pool_images)) | dict(zip(map(str, photos), photo_images)))


def _concept_duplicates(concept, photo_images, pool, pool_images, photo_emb, pool_emb, rcfg) -> dict[int, str]:
    """Pool index -> why it is excluded: the subject's own pictures, training and held-out, must never become
    negatives (nor leak the test set): the same file, the same picture resized or re-encoded, or a near-duplicate."""
    held_out_images, held_out, _ = _load_all([*concept.val_photos, *concept.test_photos], False, "held-out photos")
    photo_digests = {file_digest(p) for p in [*concept.photos, *held_out]}
    photo_hashes = [difference_hash(im) for im in [*photo_images, *held_out_images]]
    duplicates = {}
    for i, path in enumerate(pool):
        if file_digest(path) in photo_digests:
            duplicates[i] = "same file content as a photo of the concept"
            continue
        distance = min(bin(difference_hash(pool_images[i]) ^ h).count("1") for h in photo_hashes)
        if distance <= int(rcfg.duplicate_hash_bits):
            duplicates[i] = f"same picture as a photo of the concept (resized or re-encoded; hash distance {distance})"
    near = (pool_emb @ photo_emb.T).amax(dim=1)
    for i in torch.nonzero(near >= float(rcfg.duplicate_threshold)).flatten().tolist():
        duplicates.setdefault(i, f"near-duplicate of a concept photo (cosine {float(near[i]):.4f})")
    return duplicates


def _choose_negatives(cfg, n_photos: int, n_pool: int, photo_emb, pool_emb, excluded: set[int],
                      warnings: list[str]) -> tuple[list, list, list]:
    """(hard negatives, easy negatives, soft-positive tiers) as pool indices; a short pool adds to `warnings`."""
    rcfg, scfg = cfg.retrieval, cfg.recipe.soft_positives
    per_photo = int(rcfg.hard_negatives_per_photo)
    available = n_pool - len(excluded)
    if available < per_photo * n_photos + int(rcfg.easy_negatives):
        warnings.append(f"pool has {available} usable images; asked for {per_photo} hard negatives x {n_photos} "
                        f"photos + {rcfg.easy_negatives} easy negatives: using what exists")
    index = str(rcfg.index)
    if index == "auto":  # exact either way; faiss only pays off for large pools
        index = "faiss" if n_pool > 100_000 and importlib.util.find_spec("faiss") else "brute"
    hard = hard_negatives(photo_emb, pool_emb, per_photo, excluded, index=index)
    hard_set = excluded | {i for i, _, _ in hard}
    easy = easy_negatives(n_pool, int(rcfg.easy_negatives), hard_set, int(cfg.seed))
    tiers = []
    if scfg.enabled:
        if available < int(scfg.pool_size):
            warnings.append(f"soft positives: pool has {available} usable images, asked for {scfg.pool_size}")
        tiers = soft_positive_tiers(closeness(photo_emb, pool_emb), int(cfg.recipe.k_g), int(scfg.spacing),
                                    int(scfg.pool_size), excluded)
    return hard, easy, tiers


def _write_sheets(out: Path, manifest: dict, images: dict) -> None:
    """One contact sheet per kind of chosen image (the photos, hard and easy negatives, each soft-positive tier)."""
    rows = [("concept photos", [(p, "") for p in manifest["photos"]]),
            ("hard negatives", [(h["path"], f"{h['score']:.3f}") for h in manifest["hard_negatives"]]),
            ("easy negatives", [(e["path"], "") for e in manifest["easy_negatives"]])]
    rows += [(f"soft positives tier {t['tier']} ({t['n_tokens']} g-tokens)",
              [(i["path"], f"{i['score']:.3f}") for i in t["items"]]) for t in manifest["soft_positive_tiers"]]
    for title, items in rows:
        if items:
            name = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
            contact_sheet(title, [(images[p], caption) for p, caption in items]).save(out / f"sheet_{name}.png")


def difference_hash(image: Image.Image) -> int:
    """64-bit perceptual hash (brightness gradients of a 9x8 thumbnail): survives resizing and re-encoding."""
    pixels = list(image.convert("L").resize((9, 8), Image.LANCZOS).tobytes())
    bits = [pixels[row * 9 + col] > pixels[row * 9 + col + 1] for row in range(8) for col in range(8)]
    return sum(1 << i for i, bit in enumerate(bits) if bit)


def contact_sheet(title: str, items: list[tuple[Image.Image, str]], thumb: int = 96, columns: int = 8,
                  frames: list | None = None) -> Image.Image:
    """A grid of thumbnails with their scores under a title; `frames`: a colour per thumbnail, drawn round it."""
    rows = (len(items) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (thumb + 4) + 4, 22 + rows * (thumb + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), title, fill="black")
    for n, (image, caption) in enumerate(items):
        x, y = 4 + (n % columns) * (thumb + 4), 22 + (n // columns) * (thumb + 18)
        sheet.paste(image.resize((thumb, thumb)), (x, y))
        if frames and frames[n]:  # in the 4-pixel gap round the thumbnail, so the picture stays whole
            draw.rectangle((x - 2, y - 2, x + thumb + 1, y + thumb + 1), outline=frames[n], width=2)
        draw.text((x, y + thumb + 2), caption, fill="black")
    return sheet


CONVERSATION_MAX_NEW_TOKENS = 32  # the longest generated answer (part of the preparation key)


@torch.no_grad()
def generate_conversations(backbone, photos, images, concept, progress: bool,
                           max_new_tokens: int = CONVERSATION_MAX_NEW_TOKENS, agree: bool = False) -> list[dict]:
    """Ask the plain backbone attribute questions about each photo; answers become text-only QA about <sks>.

    `agree`: the photos show one subject, so each question gets one answer: of the answers the backbone gave
    to it over the photos, the one most likely under all of them (`agreed_answer`); every photo's turn keeps its
    place and takes that answer. Off, each photo's own answer is its target (the Yo'LLaVA way), and a backbone
    that reads one photo wrong teaches two answers to one question.
    """
    from tqdm.auto import tqdm

    from yochameleon.model.personalized import PersonalizedChameleon, decode_text

    noun = concept.class_noun or "subject"
    plain = PersonalizedChameleon(backbone.model, [])
    layout = chat_layout(backbone)
    subject = re.compile(rf"\b(the|this|that|a|an)\s+{re.escape(noun)}\b|\b{re.escape(noun)}\b", re.IGNORECASE)
    asked = []  # (photo, question, prompt ids, answer ids, answer text)
    for path, image in tqdm(list(zip(photos, images)), desc="ask the base model about each photo",
                            disable=not progress):
        shown = layout.image(backbone.shown_image_codes(image))
        for text in _attribute_questions(concept):
            prompt = layout.prompt(layout.text(text), image=shown)  # the plain backbone: no prefix
            ids, mask = left_pad([prompt], backbone.tokenizer.pad_token_id)
            out = plain.generate_text(ids.to(backbone.device), mask.to(backbone.device), max_new_tokens,
                                      backbone.text_banned_ids(), backbone.text_stop_ids())[0]
            answer = decode_text(backbone, [], out)
            if answer:
                asked.append((path, text, prompt, out, answer))
    agreed = _agreed(plain, backbone, layout, asked) if agree else [turn[4] for turn in asked]
    turns = []
    for (path, text, _, _, own), answer in zip(asked, agreed):
        turn = {"image": None, "source_photo": str(path), "question": subject.sub("<sks>", text),
                "answer": subject.sub("<sks>", answer)}
        if answer != own:  # the manifest shows what this photo alone was read as
            turn["photo_answer"] = subject.sub("<sks>", own)
        turns.append(turn)
    return turns


def _agreed(plain, backbone, layout, asked: list[tuple]) -> list[str]:
    """Each turn of `asked`'s answer, replaced by the one `agreed_answer` picks over its question's photos."""
    by_question: dict[str, list[tuple]] = {}
    for turn in asked:
        by_question.setdefault(turn[1], []).append(turn)
    chosen = {}
    for question, turns in by_question.items():
        candidates = {}
        for _, _, _, ids, answer in turns:
            candidates.setdefault(answer, ids)
        if len(candidates) > 1:
            prompts = [prompt for _, _, prompt, _, _ in turns]
            chosen[question] = agreed_answer(plain, backbone, layout, prompts, candidates)
    return [chosen.get(text, answer) for _, text, _, _, answer in asked]


@torch.no_grad()
def agreed_answer(plain, backbone, layout, prompts: list[list[int]], candidates: dict[str, list[int]]) -> str:
    """The candidate answer with the highest log-likelihood summed over the prompts (one per photo): the answer
    the photos agree on, each photo a vote weighted by how sure the backbone is. Ties go to the first candidate."""
    best, best_score = None, float("-inf")
    for answer, ids in candidates.items():
        target = layout.answer(ids)  # the answer as training will teach it: its ids, then end of turn
        rows = [[*prompt, *target] for prompt in prompts]
        input_ids = torch.full((len(rows), max(map(len, rows))), backbone.tokenizer.pad_token_id, dtype=torch.long)
        mask, labels = torch.zeros_like(input_ids), torch.full_like(input_ids, IGNORE_INDEX)
        for row, (prompt, seq) in enumerate(zip(prompts, rows)):
            input_ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
            labels[row, len(prompt):len(seq)] = torch.tensor(target)
        device = backbone.device
        nll = plain(input_ids.to(device), mask.to(device), labels.to(device))["per_sample"]  # mean per answer token
        score = -float(nll.sum()) * len(target)
        if score > best_score:
            best, best_score = answer, score
    return best
