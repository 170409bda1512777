"""A small, procedurally drawn stand-in for the COVID-19 Radiography Database, for tests and offline use.

Each image is a cartoon of a frontal chest radiograph: a bright torso, two dark lung fields crossed by ribs, the
spine and the heart shadow, the diaphragm, film grain, and random pose and exposure. The classes differ the way
radiologists describe them, inside the lungs only:
- normal: clear lungs;
- COVID: patchy ground-glass opacities on both sides, low and towards the outer edges;
- viral pneumonia: streaky, interstitial haze around both hila (the centre of the chest);
- lung opacity: one dense consolidation in one lung.
It is written in the current Kaggle layout (`COVID/images/COVID-1.png`, lung masks in `masks/`) with a
SYNTHETIC.txt marker, so every screen that shows it can say it is synthetic. It is not medical data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cxr.data.index import SYNTHETIC_MARKER

# Class key -> (folder name, file prefix), as in the Kaggle database.
KAGGLE_FOLDERS = {
    "covid": ("COVID", "COVID"),
    "normal": ("Normal", "Normal"),
    "viral": ("Viral Pneumonia", "Viral Pneumonia"),
    "lung_opacity": ("Lung_Opacity", "Lung_Opacity"),
}


def _blob(u: np.ndarray, v: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return np.exp(-(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2))


def _ellipse(u: np.ndarray, v: np.ndarray, cx: float, cy: float, rx: float, ry: float, soft: float) -> np.ndarray:
    d = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
    return np.clip((1 - d) / soft, 0, 1)


def draw_radiograph(key: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic image and its lung mask, both uint8 [size, size]."""
    img, mask, _ = draw_with_evidence(key, size, rng)
    return img, mask


def draw_with_evidence(key: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`draw_radiograph`'s image and lung mask, and where the class's signs were drawn (uint8 [size, size], 255
    within one radius of each patch's centre, inside the lungs; all 0 for normal): the region a map should point at.
    The same random numbers are drawn, so the same seed gives the same image."""
    if key not in KAGGLE_FOLDERS:
        raise ValueError(f"unknown class {key!r}; synthetic data has {', '.join(KAGGLE_FOLDERS)}")
    lin = np.linspace(-1, 1, size, dtype=np.float32)
    u, v = np.meshgrid(lin, lin)
    # Random pose: the patient stands a little off-centre, tilted, closer or further from the detector.
    angle, zoom = rng.uniform(-0.08, 0.08), rng.uniform(0.9, 1.1)
    u, v = (np.cos(angle) * u - np.sin(angle) * v) * zoom + rng.uniform(-0.06, 0.06), (
        np.sin(angle) * u + np.cos(angle) * v
    ) * zoom + rng.uniform(-0.06, 0.06)

    img = 0.06 + 0.50 * _ellipse(u, v, 0, 0.4, 1.0, 1.35, 0.3)  # torso
    lung_l = _ellipse(u, v, -0.4, -0.05, 0.3 * rng.uniform(0.9, 1.1), 0.62, 0.2)
    lung_r = _ellipse(u, v, 0.4, -0.05, 0.3 * rng.uniform(0.9, 1.1), 0.62, 0.2)
    lungs = np.maximum(lung_l, lung_r)
    img -= 0.32 * lungs  # air is dark on a radiograph
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (v - 0.35 * u**2) * rng.uniform(5.5, 6.5))
    img += 0.07 * ribs**3 * lungs
    img += 0.16 * _ellipse(u, v, 0, 0.1, 0.08, 1.2, 0.5)  # spine and mediastinum
    img += 0.22 * _ellipse(u, v, 0.12, 0.3, 0.3 * rng.uniform(0.9, 1.15), 0.25, 0.6)  # heart
    img += 0.22 * np.clip((v - 0.5 - 0.15 * np.abs(u)) * 6, 0, 1) * (np.abs(u) < 0.75)  # diaphragm

    # The disease patterns, always inside the lungs; `signs` is their envelope (a blob is e^-1 at one radius).
    signs = np.zeros_like(img)
    if key == "covid":
        for side in (-1, 1):
            for _ in range(rng.integers(2, 4)):
                cx, cy = side * rng.uniform(0.45, 0.6), rng.uniform(0.05, 0.4)
                amount = rng.uniform(0.13, 0.22)  # drawn before the size: a seed reproduces the order of draws
                blob = _blob(u, v, cx, cy, rng.uniform(0.08, 0.14), rng.uniform(0.1, 0.18))
                img += amount * blob * lungs
                signs = np.maximum(signs, blob)
    elif key == "viral":
        streaks = 0.5 + 0.5 * np.sin(u * rng.uniform(40, 55) + rng.uniform(0, 6)) * np.sin(v * rng.uniform(25, 35))
        hila = _blob(u, v, -0.25, 0.0, 0.22, 0.35) + _blob(u, v, 0.25, 0.0, 0.22, 0.35)
        img += rng.uniform(0.15, 0.22) * streaks * hila * lungs
        signs = hila
    elif key == "lung_opacity":
        side, amount = rng.choice([-1, 1]), rng.uniform(0.25, 0.35)
        signs = _blob(u, v, side * 0.38, rng.uniform(-0.1, 0.3), 0.17, 0.22)
        img += amount * signs * lungs

    img = np.clip(img, 0, 1) ** rng.uniform(0.85, 1.15)  # exposure differs between machines
    img += rng.normal(0, 0.02, img.shape)  # film grain
    img = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    mask = ((lungs > 0.05) * 255).astype(np.uint8)  # the lung fields as drawn, same pose: no random number used
    return img, mask, ((signs > np.exp(-1)) & (lungs > 0.05)).astype(np.uint8) * 255


def make_synthetic(
    root: "str | Path", per_class: int = 60, size: int = 256, seed: int = 0, classes: "tuple[str, ...] | None" = None
) -> Path:
    """Write `per_class` images of each class under `root` in the Kaggle v4 layout; returns `root`."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if not 32 <= size <= 1024:
        raise ValueError(f"size must be 32..1024, got {size}")
    root = Path(root)
    keys = classes or tuple(KAGGLE_FOLDERS)
    for k, key in enumerate(keys):
        if key not in KAGGLE_FOLDERS:
            raise ValueError(f"unknown class {key!r}; synthetic data has {', '.join(KAGGLE_FOLDERS)}")
        folder, prefix = KAGGLE_FOLDERS[key]
        images, masks = root / folder / "images", root / folder / "masks"
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, k])  # one stream per class: adding a class changes no other
        for i in range(1, per_class + 1):
            img, mask = draw_radiograph(key, size, rng)
            Image.fromarray(img, mode="L").save(images / f"{prefix}-{i}.png")
            Image.fromarray(mask, mode="L").save(masks / f"{prefix}-{i}.png")
    (root / SYNTHETIC_MARKER).write_text(
        "Synthetic chest-radiograph-like images drawn by `python -m cxr make-synthetic` for tests and demos.\n"
        "They are not medical data; a model trained on them says nothing about real X-rays.\n"
    )
    return root
