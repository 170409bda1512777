"""Reading one X-ray file into an 8-bit grayscale image, whatever form it arrives in.

Chest X-rays come as 8-bit PNGs (the Kaggle database), 16-bit PNGs, float TIFFs, JPEGs from phones (EXIF-rotated,
sometimes CMYK), images with alpha or a palette, and DICOM files straight from a scanner (plain, deflated or
compressed, one frame or many). `read_xray` turns any of them into one thing: a PIL image in mode "L", stretched
over the range of its real values. It refuses what it cannot read with a `ValueError` of one sentence that names
the file and says what to do (empty, not an image, truncated, too large, a compression it cannot decode, nothing
to see), and it checks every declared size before decoding, so one bad file is a message, never a crash or an
out-of-memory. Each decode reserves its estimated peak memory (`decode_cost`) in the budget all decodes share
(`cxr.data.decode_budget`).
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxr.data.decode_budget import DECODES

Source = Union[str, Path, bytes, BinaryIO]

# A 10000x10000 scan (100 MP) is accepted and downscaled; a file declaring more pixels than this is treated as a
# decompression bomb and refused before its pixels are decoded. For DICOM every frame and colour sample counts.
MAX_PIXELS = 120_000_000
# For images Pillow decodes, the longest side may be at most this many times the shortest. Radiographs are near
# square (a long-leg scan is about 1:4); a 1 x 100,000,000 strip passes the pixel limit yet costs Pillow dozens of
# bytes of bookkeeping per row.
MAX_ASPECT = 20
# Room for a DICOM header (and anything after the pixels) on top of the pixel bytes it declares.
_DICOM_HEADER_BYTES = 4 << 20

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


def is_dicom(data: bytes) -> bool:
    """DICOM files carry the magic word 'DICM' after a 128-byte preamble."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _window_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map any numeric array onto 0..255 by the range of its finite values (how a 16-bit X-ray becomes viewable).

    A NaN or inf pixel (float TIFFs from processing tools have them) is ignored for the range and shown black;
    letting it into min/max would turn the whole picture black. The work goes in bands of 4M values, so the
    float copy stays 16 MB even for a 120-megapixel scan."""
    flat, step, is_float = arr.reshape(-1), 1 << 22, arr.dtype.kind == "f"
    lo, hi = math.inf, -math.inf
    for start in range(0, flat.size, step):
        band = flat[start:start + step]
        band = band[np.isfinite(band)] if is_float else band
        if band.size:
            lo, hi = min(lo, float(band.min())), max(hi, float(band.max()))
    out = np.zeros(flat.size, dtype=np.uint8)
    if not hi > lo:
        return out.reshape(arr.shape)
    for start in range(0, flat.size, step):
        band = flat[start:start + step].astype(np.float32)
        band -= lo
        band *= 255.0 / (hi - lo)
        band += 0.5
        if is_float:
            band[~np.isfinite(band)] = 0
        np.clip(band, 0, 255, out=band)
        out[start:start + step] = band
    return out.reshape(arr.shape)


def _check_size(name: str, w: int, h: int, frames: int = 1, samples: int = 1) -> None:
    if w < 1 or h < 1 or frames < 1:
        raise ValueError(f"{name} has no pixels ({w}x{h}); upload a radiograph with a picture in it")
    if w * h * frames * samples > MAX_PIXELS:
        extra = (f" x {frames} frames" if frames > 1 else "") + (f" x {samples} colour samples" if samples > 1 else "")
        raise ValueError(f"{name} is {w}x{h} pixels{extra}; images of at most {MAX_PIXELS // 1_000_000} megapixels "
                         "are accepted, so export a smaller one")


@contextmanager
def _header_errors(name: str) -> Iterator[None]:
    try:
        yield
    except Exception as e:  # pydicom (and zlib) raise many types for a broken header
        raise ValueError(f"{name} is a DICOM file whose header cannot be read; export it again from the scanner "
                         "or viewer") from e


def _dicom_header(data: bytes, name: str):
    """The DICOM dataset, pixels still encoded; a deflated body is inflated only as far as its header needs."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.filereader import read_dataset, read_preamble

    with _header_errors(name):
        fp = io.BytesIO(data)
        preamble = read_preamble(fp, False)
        meta = FileMetaDataset(read_dataset(fp, False, True, stop_when=lambda tag, vr, length: tag >> 16 != 2))
        if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
            return pydicom.dcmread(io.BytesIO(data))
        # pydicom would inflate the whole body at once, and 8 MB of zeros can declare 65535x65535. Inflate the
        # header first and check its size, then inflate at most the bytes it declares.
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        head = inflater.decompress(data[fp.tell():], _DICOM_HEADER_BYTES)
        header = read_dataset(io.BytesIO(head), False, True, stop_when=lambda tag, vr, length: tag >= 0x7FE00000)
        rows, cols, frames, samples, bits = _dicom_dims(header)
    _check_size(name, cols, rows, frames, samples)
    allowed = math.ceil(rows * cols * frames * samples * bits / 8) + _DICOM_HEADER_BYTES
    with _header_errors(name):
        rest = inflater.decompress(inflater.unconsumed_tail, allowed - len(head) + 1)
    if len(head) + len(rest) > allowed:
        raise ValueError(f"{name} is a deflated DICOM file that inflates to more than its {cols}x{rows} pixels "
                         "need, so it was not read; save it again without deflate compression")
    with _header_errors(name):
        return FileDataset(name, read_dataset(io.BytesIO(head + rest), False, True), preamble, meta, False, True)


