"""Regenerate the demo concept's photos from the DreamBooth dataset (CC BY 4.0).

    python yochameleon/assets/demo/make_demo_assets.py [path/to/dreambooth]

Copies a corgi (`dog`) as the concept and photos of other subjects as negatives,
resized to 256x256 and re-encoded as JPEG quality 90, and writes ATTRIBUTION.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
CONCEPT = {"train": ["00", "01", "02"], "test": ["03", "04"]}
NEG_TRAIN = ["dog2", "dog3", "cat", "backpack", "bear_plushie", "can", "clock", "duck_toy", "fancy_boot",
             "colorful_sneaker"]
NEG_TEST = ["dog5", "dog6", "candle", "berry_bowl", "monster_toy", "rc_car", "grey_sloth_plushie", "poop_emoji"]


def credits(source: Path) -> dict[str, str]:
    """Subject -> credit line from references_and_licenses.txt."""
    text = (source / "references_and_licenses.txt").read_text()
    found = {}
    for match in re.finditer(r"^(\w+):\s*\n?\s*(\(credit:[^)]*\)|Photos (?:taken )?by [^\n]+)", text, re.M):
        found[match.group(1)] = match.group(2).strip("()")
    return found


def copy(src: Path, dst: Path) -> None:
    """Write `src` to `dst` as a 256x256 JPEG (quality 90)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").resize((256, 256), Image.LANCZOS).save(dst, quality=90)


def main(source: Path) -> None:
    """Copy the demo concept and negatives out of `source` and write ATTRIBUTION.md."""
    who = credits(source)
    rows = []
    for split, numbers in CONCEPT.items():
        for number in numbers:
            copy(source / "dog" / f"{number}.jpg", HERE / "corgi" / split / f"{number}.jpg")
            rows.append((f"corgi/{split}/{number}.jpg", f"dog/{number}.jpg", who.get("dog", "")))
    for split, subjects, number in (("train", NEG_TRAIN, None), ("test", NEG_TEST, "02")):
        for subject in subjects:
            for n in (["00", "01"] if number is None else [number]):
                name = f"{subject}_{n}.jpg"
                copy(source / subject / f"{n}.jpg", HERE / "negatives" / split / name)
                rows.append((f"negatives/{split}/{name}", f"{subject}/{n}.jpg", who.get(subject, "")))
    lines = [
        "# Demo concept photos: attribution",
        "",
        "These photos are from the DreamBooth dataset (Ruiz et al., \"DreamBooth: Fine Tuning Text-to-Image",
        "Diffusion Models for Subject-Driven Generation\", CVPR 2023), Google Research, licensed",
        "[CC BY 4.0](https://creativecommons.org/licenses/by/4.0/). Photographers are credited below as in",
        "the dataset's references_and_licenses.txt (Unsplash photos under the Unsplash license).",
        "",
        "Changes: each photo was resized to 256x256 (Lanczos) and re-encoded as JPEG quality 90",
        "(by `make_demo_assets.py` in this folder).",
        "",
        "| file here | DreamBooth file | credit |",
        "|---|---|---|",
    ] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    (HERE / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    # Default: ../shared/data/dreambooth relative to the repository root.
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2].parent / "shared" / "data" / "dreambooth")
