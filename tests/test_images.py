"""The image boundary: any file, damaged in any way, becomes pixels or ImageRefused, never another
exception. Every file here is made by the test: real files of each format PIL writes, damaged by
hypothesis, and one file for each kind of odd image that once got past the boundary."""
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.data.images import MAX_PIXELS, ImageRefused, decode, open_image, preview, read_image_file


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(mode: str = "RGB", size=(24, 20)) -> Image.Image:
    width, height = size
    across = np.linspace(0, 255, width)[None].repeat(height, 0)
    down = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([across, down, 255 - across], 2).astype(np.uint8), "RGB").convert(mode)


# --- the odd files that used to raise past the boundary, each made from its spec ---------------------
def psd_file(width=6, height=5) -> bytes:
    """A one-channel 8-bit Photoshop file: header, three empty sections, raw pixels."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 1, height, width, 8, 1)
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + bytes(range(width * height))


def spider_file() -> bytes:
    return encoded(Image.fromarray(np.arange(30, dtype=np.float32).reshape(5, 6), "F"), "SPIDER")


def lab_tiff() -> bytes:
    return encoded(Image.new("LAB", (8, 8), (200, 128, 128)), "TIFF")


def dds_file(pixel_format_flags=0x4, fourcc=b"ABCD") -> bytes:
    """A DirectDraw Surface header whose pixel format (FOURCC "ABCD") PIL does not implement."""
    header = struct.pack("<6I", 0x1007, 4, 4, 0, 0, 0) + bytes(44)
    header += struct.pack("<4I", 32, pixel_format_flags, struct.unpack("<I", fourcc)[0], 0)
    return b"DDS " + struct.pack("<I", 124) + header.ljust(120, b"\0")


def fits_file(axes=(4, 4)) -> bytes:
    """A FITS file with len(axes) axes; no axes at all means "no image data" to PIL."""
    cards = ["SIMPLE  = " + "T".rjust(20), "BITPIX  = " + "8".rjust(20), "NAXIS   = " + str(len(axes)).rjust(20)]
    cards += [f"NAXIS{i + 1}".ljust(8) + "= " + str(n).rjust(20) for i, n in enumerate(axes)]
    header = b"".join(card.ljust(80).encode() for card in cards + ["END"]).ljust(2880, b" ")
    return header + bytes(range(256)) * 11 + bytes(64)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_text_chunk(kind: bytes) -> bytes:
    """A PNG whose zTXt or iTXt chunk (before the pixels) inflates to 20 MiB from 20 kB."""
    inflating = zlib.compress(b"a" * (20 * 1024**2), 9)
    body = b"Comment\0\0" + inflating if kind == b"zTXt" else b"Comment\0\1\0\0\0" + inflating
    png = encoded(Image.new("L", (4, 4), 9), "PNG")
    return png[:33] + png_chunk(kind, body) + png[33:]       # 33: the signature and IHDR


def big_tiff_with(entry_tag: int | None = None, offset: int = 2**63 + 5) -> bytes:
    """A BigTIFF whose first IFD (entry_tag None) or strip (273) lies at a huge 8-byte offset."""
    data = bytearray(encoded(Image.new("L", (4, 4), 7), "TIFF", big_tiff=True))
    if entry_tag is None:
        data[8:16] = struct.pack("<Q", offset)
        return bytes(data)
    ifd = struct.unpack("<Q", data[8:16])[0]
    for i in range(struct.unpack("<Q", data[ifd:ifd + 8])[0]):
        entry = ifd + 8 + 20 * i
        if struct.unpack("<H", data[entry:entry + 2])[0] == entry_tag:
            data[entry + 2:entry + 4] = struct.pack("<H", 16)          # type LONG8
            data[entry + 12:entry + 20] = struct.pack("<Q", offset)
    return bytes(data)


REFUSED_FILES = {        # name -> (bytes, what the refusal says)
    "psd-truncated": (psd_file()[:-7], "PSD: image file is truncated"),
    "spider-truncated": (spider_file()[:-40], "SPIDER"),
    "dds-unknown-pixel-format": (dds_file(), "unsupported kind of image (DDS: Unimplemented pixel format"),
    "dds-no-pixel-format": (dds_file(pixel_format_flags=0), "unsupported kind of image (DDS: Unknown pixel"),
    "fits-zero-axes": (fits_file(axes=()), "unreadable or truncated image (FITS: No image data)"),
    "png-oversize-ztxt": (png_with_text_chunk(b"zTXt"), "metadata too large (PNG: Decompressed data too large"),
    "png-oversize-itxt": (png_with_text_chunk(b"iTXt"), "metadata too large (PNG: Decompressed data too large"),
    "tiff-huge-strip-offset": (big_tiff_with(273), "unreadable or truncated image (TIFF:"),
    "tiff-huge-ifd-offset": (big_tiff_with(None, 2**64 - 16), "unreadable or truncated image (TIFF:"),
}


# --- a corpus of real files, one or more per format PIL writes here --------------------------------
def real_files() -> dict[str, bytes]:
    rgb, gray = gradient(), gradient("L")
    animated = io.BytesIO()
    rgb.save(animated, "GIF", save_all=True, append_images=[rgb.rotate(90)])
    sixteen_bit = Image.fromarray(np.asarray(gray, np.uint16) * 257)
    floats = Image.fromarray(np.asarray(gray, np.float32) / 7, "F")
    return {
        "png": encoded(rgb, "PNG"), "png-16bit": encoded(sixteen_bit, "PNG"),
        "png-palette": encoded(rgb.convert("P"), "PNG"), "png-rgba": encoded(rgb.convert("RGBA"), "PNG"),
        "jpeg": encoded(rgb, "JPEG"), "jpeg-progressive": encoded(gray, "JPEG", progressive=True),
        "jpeg-cmyk": encoded(rgb.convert("CMYK"), "JPEG"), "bmp": encoded(rgb, "BMP"), "gif": animated.getvalue(),
        "webp": encoded(rgb, "WEBP"), "webp-lossless": encoded(rgb.convert("RGBA"), "WEBP", lossless=True),
        "tiff-lzw": encoded(rgb, "TIFF", compression="tiff_lzw"), "tiff-lab": lab_tiff(),
        "tiff-float": encoded(floats, "TIFF"), "ico": encoded(rgb, "ICO"), "ppm": encoded(rgb, "PPM"),
        "tga-rle": encoded(rgb, "TGA", compression="tga_rle"), "pcx": encoded(rgb, "PCX"),
        "sgi": encoded(rgb, "SGI"), "im": encoded(rgb, "IM"), "dds": encoded(rgb.convert("RGBA"), "DDS"),
        "qoi": encoded(rgb, "QOI"), "spider": spider_file(), "jpeg2000": encoded(rgb, "JPEG2000"),
        "blp": encoded(rgb.convert("P"), "BLP"), "msp": encoded(rgb.convert("1"), "MSP"),
        "psd": psd_file(), "fits": fits_file(),
    }


REAL = real_files()
NAMES = sorted(REAL)


@pytest.mark.parametrize("name", NAMES)
def test_every_real_file_decodes(name):
    """The corpus the fuzz damages: each file is a good image to start with."""
    for channels in (1, 3):
        pixels = decode(REAL[name], 16, channels)
        assert pixels.dtype == np.uint8 and pixels.shape == (channels, 16, 16)


@st.composite
def damaged_files(draw) -> bytes:
    data = REAL[draw(st.sampled_from(NAMES))]
    damage = draw(st.sampled_from(["truncate", "flip", "splice"]))
    if damage == "truncate":
        return data[:draw(st.integers(0, len(data) - 1))]
    if damage == "flip":
        flipped = bytearray(data)
        # Headers hold the sizes, offsets and kinds decoders trust: half the flips land there.
        position = st.integers(0, min(len(data), 64) - 1) | st.integers(0, len(data) - 1)
        for index in draw(st.lists(position, min_size=1, max_size=6)):
            flipped[index] ^= 1 << draw(st.integers(0, 7))
        return bytes(flipped)
    other = REAL[draw(st.sampled_from(NAMES))]
    return data[:draw(st.integers(0, len(data)))] + other[draw(st.integers(0, len(other))):]


@pytest.mark.filterwarnings("ignore::UserWarning")        # PIL warns about the damage it reads past
@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(damaged_files(), st.sampled_from([1, 3]))
def test_damaged_files_become_pixels_or_a_refusal(data, channels):
    try:
        pixels = decode(data, 16, channels)
    except ImageRefused as refused:
        assert str(refused)
        return
    assert pixels.dtype == np.uint8 and pixels.shape == (channels, 16, 16)


@pytest.mark.parametrize("name", list(REFUSED_FILES))
def test_each_odd_file_is_refused_with_its_format_and_reason(name):
    data, reason = REFUSED_FILES[name]
    with pytest.raises(ImageRefused) as refused:
        decode(data, 16, 3)
    assert reason in str(refused.value)


@pytest.mark.parametrize("name", ["psd", "spider"])
def test_psd_and_spider_files_are_read_not_sought_past(name):
    """Both raised "EOFError: attempt to seek..." on the seek to the first frame."""
    pixels = decode(REAL[name], 8, 1)
    assert pixels.shape == (1, 8, 8) and pixels.max() > pixels.min()      # the ramp survived


def test_lab_tiff_is_converted_for_a_grayscale_model():
    """PIL converts LAB to RGB but not to L; a one-channel model gets the lightness through RGB."""
    light, dark = lab_tiff(), encoded(Image.new("LAB", (8, 8), (40, 128, 128)), "TIFF")
    assert decode(light, 8, 1).min() > decode(dark, 8, 1).max()


def test_a_file_pil_cannot_identify_is_named_by_its_signature():
    with pytest.raises(ImageRefused, match=r"^unreadable or truncated image \(FITS: its header is not"):
        decode(fits_file(axes=(0, 4)), 16, 3)          # a zero-sized axis
    with pytest.raises(ImageRefused, match=r"^not an image \("):
        decode(b"GIF87 is not quite a signature", 16, 3)


def test_large_jpegs_are_decoded_at_a_reduced_scale():
    photo = encoded(gradient(size=(2000, 1600)), "JPEG")
    assert open_image(photo, draft_size=32).size == (250, 200)       # 1/8 scale, still >= 32
    assert open_image(photo, draft_size=600).size == (1000, 800)     # 1/2: 1/4 would be under 600
    assert open_image(photo).size == (2000, 1600)
    assert decode(photo, 32, 3).shape == (3, 32, 32)


def test_decompression_bomb_is_refused_before_decoding():
    side = int(MAX_PIXELS ** 0.5) + 100
    bomb = encoded(Image.new("1", (side, side)), "PNG")
    with pytest.raises(ImageRefused, match="too large"):
        decode(bomb, 16, 3)


def test_running_out_of_memory_is_a_refusal(monkeypatch):
    from PIL import ImageFile

    def exhausted(self):
        raise MemoryError
    monkeypatch.setattr(ImageFile.ImageFile, "load", exhausted)
    with pytest.raises(ImageRefused, match="too large to decode in the memory available"):
        decode(REAL["png"], 16, 3)


def test_an_interrupt_is_not_turned_into_a_refusal(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(Image, "open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        decode(REAL["png"], 16, 3)


def test_files_too_large_or_missing_are_refused(tmp_path, monkeypatch):
    import core.data.images
    monkeypatch.setattr(core.data.images, "MAX_FILE_BYTES", 100)
    path = tmp_path / "photo.png"
    path.write_bytes(REAL["png"])
    with pytest.raises(ImageRefused, match="file too large"):
        read_image_file(path)
    with pytest.raises(ImageRefused, match="file too large"):
        decode(REAL["png"], 16, 3)
    with pytest.raises(ImageRefused, match="cannot read file: No such file"):
        read_image_file(tmp_path / "gone.png")


def test_float_images_with_nan_and_infinity_scale_by_their_finite_values():
    values = np.array([[np.nan, 0.0], [np.inf, 10.0]], dtype=np.float32)
    pixels = decode(encoded(Image.fromarray(values, "F"), "TIFF"), 2, 1)[0]
    assert pixels[0, 1] == 0 and pixels[1, 1] == 255


def test_preview_keeps_the_aspect_ratio_of_any_format():
    assert preview(REAL["png"], 12).shape == (10, 12, 3)          # 24 x 20 -> 12 x 10
    assert preview(REAL["spider"], 100).shape == (5, 6, 3)        # never enlarged
    with pytest.raises(ImageRefused):
        preview(REFUSED_FILES["dds-unknown-pixel-format"][0], 100)
