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


def write_images(folder: Path, n: int, prefix: str = "img", suffix: str = ".png") -> None:
    """`n` small distinct grayscale images in `folder` (a class folder of a dataset made on the fly)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        # A gradient, not a flat grey: read_xray refuses images with every pixel the same.
        image = Image.linear_gradient("L").resize((20 + i, 16)).point(lambda v, i=i: (v + 10 * i) % 256)
        image.save(folder / f"{prefix}-{i}{suffix}")


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
    """A 10000 x 10000 grayscale PNG (100 megapixels; compresses to little), a bright square top-left."""
    img = Image.new("L", (side, side), 90)
    img.paste(200, (0, 0, side // 4, side // 4))
    img.save(path, compress_level=1)
    return path


def _dicom_dataset(pixels: np.ndarray, syntax: str, frames: int = 1, photometric: str = "MONOCHROME2"):
    """A DICOM dataset whose header describes `pixels` ([frames,] rows, cols[, samples]); PixelData is left to the
    caller. `syntax` is a transfer syntax UID or its name in pydicom.uid (e.g. "DeflatedExplicitVRLittleEndian")."""
    from pydicom import uid
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    syntax = getattr(uid, syntax, syntax)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = FileDataset("scan.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    samples = pixels.shape[-1] if pixels.ndim == (4 if frames > 1 else 3) else 1
    rows, cols = pixels.shape[1:3] if frames > 1 else pixels.shape[:2]
    bits = pixels.dtype.itemsize * 8
    ds.Modality, ds.PhotometricInterpretation = "DX", photometric if samples == 1 else "RGB"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if samples > 1:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    return ds


def dicom(path: Path, photometric: str = "MONOCHROME2", syntax: str = "ExplicitVRLittleEndian") -> Path:
    """A 16-bit DICOM radiograph with a window, as scanners write them (Explicit VR Little Endian unless `syntax`
    names another uncompressed one, e.g. deflated, which pydicom compresses on saving)."""
    pixels = (gradient().astype(np.uint16) * 16)  # 12-bit range
    ds = _dicom_dataset(pixels, syntax, photometric=photometric)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_rgb16_ramp(path: Path) -> Path:
    """A 16-bit RGB DICOM holding a smooth left-to-right ramp over the full 0..65535 range (gray, R = G = B)."""
    ramp = np.tile(np.linspace(0, 65535, 1000).astype(np.uint16), (8, 1))  # steps of ~66: the low byte saw-tooths
    pixels = np.repeat(ramp[..., None], 3, axis=2)
    ds = _dicom_dataset(pixels, "ExplicitVRLittleEndian")
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_multiframe(path: Path, rgb: bool = True, frames: int = 3) -> Path:
    """A multi-frame 8-bit DICOM (RGB or grayscale): frame 0 is the gradient, later frames are inverted copies."""
    first = gradient()
    stack = np.stack([first if k == 0 else 255 - first for k in range(frames)])
    pixels = np.repeat(stack[..., None], 3, axis=3) if rgb else stack
    ds = _dicom_dataset(pixels, "ExplicitVRLittleEndian", frames=frames)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_encapsulated(path: Path, syntax: str, fragment: bytes = b"\xff\xd8\xff\xf7" + b"\0" * 60) -> Path:
    """A DICOM whose pixels are compressed with `syntax` (JPEG-LS, JPEG lossless, JPEG 2000, ...); the data is a
    dummy fragment, which is all a reader needs to decide whether it can decode that compression at all."""
    from pydicom.encaps import encapsulate

    ds = _dicom_dataset(gradient(), syntax)
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_broken_jpeg2000(path: Path) -> Path:
    """JPEG 2000 transfer syntax with a codestream that starts right (SOC, SIZ markers) and then is garbage."""
    garbage = np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
    return dicom_encapsulated(path, "JPEG2000Lossless", b"\xff\x4f\xff\x51" + garbage)


def _deflate_zeros(n: int) -> bytes:
    """Raw deflate blocks for `n` zero bytes, made by repeating one fully-flushed 1 MiB block: milliseconds even for
    gigabytes (each block stands alone after a full flush, so copies of it chain into a valid stream)."""
    mib = 1 << 20
    one = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = one.compress(bytes(mib)) + one.flush(zlib.Z_FULL_FLUSH)
    rest = zlib.compressobj(9, zlib.DEFLATED, -15)
    return block * (n // mib) + rest.compress(bytes(n % mib)) + rest.flush(zlib.Z_FULL_FLUSH)


def dicom_declaring(path: Path, side: int, syntax: str = "ExplicitVRLittleEndian", frames: int = 1,
                    samples: int = 1) -> Path:
    """A DICOM whose header declares side x side pixels (x frames x samples) over a few bytes of pixel data."""
    ds = _dicom_dataset(np.zeros((2, 2, samples) if samples > 1 else (2, 2), np.uint8), syntax)
    ds.Rows = ds.Columns = side
    if frames > 1:
        ds.NumberOfFrames = frames
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = bytes(64)
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_deflated(path: Path, side: int = 64, pixel_bytes: int | None = None) -> Path:
    """A Deflated-Explicit-VR DICOM declaring side x side 16-bit pixels whose pixel data inflates to `pixel_bytes`
    (by default what the header declares). A large side is a decompression bomb: 12000 x 12000 is ~280 KB on disk
    and 288 MB inflated; a small side with a large `pixel_bytes` inflates to far more than its header needs."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    ds = _dicom_dataset(np.zeros((1, 1), np.uint16), "DeflatedExplicitVRLittleEndian")
    ds.Rows = ds.Columns = side
    n = side * side * 2 if pixel_bytes is None else pixel_bytes
    n += n % 2  # DICOM values have even lengths
    meta, body = DicomBytesIO(), DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    body.is_little_endian, body.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    write_dataset(body, ds)
    header = body.getvalue() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, n)  # the PixelData element's header
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = head.compress(header) + head.flush(zlib.Z_FULL_FLUSH) + _deflate_zeros(n)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block closes the stream
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + stream + end)
    return path


