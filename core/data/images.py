"""Reading images people hand us: every common kind accepted, broken or hostile files refused
with a clear message. The one boundary between image bytes and the rest of Trainboard: folder
datasets (core.data.datasets), prediction (core.serving.inference, the CLI, the HTTP service) and the pages."""
from __future__ import annotations

import io
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Bounds sized for a server decoding many uploads at once. Image.MAX_IMAGE_PIXELS is process-wide
# (any library may change it), so our own pixel limit is checked here whatever it says. PNG text
# chunks are bounded by PIL's PngImagePlugin.MAX_TEXT_CHUNK (1 MiB each) and MAX_TEXT_MEMORY
# (64 MiB in all), left at their defaults: going past them is a refusal below, not a crash.
MAX_PIXELS = 40_000_000        # a decompression bomb is refused before it is decoded
MAX_FILE_BYTES = 256 * 1024**2
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")   # more than 8 bits per sample
REDUCING_GAP = 3.0             # shrink by whole factors first when much larger: faster, same look


class ImageRefused(ValueError):
    """The bytes are not an image we can use; the message says why."""


def _format_by_signature(data: bytes) -> str | None:
    """The format whose signature the bytes start with: names it when PIL fails inside its opener."""
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(data[:16]) is True:
                return name
        except Exception:
            continue
    return None


def _plain_reason(error: Exception, image_format: str | None) -> str:
    if isinstance(error, UnidentifiedImageError):
        return (f"unreadable or truncated image ({image_format}: its header is not understood)" if image_format
                else "not an image (PNG, JPEG, BMP, WebP or GIF expected)")
    if isinstance(error, Image.DecompressionBombError):
        return f"image too large: {error}"
    if isinstance(error, MemoryError):
        return "image too large to decode in the memory available"
    detail = (str(error) or type(error).__name__)[:200]
    if image_format:
        detail = f"{image_format}: {detail}"
    if "MAX_TEXT_CHUNK" in detail or "MAX_TEXT_MEMORY" in detail:
        return f"metadata too large ({detail})"
    if isinstance(error, NotImplementedError):
        return f"unsupported kind of image ({detail})"
    return f"unreadable or truncated image ({detail})"


@contextmanager
def _refusing(image_format: str | None = None):
    """Any error while decoding becomes ImageRefused. PIL's plugins raise nearly every type
    (EOFError, NotImplementedError, struct.error, OverflowError, ...) on odd files, so the
    boundary catches Exception; KeyboardInterrupt and SystemExit still pass."""
    try:
        yield
    except ImageRefused:
        raise
    except Exception as error:
        raise ImageRefused(_plain_reason(error, image_format)) from None


def read_image_file(path) -> bytes:
    """The bytes of an image file, or ImageRefused (missing, unreadable, over MAX_FILE_BYTES)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ImageRefused(f"cannot read file: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImageRefused(f"file too large (limit {MAX_FILE_BYTES // 1024**2} MiB)")
    return data


def open_image(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Decode bytes to a PIL image (first frame, EXIF orientation applied), or raise ImageRefused.

    draft_size: the smallest side the caller needs; JPEGs are then decoded at a reduced scale
    (1/2, 1/4, 1/8) no smaller than it, so a 24-megapixel photo for a 32x32 model stays small."""
    if not data:
        raise ImageRefused("empty file")
    if len(data) > MAX_FILE_BYTES:
        raise ImageRefused(f"file too large (limit {MAX_FILE_BYTES // 1024**2} MiB)")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as error:
        raise ImageRefused(_plain_reason(error, _format_by_signature(data))) from None
    with _refusing(image.format):
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ImageRefused(f"image too large: {width}x{height} pixels (limit {MAX_PIXELS:,})")
        # No seek(0): an image opens on its first frame, and PSD (frames from 1) and single
        # Spider files raise EOFError on it.
        if draft_size:
            image.draft(image.mode, (draft_size, draft_size))
        image.load()
    try:
        ImageOps.exif_transpose(image, in_place=True)     # in place: no copy, and .format stays
    except Exception:
        pass       # a corrupt orientation tag costs the orientation, not the picture
    return image


def _rendered(image: Image.Image, width: int, height: int, channels: int) -> Image.Image:
    """Any mode (16-bit, float, palette, RGBA, CMYK, LAB, ...) -> "L" or "RGB" at width x height."""
    if image.mode in WIDE_MODES:
        # Resize first: the NumPy scaling below then touches width x height values, not 40 million.
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            finite = values[np.isfinite(values)]
            low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
            values = (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) / max(high - low, 1e-12)
        else:
            values = values / (65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0)
        image = Image.fromarray(np.clip(values * 255.0, 0, 255).astype(np.uint8), "L")
    elif image.mode in ("P", "PA", "LA", "RGBA"):
        image = image.convert("RGBA").convert("RGB")
    elif image.mode not in ("1", "L", "RGB"):
        image = image.convert("RGB")     # CMYK, YCbCr, LAB...: PIL converts these to RGB, not all to L
    image = image.convert("L" if channels == 1 else "RGB")
    return image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)


def to_array(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """A PIL image in any mode -> uint8 [channels, size, size], or ImageRefused."""
    with _refusing(image.format):
        array = np.asarray(_rendered(image, size, size, channels), dtype=np.uint8)
        return array[None].copy() if channels == 1 else array.transpose(2, 0, 1).copy()


def decode(data: bytes, size: int, channels: int) -> np.ndarray:
    """Image bytes -> uint8 [channels, size, size] as a model sees them, or ImageRefused."""
    return to_array(open_image(data, draft_size=size), size, channels)


def preview(data: bytes, side: int) -> np.ndarray:
    """Image bytes -> uint8 [H, W, 3] at most side x side, aspect kept (to show what was given)."""
    image = open_image(data, draft_size=side)
    with _refusing(image.format):
        scale = min(1.0, side / max(image.size))
        width, height = (max(1, round(n * scale)) for n in image.size)
        return np.asarray(_rendered(image, width, height, 3), dtype=np.uint8)
