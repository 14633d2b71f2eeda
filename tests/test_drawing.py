"""The end-of-run contact sheet and summary line, from images and verdicts alone (no model: milliseconds)."""

from __future__ import annotations

from PIL import Image

from yochameleon.train import _generation_line
from yochameleon.training.drawing import RIGHT, WRONG, contact_sheet, judge_figures


def _squares(colour, n, size=64):
    return [Image.new("RGB", (size, size), colour) for _ in range(n)]


def test_contact_sheet_puts_the_photos_above_the_samples_and_frames_judged_ones():
    photos, samples = _squares("blue", 5, size=80), _squares("yellow", 8)
    verdicts = [{"shape": i != 2, "colour": True, "pattern": i not in (2, 5)} for i in range(8)]
    cell, pitch = 128, 132  # thumbnails are `cell` square, 4 pixels apart; a row is title (22) + cell + caption (18)
    sheet = contact_sheet("bo", photos, samples, verdicts, cell=cell)
    assert sheet.size == (8 * pitch + 4, 2 * (22 + cell + 18))
    pixels = sheet.load()
    photo_cells = [pixels[4 + c * pitch + cell // 2, 22 + cell // 2] for c in range(8)]
    assert photo_cells == [(0, 0, 255)] * 5 + [(255, 255, 255)] * 3  # five photos, resized to one cell size
    top = 22 + cell + 18 + 22  # the samples' row
    assert all(pixels[4 + c * pitch + cell // 2, top + cell // 2] == (255, 255, 0) for c in range(8))
    frames = [pixels[4 + c * pitch - 1, top + cell // 2] for c in range(8)]  # just left of each sample
    assert frames == [RIGHT, RIGHT, WRONG, RIGHT, RIGHT, WRONG, RIGHT, RIGHT]
    assert pixels[4 + 0 * pitch - 1, 22 + cell // 2] == (255, 255, 255)  # photos are never framed
    unjudged = contact_sheet("bo", photos, samples, cell=cell).load()
    assert unjudged[4 - 1, top + cell // 2] == (255, 255, 255)  # no judge: no frames


def test_judge_figures_and_the_summary_line():
    verdicts = [{"shape": i < 6, "colour": True, "pattern": i != 7} for i in range(8)]
    figures = judge_figures(verdicts)
    assert figures == {"judged": 8, "right": 6, "all_right": 0.75, "shape": 0.75, "colour": 1.0, "pattern": 0.875}
    summary = {"final_samples": [f"final_{i:02d}.png" for i in range(8)], "contact_sheet": "/run/contact_sheet.png",
               "generation": figures}
    assert _generation_line(summary) == (
        "  generation    6 of 8 final samples judged right (shape, colour, pattern all right; shape 6/8, colour 8/8, "
        "pattern 7/8)  contact sheet: /run/contact_sheet.png")
    assert _generation_line(summary | {"generation": None}) == (
        "  generation    8 final samples  contact sheet: /run/contact_sheet.png")
