"""Reading the user's photos safely: every mode PIL knows becomes 8-bit RGB, or a clear error."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from yochameleon.errors import ConceptDataError, ImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FIX = "re-export it as PNG or JPEG, or delete it from the folder"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Scale by the range the data actually uses (8, 16 or 32 bit; 0-1 floats) instead of letting
        # PIL clip everything above 255 to white.
        array = np.asarray(image, dtype=np.float64)
        peak = float(array.max()) if array.size else 0.0
        if image.mode.startswith("I;16") or 255 < peak <= 65535:
            top = 65535.0
        elif peak > 65535:
            top = 2.0**31 - 1
        elif image.mode == "F" and peak <= 1.0:
            top = 1.0
        else:
            top = 255.0
        array = np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path) -> Image.Image:
    """Open, fully decode, apply EXIF orientation and return 8-bit RGB; ImageError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file. Check the path in your concept config.")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not mid-training
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: image is too large to decode safely ({err}). Fix: downscale it below "
                         "about 8000x8000 pixels, or delete it from the folder.") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{path}: not an image PIL can read (corrupt or unsupported). Fix: {FIX}.") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: cannot read image ({err}); the file is damaged or truncated. Fix: {FIX}.") from err


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
