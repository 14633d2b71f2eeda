"""A small attribute classifier for toy-world images: the judge of generated pictures.

It reads shape, colour and pattern off a 64x64 image of one thing. It is trained on
renders (with blur, like a VQ reconstruction) and never on anything the backbone
generated, so it judges generations independently of the model that drew them.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import ImageFilter
from safetensors.torch import load_file
from torch import nn

from yochameleon.toyworld import world
from yochameleon.toyworld.spec import JUDGE_FILE, to_pixels

HEADS = world.ATTRIBUTE_VALUES


class AttributeJudge(nn.Module):
    """Three conv blocks, max-pooled to 2x2, and one linear head per attribute."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(2), nn.Flatten(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(256, len(values)) for name, values in HEADS.items()})

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(pixels)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images) -> list[dict[str, str]]:
        """PIL images -> [{"shape": ..., "colour": ..., "pattern": ...}, ...]."""
        logits = self(to_pixels(images))
        picks = {name: logits[name].argmax(-1).tolist() for name in HEADS}
        return [{name: HEADS[name][picks[name][i]] for name in HEADS} for i in range(len(images))]


def load_judge(path: str | Path) -> AttributeJudge:
    """The attribute classifier saved next to a toy backbone (`JUDGE_FILE` in its directory)."""
    judge = AttributeJudge()
    judge.load_state_dict(load_file(str(Path(path) / JUDGE_FILE)))
    return judge.eval()


def drawing_judge(backbone_dir: str | Path, name: str):
    """The judge of drawings of toy concept <name>: images -> per image {attribute: read right}; None where `name`
    is no toy concept or `backbone_dir` holds no judge (`JUDGE_FILE`). What `sources.drawing_judge` gives training."""
    from yochameleon.toyworld.concepts import thing_of

    try:
        thing = thing_of(name)
    except KeyError:
        thing = None
    if thing is None or not (Path(backbone_dir) / JUDGE_FILE).is_file():
        return None
    judge = load_judge(backbone_dir)
    return lambda images: [{attribute: value == getattr(thing, attribute) for attribute, value in reading.items()}
                           for reading in judge.predict(images)]


def _labels(scenes) -> dict[str, torch.Tensor]:
    return {name: torch.tensor([values.index(getattr(s.things[0], name)) for s in scenes])
            for name, values in HEADS.items()}


def train_judge(seed: int, steps: int = 600, batch: int = 48, progress=None) -> tuple[AttributeJudge, dict]:
    """Train on single-thing renders; returns the judge and its held-out accuracy per attribute."""
    torch.manual_seed(seed)
    judge = AttributeJudge()
    optimizer = torch.optim.Adam(judge.parameters(), lr=2e-3)
    rng = random.Random(seed + 3)
    for step in range(steps):
        scenes = [world.random_scene(rng, two_things=0.0) for _ in range(batch)]
        images = [world.render(s) for s in scenes]
        images = [im.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2))) for im in images]
        logits = judge(to_pixels(images))
        labels = _labels(scenes)
        loss = sum(F.cross_entropy(logits[name], labels[name]) for name in HEADS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step, float(loss.detach()))
    judge.eval()
    held_out = [world.random_scene(random.Random(seed + 7_000_000 + i), two_things=0.0) for i in range(300)]
    return judge, {"judge_" + k: v for k, v in judge_accuracy(judge, held_out, [world.render(s) for s in held_out]).items()}


def judge_accuracy(judge: AttributeJudge, scenes, images) -> dict[str, float]:
    """Fraction of images whose predicted attribute matches the scene's first thing, per attribute."""
    predictions = judge.predict(images)
    return {name: sum(p[name] == getattr(s.things[0], name) for p, s in zip(predictions, scenes)) / len(scenes)
            for name in HEADS}
