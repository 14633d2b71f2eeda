"""What a training run draws: a sample at each evaluation, the final samples, their judge, the contact sheet.

    sample_settings(backbone, tcfg)   how every image a run draws is sampled (the one place to change it)
    draw_images(...)                  "A photo of <sks>." n times, seeded, several per sampling call
    judge_toy_samples(...)            the judge a backbone source provides on them (the toy world's, for toy concepts)
    contact_sheet(...)                the concept's photos above the final samples, one PNG a person can open

Training imports nothing of the toy world: the judge comes from `sources.drawing_judge`, which
imports the toy world's only for a concept of category `toy`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from yochameleon.data import templates
from yochameleon.data.preparation import contact_sheet as grid_sheet
from yochameleon.model.image_generation import SamplingConfig, draw
from yochameleon.sources import drawing_judge

RIGHT, WRONG = (0, 170, 0), (220, 0, 0)  # frames of judged samples


def sample_settings(backbone, tcfg) -> SamplingConfig:
    """The sampling of the run's images (evaluation samples and final samples alike): the backbone's
    defaults (`Backbone.sampling`, what `generate` uses), guidance as `trainer.sample_guidance` asks."""
    return backbone.sampling(guidance_scale=tcfg.sample_guidance)


def draw_images(model, builder, sampling: SamplingConfig, seed: int, count: int, batch_size: int = 8
                ) -> list[Image.Image]:
    """`count` images for "A photo of <sks>.", from one generator seeded with `seed`, `batch_size` per call."""
    backbone = builder.backbone
    generator = torch.Generator(device=backbone.device).manual_seed(seed)
    prompt = builder.image_prompt_ids(templates.GENERATION_PROMPTS[0])
    unconditional = builder.unconditional_image_prompt_ids(prompt)
    return draw(model, backbone, [prompt] * count, [unconditional] * count, sampling, generator, batch_size)


def sample_image(model, builder, seed: int, sampling: SamplingConfig) -> Image.Image:
    """One image for "A photo of <sks>." (seeded), to watch generation improve during training."""
    return draw_images(model, builder, sampling, seed, 1)[0]


def judge_toy_samples(backbone_dir: str | Path, concept, images: list[Image.Image]) -> list[dict[str, bool]] | None:
    """Per image, {attribute: read right} by the judge a backbone source provides for the concept's drawings
    (`sources.drawing_judge`: the toy world's reads a toy concept's on a backbone shipped with its judge); None
    where none applies."""
    judge = drawing_judge(backbone_dir, concept)
    return None if judge is None else judge(images)


def judge_figures(verdicts: list[dict[str, bool]]) -> dict:
    """Counts and fractions: `right` images had every attribute right; then each attribute's fraction."""
    judged = len(verdicts)
    right = sum(all(v.values()) for v in verdicts)
    return {"judged": judged, "right": right, "all_right": right / judged,
            **{attribute: sum(v[attribute] for v in verdicts) / judged for attribute in verdicts[0]}}


def contact_sheet(name: str, photos: list[Image.Image], samples: list[Image.Image],
                  verdicts: list[dict[str, bool]] | None = None, cell: int = 128, columns: int = 8) -> Image.Image:
    """The concept's training photos (a labelled row) above the final samples (another), all `cell` pixels
    square; judged samples are framed green (every attribute right) or red, with what was wrong under them."""
    columns = max(1, min(columns, max(len(photos), len(samples))))
    top = grid_sheet(f"training photos of <{name}> ({len(photos)})", [(p, "") for p in photos], cell, columns)
    label = f"final samples, 'A photo of <{name}>.' ({len(samples)})"
    if verdicts is None:
        items, frames = [(s, "") for s in samples], None
    else:
        right = [all(v.values()) for v in verdicts]
        label += (f": {sum(right)} of {len(samples)} judged right ({', '.join(verdicts[0])} all right): "
                  "green frame right, red wrong")
        items = [(s, "right" if ok else "wrong " + ",".join(a for a, good in v.items() if not good))
                 for s, v, ok in zip(samples, verdicts, right)]
        frames = [RIGHT if ok else WRONG for ok in right]
    bottom = grid_sheet(label, items, cell, columns, frames)
    sheet = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height), "white")
    sheet.paste(top, (0, 0))
    sheet.paste(bottom, (0, top.height))
    return sheet