def text_as_dicom(path: Path) -> Path:
    path.write_text("this is not a scan, just text with a .dcm name\n")
    return path


def float_tiff_with_nan(path: Path) -> Path:
    """A 32-bit float TIFF holding the gradient, with one NaN and one +inf pixel (as some processing tools write)."""
    arr = gradient().astype(np.float32) / 255
    arr[5, 40], arr[50, 70] = np.nan, np.inf
    Image.fromarray(arr, "F").save(path, "TIFF")
    return path


def png_transparent(path: Path) -> Path:
    """The gradient in the colour channels with alpha 0 everywhere: fully transparent, as a bad export leaves it."""
    rgba = np.dstack([gradient()] * 3 + [np.zeros(gradient().shape, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def png_constant(path: Path) -> Path:
    Image.new("L", (80, 60), 117).save(path)
    return path


def png_big_metadata(path: Path, kind: bytes = b"zTXt", size: int = 3_500_000) -> Path:
    """A valid PNG carrying a `size`-byte compressed zTXt or iCCP chunk (random, so it stays that big), before IDAT."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    buf = io.BytesIO()
    Image.fromarray(gradient(), "L").save(buf, "PNG")
    png = buf.getvalue()
    payload = zlib.compress(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes(), 0)
    extra = chunk(kind, (b"Comment" if kind == b"zTXt" else b"profile") + b"\0\0" + payload)
    ihdr_end = 8 + 8 + 13 + 4  # signature, then IHDR (length, type, 13 bytes, CRC)
    path.write_bytes(png[:ihdr_end] + extra + png[ihdr_end:])
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
    "dicom deflated": (lambda p: dicom(p, syntax="DeflatedExplicitVRLittleEndian"), "deflated.dcm"),
    "dicom rgb 16-bit": (dicom_rgb16_ramp, "rgb16.dcm"),
    "dicom multi-frame rgb": (dicom_multiframe, "frames-rgb.dcm"),
    "dicom multi-frame gray": (lambda p: dicom_multiframe(p, rgb=False), "frames.dcm"),
    "tiff float with nan": (float_tiff_with_nan, "float.tif"),
    "png fully transparent": (png_transparent, "clear.png"),
    "png 3.5 MB zTXt": (png_big_metadata, "ztxt.png"),
    "png 3.5 MB iCCP": (lambda p: png_big_metadata(p, b"iCCP"), "iccp.png"),
    "png 8-bit": (png_8bit, "plain.png"),
    "png 16-bit grayscale": (png_16bit, "sixteen.png"),
    "png rgba": (png_rgba, "alpha.png"),
    "png palette": (png_palette, "palette.png"),
    "jpeg cmyk": (jpeg_cmyk, "cmyk.jpg"),
    "jpeg exif-rotated": (jpeg_exif_rotated, "rotated.jpg"),
    "non-ascii name": (png_8bit, "röntgen_胸部.png"),
    "dicom monochrome2": (dicom, "scan.dcm"),
    "dicom monochrome1": (lambda p: dicom(p, "MONOCHROME1"), "inverted.dcm"),
}
BROKEN = {
    "zero bytes": (empty, "empty.png", "empty"),
    "truncated png": (truncated_png, "cut.png", "truncated"),
    "text named .png": (text_as_png, "notes.png", "not an image"),
    "decompression bomb": (decompression_bomb, "bomb.png", "pixels"),
    "png 1x1": (png_1x1, "tiny.png", "no content: its one pixel"),
    "png constant": (png_constant, "blank.png", "no content"),
    "dicom deflate bomb": (lambda p: dicom_deflated(p, 12_000), "bomb.dcm", "megapixels"),
    "dicom inflating past its header": (lambda p: dicom_deflated(p, 64, 50_000_000), "swollen.dcm", "inflates"),
    "dicom jpeg-ls": (lambda p: dicom_encapsulated(p, "JPEGLSLossless"), "jpegls.dcm", "cannot decode"),
    "dicom jpeg lossless": (lambda p: dicom_encapsulated(p, "JPEGLosslessSV1"), "lossless.dcm",
                            "cannot decode"),
    "dicom broken jpeg 2000": (dicom_broken_jpeg2000, "broken-j2k.dcm", "damaged"),
    "text named .dcm": (text_as_dicom, "notes.dcm", "not one"),
}
