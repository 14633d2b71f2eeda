"""The user's photo folders: listing images (recursively), checking a concept's name and photo count.

Reading one file into 8-bit RGB (`load_image`) is `yochameleon.model.images` (the first step of every family's
image input, issue 26 item 1); it stays importable from here.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from yochameleon.errors import ConceptDataError
from yochameleon.model.images import FIX, _to_rgb, load_image  # noqa: F401  (moved to model/, re-exported here)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _check_dir(directory, role: str) -> Path:
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ConceptDataError(f"{role}: directory {directory} does not exist. Create it and put the images there, "
                               "or fix the path in your concept config (conf/concept/<name>.yaml).")
    return directory


def list_images(directory, role: str) -> list[Path]:
    """Sorted image files directly inside `directory` (hidden files skipped)."""
    directory = _check_dir(directory, role)
    found = sorted(p for p in directory.iterdir() if _is_image(p))
    if not found:
        raise ConceptDataError(f"{role}: directory {directory} has no images (accepted: "
                               f"{', '.join(IMAGE_SUFFIXES)}). Add photos or fix the path in your concept config.")
    return found


def list_images_recursive(directories, role: str) -> list[Path]:
    """Sorted image files anywhere below each directory (for negative pools)."""
    if isinstance(directories, (str, Path)):
        directories = [directories]
    found: list[Path] = []
    for directory in directories:
        directory = _check_dir(directory, role)
        found += sorted(p for p in directory.rglob("*") if _is_image(p)
                        and not any(part.startswith(".") for part in p.relative_to(directory).parts))
    # Overlapping pool folders (a folder and its parent) must not count a photo twice.
    found = list({p.resolve(): p for p in found}.values())
    if not found:
        raise ConceptDataError(f"{role}: no images found under {', '.join(str(d) for d in directories)} (accepted: "
                               f"{', '.join(IMAGE_SUFFIXES)}). Add images or fix the paths in your concept config.")
    return found


_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_concept_name(name: str) -> str:
    """A concept name becomes `<name>` in prompts and a directory name: letters, digits, '-' and '_' only."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name or "")).strip("_")[:64] or "my_concept"
    raise ConceptDataError(
        f"concept name {name!r} is not allowed: use 1-64 letters, digits, '-' or '_' (no path separators, spaces, "
        f"'<', '>' or '..'), because it becomes <name> in prompts and a folder under outputs/. "
        f"Try name: {cleaned}")


def check_photo_count(paths, directory) -> None:
    """Error on no photos; warn (loudly) below 3, where personalization is fragile."""
    if not paths:
        raise ConceptDataError(f"{directory} has no photos of the concept; add 3-5 photos.")
    if len(paths) < 3:
        message = (f"{len(paths)} photo{'s' if len(paths) > 1 else ''} in {directory}: personalization works "
                   "best with 3-5 photos of the subject")
        log.warning(message)
