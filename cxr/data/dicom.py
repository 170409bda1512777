"""Reading a DICOM file, as a scanner writes it, into an 8-bit grayscale image: plain, deflated or compressed, one
frame or many, gray or colour. Every size the header declares is checked before the pixels are decoded (a deflated
body is inflated only as far as its header allows), only the first frame is decoded (`info["note"]` says so), the
scanner's rescale and window apply, MONOCHROME1 is flipped, and anything unreadable is a `ValueError` of one
sentence. `read_xray` (`cxr.data.images`) sends here every file that carries the DICM marker.
"""

from __future__ import annotations

import io
import math
import warnings
import zlib
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from PIL import Image

from cxr.data.decode_budget import DECODES
from cxr.data.pixels import check_size, window_to_uint8

# Room for a DICOM header (and anything after the pixels) on top of the pixel bytes it declares.
_DICOM_HEADER_BYTES = 4 << 20


def is_dicom(data: bytes) -> bool:
    """DICOM files carry the magic word 'DICM' after a 128-byte preamble."""
    return len(data) >= 132 and data[128:132] == b"DICM"


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
    check_size(name, cols, rows, frames, samples)
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


def read_dicom(data: bytes, name: str) -> Image.Image:
    """The first frame of the DICOM file `data` as an 8-bit gray image; `name` is how messages call the file."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, get_decoder

    ds = _dicom_header(data, name)
    with _header_errors(name):
        rows, cols, frames, samples, bits = _dicom_dims(ds)
    check_size(name, cols, rows, frames, samples)
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
                gray = window_to_uint8(lum)
            else:
                # Stored values -> physical units (rescale slope/intercept), then the window the scanner recommends.
                values = apply_modality_lut(pixels, ds)
                if "WindowCenter" in ds or "VOILUTSequence" in ds:
                    values = apply_voi_lut(values, ds)
                gray = window_to_uint8(np.asarray(values))
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