def _dicom_dims(ds) -> tuple[int, int, int, int, int]:
    """Rows, columns, frames, samples per pixel and bits allocated, as the header declares them."""
    return (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0), int(ds.get("NumberOfFrames") or 1),
            int(ds.get("SamplesPerPixel") or 1), int(ds.get("BitsAllocated") or 16))


def _read_dicom(data: bytes, name: str) -> Image.Image:
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder

    ds = _dicom_header(data, name)
    with _header_errors(name):
        rows, cols, frames, samples, bits = _dicom_dims(ds)
    _check_size(name, cols, rows, frames, samples)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    compressed = syntax is not None and syntax.is_compressed
    if compressed and not get_decoder(syntax).is_available:
        raise ValueError(f"{name} holds {syntax.name} pixel data, which this app cannot decode; save it "
                         "uncompressed (or as PNG) and upload that")
    try:
        # One frame's stored values, float64 after a rescale or window (pydicom's LUTs), and the gray result.
        with DECODES.reserve(rows * cols * (samples * math.ceil(bits / 8) + 17)):
            ds.pixel_array_options(index=0)  # decode only the first frame, however many there are
            pixels = ds.pixel_array
            if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
                pixels = apply_color_lut(pixels, ds)
            if pixels.ndim == 3:
                # Colour: luminance as Pillow weighs it, then the real range, so 16-bit colour does not wrap at 255
                lum = pixels[..., 0] * np.float32(0.299)
                lum += pixels[..., 1] * np.float32(0.587)
                lum += pixels[..., 2] * np.float32(0.114)
                gray = _window_to_uint8(lum)
            else:
                # Stored values -> physical units (rescale slope/intercept), then the window the scanner recommends.
                values = apply_modality_lut(pixels, ds)
                if "WindowCenter" in ds or "VOILUTSequence" in ds:
                    values = apply_voi_lut(values, ds)
                gray = _window_to_uint8(np.asarray(values))
                if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
                    gray = 255 - gray  # MONOCHROME1 stores bone dark; flip it so every image reads the same way
    except Exception as e:  # decoders raise many types; the file, not the app, is at fault
        kind = f"{syntax.name} " if compressed else ""
        raise ValueError(f"{name} is a DICOM file whose {kind}pixel data is damaged and cannot be decoded; export "
                         "it again from the scanner or viewer") from e
    img = Image.fromarray(gray, mode="L")
    if frames > 1:
        note = f"{name} holds {frames} frames; only the first is shown and classified"
        img.info["frames"], img.info["note"] = frames, note
        warnings.warn(note, stacklevel=3)
    return img


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
    img = _read_dicom(data, name) if is_dicom(data) else _read_raster(data, name, max_side, named_dicom)
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
    _check_size(name, w, h)
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
