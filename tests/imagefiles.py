"""Writers for every kind of image file the tests feed in: good ones in odd formats, and broken ones.

Shared by the library tests (tests/test_images.py) and the reliability tests through the app.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def gradient(w: int = 80, h: int = 60) -> np.ndarray:
    """A horizontal ramp with a bright square top-left: orientation is visible."""
    arr = np.tile(np.linspace(0, 200, w, dtype=np.float32), (h, 1))
    arr[: h // 4, : w // 4] = 255
    return arr.astype(np.uint8)


def png_8bit(path: Path) -> Path:
    Image.fromarray(gradient(), "L").save(path)
    return path


def png_16bit(path: Path) -> Path:
    Image.fromarray(gradient().astype(np.uint16) * 200).save(path)  # values up to 51000
    return path


def png_rgba(path: Path) -> Path:
    rgba = np.dstack([gradient()] * 3 + [np.full(gradient().shape, 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def png_palette(path: Path) -> Path:
    Image.fromarray(gradient(), "L").convert("P").save(path)
    return path


def jpeg_cmyk(path: Path) -> Path:
    Image.fromarray(gradient(), "L").convert("RGB").convert("CMYK").save(path, "JPEG")
    return path


def jpeg_exif_rotated(path: Path) -> Path:
    """Stored 80 wide x 60 high, with EXIF orientation 6: it should read as 60 wide x 80 high."""
    img = Image.fromarray(gradient(), "L").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, "JPEG", exif=exif.tobytes())
    return path


def png_1x1(path: Path) -> Path:
    Image.new("L", (1, 1), 128).save(path)
    return path


def png_huge(path: Path, side: int = 10_000) -> Path:
    """A 10000 x 10000 grayscale PNG (100 megapixels; compresses to little)."""
    Image.new("L", (side, side), 90).save(path, compress_level=1)
    return path


def dicom(path: Path, photometric: str = "MONOCHROME2") -> Path:
    """A 16-bit DICOM radiograph with a window, as scanners write them."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    pixels = (gradient().astype(np.uint16) * 16)  # 12-bit range
    ds.Modality, ds.PhotometricInterpretation = "DX", photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def truncated_png(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8), "L").save(buf, "PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def text_as_png(path: Path) -> Path:
    path.write_text("this is not an image, just text with a .png name\n")
    return path


def decompression_bomb(path: Path, side: int = 100_000) -> Path:
    """A valid PNG header declaring side x side pixels (10 gigapixels), with a tiny body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


# name -> (writer, file name). Readable ones should give a picture; broken ones one clear sentence.
READABLE = {
    "png 8-bit": (png_8bit, "plain.png"),
    "png 16-bit grayscale": (png_16bit, "sixteen.png"),
    "png rgba": (png_rgba, "alpha.png"),
    "png palette": (png_palette, "palette.png"),
    "jpeg cmyk": (jpeg_cmyk, "cmyk.jpg"),
    "jpeg exif-rotated": (jpeg_exif_rotated, "rotated.jpg"),
    "png 1x1": (png_1x1, "tiny.png"),
    "non-ascii name": (png_8bit, "röntgen_胸部.png"),
    "dicom monochrome2": (dicom, "scan.dcm"),
    "dicom monochrome1": (lambda p: dicom(p, "MONOCHROME1"), "inverted.dcm"),
}
BROKEN = {
    "zero bytes": (empty, "empty.png", "empty"),
    "truncated png": (truncated_png, "cut.png", "truncated"),
    "text named .png": (text_as_png, "notes.png", "not an image"),
    "decompression bomb": (decompression_bomb, "bomb.png", "pixels"),
}
