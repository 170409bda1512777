"""Training: the config, the typed events, and `fit`, a generator that trains and reports as it goes.

The loop is the recipe: shuffle the training split, augment each batch, take an Adam step on the cross-entropy, and
every `eval_every` steps measure loss and accuracy on a small fixed validation set; stop once validation accuracy
reaches the target. Every consumer (the CLI's progress bar, `--json` lines, the app's live curves) reads the same
stream of events. Stopping is part of the stream: set the `stop` flag (checked before every step) or stop pulling;
either way the best checkpoint so far is on disk. At the end the best weights are scored once on the held-out test
set, which training never looked at.

Live evaluation is on the validation split (`val_per_class` images per class, 90 by default, like the recipe's
evaluation set) so it stays cheap even on the 21,000-image database; the final test evaluation covers the whole
test split.
"""

from __future__ import annotations

import copy
import math
import resource
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint, save_checkpoint
from .data import DEFAULT_CLASSES, ImageCache, index_dataset, iterate_batches, parse_classes, split_dataset
from .evaluate import classification_report, evaluate
from .events import Done, Evaluated, Event, Note, Started, Step, StopFlag
from .model import FREEZE_LEVELS, build_model, count_parameters, freeze_layers, set_train_mode
from .transforms import AugmentConfig, to_model_input


@dataclass
class TrainConfig:
    data: str = "data/COVID-19_Radiography_Dataset"
    classes: tuple[str, ...] = DEFAULT_CLASSES
    weights: str = "auto"  # ImageNet when available: a few hundred X-rays are too few to learn vision from scratch
    epochs: int = 10  # an upper bound; the recipe stops as soon as the target is reached
    max_steps: int = 0  # 0: no cap beyond `epochs`
    batch_size: int = 6  # the recipe's batch size
    lr: float = 3e-5  # the recipe's Adam learning rate: small, since pretrained weights need only nudging
    image_size: int = 224  # ResNet18's native resolution
    eval_every: int = 20  # steps between validation checks (the recipe's interval)
    target_accuracy: float = 0.95  # stop once validation accuracy reaches this
    test_per_class: int = 30  # held-out test images per class (the recipe's test set)
    test_fraction: float | None = None  # or a fraction of each class, for the full database
    val_per_class: int = 30  # validation images per class, scored every `eval_every` steps
    seed: int = 0  # fixes the split, the head's initialisation, shuffling and augmentation
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    freeze: str = "none"  # freeze the stem and stages up to this (only with pretrained weights)
    channels_last: bool = False  # memory layout; faster on GPUs with AMP, not on this CPU at 224
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    workers: int = 0  # processes decoding images ahead of training; 0 decodes in the loop (right for 2 CPUs)
    device: str = "auto"  # "auto": CUDA when present
    out: str = ""  # best checkpoint path; "" -> checkpoints/resnet18-<time>.pt ("-last" beside it)
    resume: str = ""  # a checkpoint to continue from
    save_last_every_s: float = 60.0  # how often the -last checkpoint (with optimiser state) is refreshed

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig(**d["augment"])
        if "classes" in d:
            d["classes"] = tuple(d["classes"])
        return cls(**d)

    def validate(self) -> None:
        checks = [
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.lr > 0, f"learning rate must be positive, got {self.lr}"),
            (32 <= self.image_size <= 1024, f"image size must be 32..1024, got {self.image_size}"),
            (self.eval_every >= 1, f"eval every must be at least 1 step, got {self.eval_every}"),
            (0 < self.target_accuracy <= 1, f"target accuracy must be in (0, 1], got {self.target_accuracy}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.max_steps >= 0, f"max steps must be 0 (no cap) or more, got {self.max_steps}"),
            (self.freeze in FREEZE_LEVELS, f"freeze must be one of {', '.join(FREEZE_LEVELS)}, got {self.freeze!r}"),
            (self.workers >= 0, f"workers must be 0 or more, got {self.workers}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        parse_classes(self.classes)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for, but no CUDA GPU is available")
    return torch.device(name)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _checkpoint_paths(cfg: TrainConfig) -> tuple[Path, Path]:
    best = Path(cfg.out) if cfg.out else Path("checkpoints") / f"resnet18-{time.strftime('%Y%m%d-%H%M%S')}.pt"
    return best, best.with_name(best.stem + "-last.pt")


def train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
    amp_dtype: torch.dtype | None = None,
) -> tuple[float, float]:
    """One optimisation step on a batch; returns (loss, number of correct predictions)."""
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    # The three lines every PyTorch loop has: clear old gradients, backpropagate, update the weights.
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    # One read-back per step (it also waits for the GPU, so the caller's timings are true).
    loss_value, correct = torch.stack([loss.detach(), (logits.argmax(1) == y).sum().float()]).tolist()
    return loss_value, correct


