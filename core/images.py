"""Reading images people hand us: every common kind accepted, broken or hostile files refused
with a clear message. Shared by folder datasets (core.data) and prediction (core.inference)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000        # a decompression bomb is refused before it is decoded


class ImageRefused(ValueError):
    """The bytes are not an image we can use; the message says why."""


def open_image(data: bytes) -> Image.Image:
    """Decode bytes to a PIL image (first frame, EXIF orientation applied), or raise ImageRefused."""
    if not data:
        raise ImageRefused("empty file")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRefused("not an image (PNG, JPEG, BMP, WebP or GIF expected)") from None
    except Image.DecompressionBombError as error:
        raise ImageRefused(f"image too large: {error}") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageRefused(f"image too large: {width}x{height} pixels (limit {MAX_PIXELS:,})")
    try:
        image.seek(0)                  # GIF and other animations: the first frame
        image.load()
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageRefused(f"unreadable or truncated image ({error})") from None


def to_array(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """Any mode (16-bit, palette, RGBA, CMYK, ...) -> uint8 [channels, size, size]."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        span = max(values.max() - values.min(), 1e-12)
        image = Image.fromarray(((values - values.min()) / span * 255).astype(np.uint8), "L")
    elif image.mode in ("P", "PA", "LA", "RGBA"):
        image = image.convert("RGBA").convert("RGB")
    image = image.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None].copy() if channels == 1 else array.transpose(2, 0, 1).copy()
