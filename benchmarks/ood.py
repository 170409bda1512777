"""How well does a model's out-of-distribution check (cxr.explain.ood) tell its test X-rays from other pictures?

AUROC (1: every outsider scores above every X-ray, 0.5: chance) between the real X-rays of the checkpoint's own test
split and three groups: (a) photographs (scikit-image's bundled samples, a few crops of each), documents rendered
with PIL, flat images and noise; (b) medical-looking images that are not chest X-rays (retina, the Shepp-Logan
phantom, cells, stained tissue); (c) near misses, each test X-ray inverted, rotated 90 degrees, or cropped to a
corner. Beside the check the model ships with (Mahalanobis, shrunk), the same features scored other ways, for the
choice: Mahalanobis with the plain covariance (pseudo-inverse, as Lee et al.), the distance to the nearest training
image (kNN, k=1, normalised features, Sun et al. 2022), the energy score (-logsumexp of the logits, Liu et al. 2020)
and one minus the top probability; and a colour check before the gray conversion (colourfulness of Hasler and
Suesstrunk). "flagged" is the share of each group the shipped check (score > 1) marks as unlike the training data.

    pip install scikit-image   # benchmark-only (requirements-dev.txt)
    python -m benchmarks.ood --checkpoint /tmp/h-ood/s0.pt --data ../shared/cxr-sample --out benchmarks/results/ood.txt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from cxr.data.images import read_xray
from cxr.data.index import index_dataset, split_for
from cxr.explain.ood import fit_features, ledoit_wolf
from cxr.predict import DISPLAY_SIDE, Classifier

PHOTOS = ("astronaut", "coffee", "camera", "chelsea", "rocket", "coins", "moon", "horse", "clock", "brick", "grass",
          "gravel", "hubble_deep_field", "logo", "colorwheel", "page", "text")  # `page`, `text`: a scanned page, signs
MEDICAL = ("retina", "microaneurysms", "immunohistochemistry", "cell", "shepp_logan_phantom")
COLOURFUL = 15.0  # Hasler and Suesstrunk's "slightly colourful"; a gray X-ray scores 0


def skimage_images(names: tuple[str, ...]) -> dict[str, Image.Image]:
    """The named sample images of scikit-image that its wheel bundles (none is downloaded: a missing one is left out)."""
    import skimage.data

    out = {}
    for name in names:
        try:
            pixels = getattr(skimage.data, name)()
        except Exception as e:  # not bundled (it would need a download), or not in this version
            print(f"  (left out {name}: {type(e).__name__})")
            continue
        pixels = np.asarray(pixels, dtype=np.float64)
        pixels = (pixels - pixels.min()) / max(pixels.max() - pixels.min(), 1e-12) * 255
        out[name] = Image.fromarray(pixels.astype(np.uint8)[..., :3] if pixels.ndim == 3 else pixels.astype(np.uint8))
    return out


def views(image: Image.Image, rng: np.random.Generator, crops: int = 4) -> list[Image.Image]:
    """The image, its mirror and a few random crops of 50 to 90 % of its side: more than one look at each picture."""
    out = [image, ImageOps.mirror(image)]
    w, h = image.size
    for _ in range(crops):
        s = rng.uniform(0.5, 0.9)
        cw, ch = int(w * s), int(h * s)
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out.append(image.crop((x, y, x + cw, y + ch)))
    return out


def documents(rng: np.random.Generator, n: int = 24) -> list[Image.Image]:
    """Pages of text (some with a rule or a table), black on white or white on dark, in several type sizes."""
    words = ("the patient was seen in clinic today and reports no new symptoms since the last visit plan follow up in "
             "two weeks invoice total amount due date reference number page of").split()
    out = []
    for k in range(n):
        w, h = int(rng.integers(500, 900)), int(rng.integers(600, 1100))
        dark = k % 6 == 5
        page = Image.new("L", (w, h), 30 if dark else int(rng.integers(235, 256)))
        draw = ImageDraw.Draw(page)
        size = int(rng.integers(12, 30))
        font = ImageFont.load_default(size=size)
        y = int(rng.integers(20, 60))
        while y < h - size * 2:
            line = " ".join(rng.choice(words, int(rng.integers(4, 12))))
            draw.text((int(rng.integers(20, 50)), y), line, fill=230 if dark else 0, font=font)
            y += int(size * rng.uniform(1.3, 1.8))
            if k % 4 == 1 and rng.random() < 0.15:
                draw.line((20, y, w - 20, y), fill=0, width=2)
        out.append(page)
    return out


def flat_and_noise(rng: np.random.Generator, side: int = 256) -> dict[str, Image.Image]:
    out = {f"flat {v}": Image.new("L", (side, side), v) for v in (0, 64, 128, 192, 255)}
    for k in range(4):
        out[f"uniform noise {k}"] = Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8))
        out[f"colour noise {k}"] = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        out[f"gaussian noise {k}"] = Image.fromarray(np.clip(rng.normal(128, 40, (side, side)), 0, 255).astype(np.uint8))
    ramp = np.tile(np.linspace(0, 255, side, dtype=np.float64), (side, 1))
    out["horizontal gradient"] = Image.fromarray(ramp.astype(np.uint8))
    out["vertical gradient"] = Image.fromarray(ramp.T.astype(np.uint8))
    out["checkerboard"] = Image.fromarray(((np.indices((side, side)) // 32).sum(0) % 2 * 255).astype(np.uint8))
    return out


def near_misses(xrays: list[Image.Image]) -> dict[str, list[Image.Image]]:
    def corner(im: Image.Image) -> Image.Image:
        w, h = im.size
        return im.crop((0, 0, w // 2, h // 2))

    return {"inverted": [ImageOps.invert(im.convert("L")) for im in xrays],
            "rotated 90": [im.transpose(Image.Transpose.ROTATE_90) for im in xrays],
            "corner crop": [corner(im) for im in xrays]}


def colourfulness(image: Image.Image) -> float:
    """Hasler and Suesstrunk (2003): 0 for a gray image, about 15 slightly colourful, 33 moderately, 59 quite."""
    if image.mode not in ("RGB", "RGBA"):
        return 0.0
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    rg, yb = rgb[..., 0] - rgb[..., 1], 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


@torch.inference_mode()
def forward(clf: Classifier, images: list[Image.Image], batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and pooled features of the images, each read as `Classifier.predict` reads it (gray)."""
    xs = [clf.model_input(clf.read(im)) for im in images]
    outs = [clf.forward(torch.cat(xs[i:i + batch])) for i in range(0, len(xs), batch)]
    return torch.cat([o[0] for o in outs]).float(), torch.cat([o[1] for o in outs]).float()


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(an outsider scores above an X-ray), ties counting half (the Mann-Whitney U statistic)."""
    both = np.concatenate([inside, outside])
    order = both.argsort(kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    for v in np.unique(both):  # average ranks of ties
        tied = both == v
        ranks[tied] = ranks[tied].mean()
    return float((ranks[len(inside):].sum() - len(outside) * (len(outside) + 1) / 2) / (len(inside) * len(outside)))


class Scorers:
    """Each way of scoring, fitted on the same training features: higher = less like the training X-rays."""

    def __init__(self, clf: Classifier, train: torch.Tensor, labels: torch.Tensor, val: torch.Tensor):
        self.clf, self.train_unit = clf, torch.nn.functional.normalize(train, dim=1)
        classes = sorted(set(labels.tolist()))
        self.means = torch.stack([train[labels == c].mean(0) for c in classes])
        centered = train - self.means[[classes.index(c) for c in labels.tolist()]]
        self.plain = torch.linalg.pinv(centered.T @ centered / len(train))
        self.refit = fit_features(train, labels, val)
        self.shrinkage = ledoit_wolf(centered)[1]

    def scores(self, logits: torch.Tensor, pooled: torch.Tensor) -> dict[str, np.ndarray]:
        diff = pooled[:, None, :] - self.means[None]
        plain = torch.einsum("bcd,de,bce->bc", diff, self.plain, diff).amin(1).clamp_min(0).sqrt()
        knn = 1 - (torch.nn.functional.normalize(pooled, dim=1) @ self.train_unit.T).amax(1)
        return {"shipped": self.clf.ood.score(pooled).numpy(), "refit": self.refit.score(pooled).numpy(),
                "plain": plain.numpy(), "knn": knn.numpy(), "energy": (-torch.logsumexp(logits, 1)).numpy(),
                "1-maxprob": (1 - logits.softmax(1).amax(1)).numpy()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="the dataset the checkpoint was trained on (its test split is used)")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args()
    t0 = time.perf_counter()
    clf = Classifier(args.checkpoint)
    if clf.ood is None:
        raise SystemExit(f"{args.checkpoint} carries no out-of-distribution check (train it with this cxr)")
    index = index_dataset(args.data, clf.classes)
    split = split_for(index, clf.checkpoint)
    read = lambda ids: [read_xray(index.files[i], max_side=DISPLAY_SIDE) for i in ids]  # noqa: E731
    train_ids = sorted(set(range(len(index.files))) - set(split.val) - set(split.test))
    train_pooled = forward(clf, read(train_ids))[1]
    val_pooled = forward(clf, read(split.val))[1]
    scorers = Scorers(clf, train_pooled, torch.tensor([index.labels[i] for i in train_ids]), val_pooled)
    xrays = read(split.test)
    rng = np.random.default_rng(0)
    photos = skimage_images(PHOTOS)
    medical = skimage_images(MEDICAL)
    groups: dict[str, list[Image.Image]] = {
        "(a) photographs": [v for im in photos.values() for v in views(im, rng)],
        "(a) documents": documents(rng),
        "(a) flat and noise": list(flat_and_noise(rng).values()),
        "(b) medical, not chest X-ray": [v for im in medical.values() for v in views(im, rng)],
        **{f"(c) {k}": v for k, v in near_misses(xrays).items()},
    }
    inside = scorers.scores(*forward(clf, xrays))
    colour_in = np.array([colourfulness(im) for im in xrays])
    fit = clf.ood
    lines = [f"checkpoint {Path(args.checkpoint).name}: {clf.checkpoint.image_size} px, fitted on {fit.images} training "
             f"images, threshold {fit.threshold:.2f} chosen on {fit.val_images} validation images "
             f"(pass {fit.pass_rate:.1%}), shrinkage {fit.shrinkage:.2f}, fit {fit.seconds:.2f} s at the end of training",
             f"test X-rays: {len(xrays)}, passing the shipped check {np.mean(inside['shipped'] <= 1):.1%}; "
             f"colourful (> {COLOURFUL:g}): {np.mean(colour_in > COLOURFUL):.1%}",
             f"photographs from: {', '.join(photos)}; medical: {', '.join(medical)}", "",
             f"{'AUROC vs test X-rays':32}{'n':>5}" + "".join(f"{k:>11}" for k in inside)
             + f"{'shipped+colour':>16}{'flagged':>9}{'+colour':>9}"]
    for name, images in groups.items():
        out = scorers.scores(*forward(clf, images))
        colour = np.array([colourfulness(im) for im in images])
        # The colour check before the gray conversion, joined to the shipped score: the larger of the two, each in
        # units of its own threshold.
        joined_in = np.maximum(inside["shipped"], colour_in / COLOURFUL)
        joined_out = np.maximum(out["shipped"], colour / COLOURFUL)
        lines.append(f"{name:32}{len(images):>5}" + "".join(f"{auroc(inside[k], out[k]):>11.3f}" for k in inside)
                     + f"{auroc(joined_in, joined_out):>16.3f}{np.mean(out['shipped'] > 1):>9.1%}"
                     f"{np.mean((out['shipped'] > 1) | (colour > COLOURFUL)):>9.1%}")
    lines += ["", f"{time.perf_counter() - t0:.0f} s in all; torch {torch.__version__}, {torch.get_num_threads()} threads"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(f"$ python -m benchmarks.ood --checkpoint {args.checkpoint} --data {args.data}\n\n{text}\n")


if __name__ == "__main__":
    main()