def _shuffled_batches(ids: tuple[int, ...], batch_size: int, gen: torch.Generator) -> Iterator[list[int]]:
    """Batches of training ids, epoch after epoch, each epoch in a new random order."""
    while True:
        perm = torch.randperm(len(ids), generator=gen).tolist()
        for b in range(0, len(perm), batch_size):
            yield [ids[i] for i in perm[b : b + batch_size]]


def fit(cfg: TrainConfig, stop: StopFlag | None = None) -> Iterator[Event]:
    """Train as `cfg` says, yielding Started, Step, Evaluated, Note and finally Done events."""
    cfg.validate()
    device = resolve_device(cfg.device)
    index = index_dataset(cfg.data, cfg.classes)
    split = split_dataset(index, cfg.test_per_class, cfg.test_fraction, cfg.val_per_class, cfg.seed)
    resume = load_checkpoint(cfg.resume) if cfg.resume else None
    if resume is not None and resume.classes != index.classes:
        raise ValueError(f"cannot resume: the checkpoint's classes {resume.classes} differ from {index.classes}")

    torch.manual_seed(cfg.seed)  # the new head's initialisation
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, source = build_model(len(index.classes), "none" if resume else cfg.weights)
    start_step = 0
    if resume is not None:
        model.load_state_dict(resume.model.state_dict())
        start_step, source = resume.step, f"resumed from {Path(cfg.resume).name} at step {resume.step}"
    pretrained = resume is not None or not source.startswith("random")
    notes = [str(w.message) for w in caught] + list(split.notes)
    if cfg.freeze != "none":
        if pretrained:
            freeze_layers(model, cfg.freeze)
        else:
            notes.append(f"freeze={cfg.freeze} ignored: freezing random layers would keep them random")
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    amp_dtype = torch.bfloat16 if (cfg.amp and device.type == "cuda") else None
    # Adam on the trainable parameters only: frozen layers need no optimiser state.
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    if resume is not None and resume.optimizer:
        optimizer.load_state_dict(resume.optimizer)

    labels = index.labels
    steps_per_epoch = math.ceil(len(split.train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    best_path, last_path = _checkpoint_paths(cfg)
    yield Started(
        classes=list(index.classes), counts=index.counts(), split=split.sizes(), layout=index.layout,
        synthetic=index.synthetic, device=str(device), weights=source,
        trainable_params=count_parameters(model)[0], total_steps=total_steps, start_step=start_step,
    )
    for message in notes:
        yield Note(message)

    # On a GPU the decoded images live on the GPU itself: no host-to-device copy per step.
    cache = ImageCache(index.files, cfg.image_size, device=device if device.type == "cuda" else "cpu")
    label_table = torch.tensor(index.labels, device=device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
    if cfg.workers:
        cache.fill(split.train + split.val + split.test, cfg.workers)
    gen = torch.Generator().manual_seed(cfg.seed + start_step)
    config = asdict(cfg)
    meta = dict(classes=index.classes, image_size=cfg.image_size, config=config, synthetic=index.synthetic)
    eval_batch = 256 if device.type == "cuda" else 32  # inference activations grow with the batch

    def validate_now() -> Any:
        batches = iterate_batches(cache, split.val, labels, eval_batch)
        return evaluate(model, batches, device, amp_dtype, cfg.channels_last)

    step, reason = start_step, "epochs"
    best_acc, best_loss, best_state = -1.0, math.inf, None
    images_seen, t_train, t_data, t_eval, t_save, t_loop = 0, 0.0, 0.0, 0.0, 0.0, 0.0
    window_loss, window_correct, window_n, window_steps = 0.0, 0, 0, 0
    last_saved_at, reported_bad, empty_batches = time.perf_counter(), 0, 0
    t_start = time.perf_counter()
    try:
        set_train_mode(model)
        for ids in _shuffled_batches(split.train, cfg.batch_size, gen):
            if step >= total_steps:
                reason = "max_steps" if cfg.max_steps == total_steps else "epochs"
                break
            if stop is not None and stop.is_set():
                reason = "stopped"
                break
            t0 = time.perf_counter()
            images, ok = cache.get(ids)
            if not ok:
                empty_batches += 1
                if empty_batches > steps_per_epoch:
                    raise ValueError(f"none of the training images can be read ({cache.bad_report()})")
                continue
            y = label_table[ok]
            # Augment on the device, then normalise: the model sees a fresh variant of each image every epoch.
            x = to_model_input(images.to(device, non_blocking=True), cfg.augment, gen)
            x = x.contiguous(memory_format=memory_format)
            t1 = time.perf_counter()
            loss_value, correct = train_step(model, optimizer, x, y, amp_dtype)
            t_data += t1 - t0
            t_train += time.perf_counter() - t0
            step += 1
            images_seen += len(ok)
            window_loss, window_steps = window_loss + loss_value, window_steps + 1
            window_correct += int(correct)
            window_n += len(ok)
            speed = images_seen / t_train
            eta = (total_steps - step) * (time.perf_counter() - t_start) / (step - start_step)
            yield Step(step, step // steps_per_epoch, total_steps, loss_value, speed, eta)
            if step % cfg.eval_every and step != total_steps:
                continue

            t3 = time.perf_counter()
            val = validate_now()
            t_eval += time.perf_counter() - t3
            t3 = time.perf_counter()
            is_best = val.accuracy > best_acc or (val.accuracy == best_acc and val.loss < best_loss)
            metrics = {"val_accuracy": val.accuracy, "val_loss": val.loss, "step": step}
            if is_best:
                best_acc, best_loss = val.accuracy, val.loss
                best_state = copy.deepcopy(model.state_dict())
                save_checkpoint(best_path, model, metrics=metrics, step=step, **meta)
            if time.perf_counter() - last_saved_at > cfg.save_last_every_s:
                save_checkpoint(last_path, model, metrics=metrics, step=step, optimizer=optimizer, **meta)
                last_saved_at = time.perf_counter()
            set_train_mode(model)
            t_save += time.perf_counter() - t3
            yield Evaluated(
                step, step // steps_per_epoch, total_steps, window_loss / window_steps,
                window_correct / max(window_n, 1), val.loss, val.accuracy, speed, eta, is_best, str(best_path),
            )
            window_loss, window_correct, window_n, window_steps = 0.0, 0, 0, 0
            if len(cache.bad) > reported_bad:
                reported_bad = len(cache.bad)
                yield Note(cache.bad_report())
            if val.accuracy >= cfg.target_accuracy:
                reason = "target"
                break
    finally:
        # Whatever ended the loop (the stop flag, an error in a batch, a closed stream), keep the latest weights.
        t_loop = time.perf_counter() - t_start
        if step > start_step:
            save_checkpoint(last_path, model, metrics={"step": step}, step=step, optimizer=optimizer, **meta)

    if best_state is None:  # ended before any evaluation: score what we have so there is a best checkpoint
        val = validate_now()
        best_acc, best_state = val.accuracy, copy.deepcopy(model.state_dict())
    # The honest number: the best weights, once, on test images that played no part in training or stopping.
    model.load_state_dict(best_state)
    t_test = time.perf_counter()
    test = evaluate(model, iterate_batches(cache, split.test, labels, eval_batch), device, amp_dtype, cfg.channels_last)
    t_test = time.perf_counter() - t_test
    report = classification_report(test.y_true, test.y_pred, index.classes)
    metrics = {"val_accuracy": best_acc, "test_accuracy": test.accuracy, "test_loss": test.loss, "test": report}
    save_checkpoint(best_path, model, metrics=metrics, step=step, **meta)
    yield Done(
        steps=step, epochs=round(step / steps_per_epoch, 2), reason=reason,
        train_images_per_sec=images_seen / t_train if t_train else 0.0, best_val_accuracy=best_acc,
        test_accuracy=test.accuracy, test_loss=test.loss, test_report=report, checkpoint=str(best_path),
        last_checkpoint=str(last_path) if last_path.exists() else "", seconds=t_loop,
        seconds_data=t_data, seconds_eval=t_eval, seconds_checkpoint=t_save, seconds_test=t_test, peak_memory_mb=_peak_memory_mb(device),
        skipped_files=[Path(index.files[i]).name for i in cache.bad],
    )
