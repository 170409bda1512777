"""Reading one X-ray file into an 8-bit grayscale image, whatever form it arrives in.

Chest X-rays come as 8-bit PNGs (the Kaggle database), 16-bit PNGs, float TIFFs, JPEGs from phones (EXIF-rotated,
sometimes CMYK), images with alpha or a palette, and DICOM files straight from a scanner (plain, deflated or
compressed, one frame or many). `read_xray` turns any of them into one thing: a PIL image in mode "L", stretched
over the range of its real values. It refuses what it cannot read with a `ValueError` of one sentence that names
the file and says what to do (empty, not an image, truncated, too large, a compression it cannot decode, nothing
to see), and it checks every declared size before decoding, so one bad file is a message, never a crash or an
out-of-memory. Each decode reserves its estimated peak memory (`decode_cost`) in the budget all decodes share
(`cxr.data.decode_budget`). This module decodes what Pillow reads; DICOM is `cxr.data.dicom`'s, and the pixel limit
and windowing both share are `cxr.data.pixels`'s (`MAX_PIXELS` is importable from here too).
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxr.data.decode_budget import DECODES
from cxr.data.dicom import is_dicom, read_dicom
from cxr.data.pixels import MAX_PIXELS, check_size, window_to_uint8

Source = Union[str, Path, bytes, BinaryIO]

# For images Pillow decodes, the longest side may be at most this many times the shortest. Radiographs are near
# square (a long-leg scan is about 1:4); a 1 x 100,000,000 strip passes the pixel limit yet costs Pillow dozens of
# bytes of bookkeeping per row.
MAX_ASPECT = 20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_METADATA = (b"iCCP", b"zTXt", b"iTXt", b"tEXt")  # colour profile and text: nothing cxr reads


def _describe(source: Source) -> str:
    return Path(source).name if isinstance(source, (str, Path)) else "the uploaded file"


def _read_bytes(source: Source) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes()
    return source.read()


def _to_gray(img: Image.Image) -> Image.Image:
    """Any PIL mode -> "L". 16-bit and float images are windowed by their range; alpha is laid over black."""
    if img.mode == "L":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(window_to_uint8(np.asarray(img)), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        if rgba.getchannel("A").getextrema() == (0, 0):
            # Alpha 0 everywhere hides the whole picture, which no one means for an X-ray: it is an export that
            # left the alpha channel empty, so the colour channels are the radiograph.
            img = rgba.convert("RGB")
        else:  # transparent borders read as black, the colour of unexposed film
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if img.mode not in ("RGB", "1"):
        img = img.convert("RGB")  # CMYK, YCbCr, ... go through RGB so the luminance weights apply
    return img.convert("L")


def read_xray(source: Source, max_side: int | None = None) -> Image.Image:
    """Decode `source` (a path, bytes or a binary file) into an 8-bit grayscale PIL image.

    `max_side` bounds the longer side of the result: JPEGs are decoded at reduced scale directly (cheap), other
    formats are shrunk after decoding. Of a multi-frame DICOM only the first frame is read; the image's
    `info["note"]` says so (and a warning is issued). Raises ValueError with one clear sentence for anything
    unreadable, and for an image with nothing in it (every pixel the same value).
    """
    name = _describe(source)
    try:
        data = _read_bytes(source)
    except OSError as e:
        raise ValueError(f"cannot read {name}: {e.strerror or e}") from e
    if not data:
        raise ValueError(f"{name} is empty (0 bytes)")
    named_dicom = isinstance(source, (str, Path)) and str(source).lower().endswith((".dcm", ".dicom"))
    img = read_dicom(data, name) if is_dicom(data) else _read_raster(data, name, max_side, named_dicom)
    del data  # the file's bytes go before the trim below, or the allocator keeps their place
    lo, hi = img.getextrema()
    if lo == hi:
        pixels = "its one pixel is" if img.size == (1, 1) else f"all {img.width} x {img.height} of its pixels are"
        raise ValueError(f"{name} has no content: {pixels} one grey; an X-ray shows shades")
    if max_side is not None and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)  # in place: the image is our own decode
    DECODES.settle()
    return img


class _PillowRefused(Exception):
    """Pillow raised ValueError: in a PNG that means a text or colour-profile chunk over its size limits."""


def _read_raster(data: bytes, name: str, max_side: int | None, named_dicom: bool = False) -> Image.Image:
    try:
        return _decode_raster(data, name, max_side, named_dicom)
    except _PillowRefused as e:
        # A PNG whose metadata Pillow will not inflate (a 3 MB zTXt or iCCP) is still a good radiograph: read
        # it again without those chunks. This is per call, so no thread changes Pillow's global limits.
        stripped = _drop_png_metadata(data)
        if stripped is not None:
            try:
                return _decode_raster(stripped, name, max_side, named_dicom)
            except _PillowRefused:
                pass
        raise ValueError(f"{name} is corrupt and cannot be decoded; export or download it again") from e


def _drop_png_metadata(data: bytes) -> bytes | None:
    """The PNG without its text and colour-profile chunks, or None when it is not a PNG or has none."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    kept, pos, dropped = [data[:8]], 8, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length  # length, type, data, CRC
        if kind in _PNG_METADATA:
            dropped = True
        else:
            kept.append(data[pos:end])
        pos = end
    return b"".join(kept) if dropped else None


