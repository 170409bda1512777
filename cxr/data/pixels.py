"""What both X-ray readers share: the pixel limit every declared size is checked against before decoding
(`check_size`, `MAX_PIXELS`), and the windowing that maps any numeric array onto 0..255 (`window_to_uint8`), how a
16-bit or float X-ray becomes viewable. `cxr.data.images` (Pillow's formats) and `cxr.data.dicom` both use them.
"""

from __future__ import annotations

import math

import numpy as np

# A 10000x10000 scan (100 MP) is accepted and downscaled; a file declaring more pixels than this is treated as a
# decompression bomb and refused before its pixels are decoded. For DICOM every frame and colour sample counts.
MAX_PIXELS = 120_000_000


def window_to_uint8(arr: np.ndarray) -> np.ndarray:
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


def check_size(name: str, w: int, h: int, frames: int = 1, samples: int = 1) -> None:
    """Refuse, with one sentence, a declared size with no pixels or more than `MAX_PIXELS` (frames and colour
    samples count), before anything is decoded."""
    if w < 1 or h < 1 or frames < 1:
        raise ValueError(f"{name} has no pixels ({w}x{h}); upload a radiograph with a picture in it")
    if w * h * frames * samples > MAX_PIXELS:
        extra = (f" x {frames} frames" if frames > 1 else "") + (f" x {samples} colour samples" if samples > 1 else "")
        raise ValueError(f"{name} is {w}x{h} pixels{extra}; images of at most {MAX_PIXELS // 1_000_000} megapixels "
                         "are accepted, so export a smaller one")
