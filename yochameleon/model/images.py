"""Reading an image file into what every backbone family's image codec takes: fully decoded, EXIF-oriented,
8-bit RGB (every mode PIL knows), or an `ImageError` naming the file and the fix.

The first step of a family's image input (`model/janus.py` reads shown images with it), so it lives in
`model/`; `yochameleon.data.images` re-exports `load_image` beside the folder listing and photo checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from yochameleon.errors import ImageError

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