def _decode_raster(data: bytes, name: str, max_side: int | None, named_dicom: bool) -> Image.Image:
    with io.BytesIO(data) as fp:  # closed on the way out, so the image we return does not hold the file's bytes
        return _decode_from(fp, name, max_side, named_dicom)


def decode_cost(img: Image.Image) -> int:
    """Bytes decoding `img` (opened, not loaded) may hold at its peak on the way to "L": Pillow's pixels (1 byte for
    L, 1 and P, 2 for 16-bit, else 4 per pixel) and the copies `_to_gray` makes of them (a palette or alpha image
    may pass through up to four 4-byte RGBA images while the original is still held; others one array the size
    of the pixels), the gray result, and Pillow's pointer per row for each of those images. It errs high: a
    5000x5000 palette PNG with transparency is budgeted 429 MB and took 210 MB above the resting process."""
    w, h = img.size
    decoded = 1 if img.mode in ("1", "L", "P") else 2 if img.mode.startswith("I;16") else 4
    through_rgba = img.mode in ("P", "RGBA", "LA", "PA", "RGBa", "La")
    copies = 4 * 4 if through_rgba else decoded
    return w * h * (decoded + copies + 1) + 5 * 8 * h


def _decode_from(fp: io.BytesIO, name: str, max_side: int | None, named_dicom: bool) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # We check the declared size ourselves just below, with a clearer message than Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ValueError(f"{name} declares too many pixels to decode safely (at most {MAX_PIXELS:,})") from e
    except UnidentifiedImageError as e:
        if named_dicom:
            raise ValueError(f"{name} is named like a DICOM file but is not one (it lacks the DICM marker every "
                             "DICOM file carries); export it again from the scanner or viewer") from e
        raise ValueError(f"{name} is not an image this app can read (PNG, JPEG, BMP, TIFF, WebP or DICOM)") from e
    except ValueError as e:
        raise _PillowRefused() from e
    w, h = img.size
    check_size(name, w, h)
    if max(w, h) > MAX_ASPECT * min(w, h):  # pydicom decodes into one array, so this is Pillow's concern only
        raise ValueError(f"{name} is {w}x{h} pixels, a strip no radiograph is shaped like (the long side may be at most "
                         f"{MAX_ASPECT} times the short one); crop or export the X-ray itself")
    if img.format == "JPEG" and max_side is not None:
        img.draft("L", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale: fast and small
    cost = decode_cost(img)
    try:
        with DECODES.reserve(cost), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)  # phone photos of X-rays come rotated by EXIF
            img = _to_gray(img)  # before shrinking: Pillow cannot reduce 16-bit images
            if max_side is not None and max(img.size) > 2 * max_side:
                img = img.reduce(max(img.size) // (2 * max_side))  # cheap integer shrink first
            return img
    except ValueError as e:
        raise _PillowRefused() from e
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{name} is truncated or corrupt and cannot be decoded; export or download it "
                         "again") from e
