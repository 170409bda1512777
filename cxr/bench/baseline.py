"""The baseline the benchmark measures against: the recipe exactly as the course writes it.

A class-folder Dataset that opens, converts and resizes every PNG each time it is used, Resize 224, a random
horizontal flip, ToTensor, Normalize, ResNet18, Adam at 3e-5, batch 6, a single-process DataLoader, and 90
validation images scored every 20 steps. It re-declares its transforms on purpose: it is the code being compared
against, so it must not borrow cxr's cache or batched augmentation. It is scored on the same split as the presets.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from PIL import Image

from cxr.data.index import index_dataset, split_dataset
from cxr.bench.measure import peak_memory_mb
from cxr.train.model import build_model
from cxr.data.transforms import IMAGENET_MEAN, IMAGENET_STD


class _RecipeFolder(torch.utils.data.Dataset):
    """The course's Dataset: open the file, convert to RGB, transform, every single time."""

    def __init__(self, files, labels, transform):
        self.files, self.labels, self.transform = files, labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        return self.transform(Image.open(self.files[i]).convert("RGB")), self.labels[i]


def run_plain_recipe(data: str, images: int, weights: str, seed: int, device: torch.device,
                     budget_s: float = 0.0) -> dict:
    """The plain recipe as the course writes it, for `images` training images (or until `budget_s` seconds have
    passed, or validation accuracy reaches 95 %, when a budget is given); scored on our test split. `curve` holds
    (seconds since the start, validation accuracy) at every evaluation."""
    start = time.perf_counter()
    import torchvision.transforms as T

    index = index_dataset(data)
    split = split_dataset(index, seed=seed)
    # The baseline re-declares its transforms on purpose: it is the code we compare against.
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = T.Compose([T.Resize((224, 224)), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    test_tf = T.Compose([T.Resize((224, 224)), T.ToTensor(), norm])

    def folder(ids, tf):
        return _RecipeFolder([index.files[i] for i in ids], [index.labels[i] for i in ids], tf)

    torch.manual_seed(seed)
    loader = torch.utils.data.DataLoader(folder(split.train, train_tf), batch_size=6, shuffle=True)
    val_loader = torch.utils.data.DataLoader(folder(split.val, test_tf), batch_size=6)
    test_loader = torch.utils.data.DataLoader(folder(split.test, test_tf), batch_size=6)
    model, _ = build_model(3, weights)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-5)

    def accuracy(dl) -> float:
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in dl:
                correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
                total += len(y)
        model.train()
        return correct / total

    seen = step = 0
    t_data = t_eval = 0.0
    marks: list[tuple[float, int]] = []
    curve: list[tuple[float, float]] = []
    model.train()
    done = False
    while seen < images and not done:
        it = iter(loader)
        while seen < images and not done:
            t = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            t_data += time.perf_counter() - t
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen, step = seen + len(y), step + 1
            marks.append((time.perf_counter(), seen))
            if step % 20 == 0:
                t = time.perf_counter()
                val = accuracy(val_loader)
                t_eval += time.perf_counter() - t
                curve.append((time.perf_counter() - start, val))
                done = bool(budget_s) and (val >= 0.95 or time.perf_counter() - start >= budget_s)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = time.perf_counter() - start
    test = accuracy(test_loader)
    return {"images": seen, "steps": step, "seconds": total, "seconds_eval": t_eval, "seconds_data": t_data,
            "marks": marks, "curve": curve, "seconds_to_end": time.perf_counter() - start,
            "train_images_per_sec": seen / (total - t_eval), "test_accuracy": test,
            "image_size": 224, "freeze": "none", "bf16": False,
            "peak_memory_mb": peak_memory_mb(device)}
