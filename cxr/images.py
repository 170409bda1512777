"""Reading one X-ray file into an 8-bit grayscale image, whatever form it arrives in.

Chest X-rays come as 8-bit PNGs (the Kaggle database), 16-bit PNGs, JPEGs from phones (EXIF-rotated, sometimes
CMYK), images with alpha or a palette, and DICOM files straight from a scanner. `read_xray` turns any of them into
one thing: a PIL image in mode "L". It refuses what it cannot read with a `ValueError` that says what was wrong
(empty, not an image, truncated, too large), so one bad file is a message, never a crash or an out-of-memory.
"""

from __future__ import annotations

import io
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

Source = Union[str, Path, bytes, BinaryIO]

# A 10000x10000 scan (100 MP) is accepted and downscaled; a file declaring more pixels than this is treated as a
# decompression bomb and refused before its pixels are decoded.
MAX_PIXELS = 120_000_000
# Above this many pixels an image is decoded one at a time, so a class uploading huge files at once cannot
# multiply the memory a single decode needs.
_LARGE_PIXELS = 16_000_000
_large_decode = threading.Lock()

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom")


def _describe(source: Source) -> str:
    return Path(source).name if isinstance(source, (str, Path)) else "the uploaded file"


def _read_bytes(source: Source) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes()
    return source.read()


def is_dicom(data: bytes) -> bool:
    """DICOM files carry the magic word 'DICM' after a 128-byte preamble."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _window_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map any numeric array onto 0..255 by its own range (how a 16-bit X-ray becomes viewable)."""
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.clip((arr - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def _read_dicom(data: bytes, name: str) -> Image.Image:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError as e:  # pragma: no cover - pydicom is in requirements.txt
        raise ValueError(f"{name} is a DICOM file, and reading DICOM needs pydicom (pip install pydicom)") from e
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types for broken or compressed files
        raise ValueError(f"{name} is a DICOM file whose pixels cannot be read ({type(e).__name__}: {e})") from e
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        pixels = pixels[0]  # a multi-frame file: the first frame is the radiograph
    if pixels.ndim == 3:
        return Image.fromarray(pixels.astype(np.uint8)).convert("L")
    # Stored values -> physical units (rescale slope/intercept), then the window the scanner recommends.
    values = apply_modality_lut(pixels, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds)
    gray = _window_to_uint8(np.asarray(values))
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        gray = 255 - gray  # MONOCHROME1 stores bone dark; flip it so every image reads the same way
    return Image.fromarray(gray, mode="L")


def _to_gray(img: Image.Image) -> Image.Image:
    """Any PIL mode -> "L". 16-bit and float images are windowed by their range; alpha is laid over black."""
    if img.mode == "L":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_window_to_uint8(np.asarray(img)), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba)
    if img.mode not in ("RGB", "1"):
        img = img.convert("RGB")  # CMYK, YCbCr, ... go through RGB so the luminance weights apply
    return img.convert("L")


def read_xray(source: Source, max_side: int | None = None) -> Image.Image:
    """Decode `source` (a path, bytes or a binary file) into an 8-bit grayscale PIL image.

    `max_side` bounds the longer side of the result: JPEGs are decoded at reduced scale directly (cheap), other
    formats are shrunk after decoding. Raises ValueError with one clear sentence for anything unreadable.
    """
    name = _describe(source)
    try:
        data = _read_bytes(source)
    except OSError as e:
        raise ValueError(f"cannot read {name}: {e.strerror or e}") from e
    if not data:
        raise ValueError(f"{name} is empty (0 bytes)")
    if is_dicom(data) or (isinstance(source, (str, Path)) and str(source).lower().endswith((".dcm", ".dicom"))):
        img = _read_dicom(data, name)
    else:
        img = _read_raster(data, name, max_side)
    if max_side is not None and max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return img


def _read_raster(data: bytes, name: str, max_side: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # We check the declared size ourselves just below, with a clearer message than Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ValueError(f"{name} declares too many pixels to decode safely (at most {MAX_PIXELS:,})") from e
    except UnidentifiedImageError as e:
        raise ValueError(f"{name} is not an image this app can read (PNG, JPEG, BMP, TIFF, WebP or DICOM)") from e
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ValueError(f"{name} is {w}x{h} pixels; images of at most {MAX_PIXELS // 1_000_000} megapixels are accepted")
    if w < 1 or h < 1:
        raise ValueError(f"{name} has no pixels ({w}x{h})")
    if img.format == "JPEG" and max_side is not None:
        img.draft("L", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale: fast and small
    lock = _large_decode if w * h > _LARGE_PIXELS else None
    try:
        if lock:
            lock.acquire()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img)  # phone photos of X-rays come rotated by EXIF
            if max_side is not None and max(img.size) > 2 * max_side:
                img = img.reduce(max(1, max(img.size) // (2 * max_side)))  # cheap integer shrink first
            return _to_gray(img)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{name} is truncated or corrupt and cannot be decoded ({e})") from e
    finally:
        if lock:
            lock.release()
