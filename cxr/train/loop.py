"""Training: `fit`, a generator that trains and reports as it goes (the events live in events.py).

The loop is the recipe: shuffle the training split, augment each batch, take an optimiser step on the
cross-entropy, and every `eval_every` steps measure loss and accuracy on a small fixed validation set; stop once
validation accuracy reaches the target (or the epochs, step cap or time budget run out). Every consumer (the CLI's
progress bar, `--json` lines, the app's live curves, the benchmark) reads the same stream of events. Stopping is
part of the stream: set the `stop` flag (checked before every step) or stop pulling. At the end the kept weights are
scored once on the held-out test set, which training never looked at.

The file reads top-down as the loop does: the learning-rate schedule, `train_step` and `train_one_step` (one
batch), `evaluate_and_save` (validate, record, save), `finish` (the test score), and `fit`, which only strings them
together. The fixed set-up is run.py's `Run`, what changes is state.py's `RunState`, and budget.py's `Budget`
alone decides progress, ETA, the stop and when to evaluate.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict
import math
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from cxr.bench.measure import peak_memory_mb
from cxr.data.index import relative_name
from cxr.data.lungs import hide_pixels
from cxr.data.transforms import to_model_input
from cxr.errors import UserError
from cxr.explain.maps import gradcam
from cxr.train.checkpoint import save_checkpoint
from cxr.train.config import TrainConfig
from cxr.train.evaluate import EvalResult, classification_report, evaluate
from cxr.train.fitted import fit_after_training
from cxr.train.events import Attention, Done, Evaluated, Event, Note, Started, Step, StopFlag
from cxr.train.model import count_parameters, set_train_mode
from cxr.train.run import Run, setup, start_state
from cxr.train.state import RunState, Window
from cxr.train.writer import snapshot

__all__ = ["TrainConfig", "fit", "setup", "train_step", "train_one_step", "evaluate_and_save", "finish", "learning_rate"]

ATTENTION_GRID = 16  # the attention strip keeps each Grad-CAM at 16 x 16: finer than the model's own grid, small


def learning_rate(cfg: TrainConfig, progress: float) -> float:
    """The learning rate at `progress` (0 at the start, 1 at the end of the run). One-cycle: a linear warm-up from
    a 25th of `lr`, then a cosine down to zero: large steps while the loss is far from a minimum, small at the end."""
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(max(progress, 0.0), 1.0)
    if progress < cfg.warmup:
        return cfg.lr * (0.04 + 0.96 * progress / cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (progress - cfg.warmup) / (1 - cfg.warmup)))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               amp_dtype: torch.dtype | None = None, label_smoothing: float = 0.0) -> tuple[float, float]:
    """One optimisation step on a batch; returns (loss, number of correct predictions)."""
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    # The three lines every PyTorch loop has: clear old gradients, backpropagate, update the weights.
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    # One read-back per step (it also waits for the GPU, so the caller's timings are true).
    loss_value, correct = torch.stack([loss.detach(), (logits.argmax(1) == y).sum().float()]).tolist()
    return loss_value, correct


def train_one_step(run: Run, state: RunState, ids: list[int]) -> Step | None:
    """Read, augment and learn from one batch: its Step event, or None if none of its files could be read."""
    t0 = time.perf_counter()
    images, ok = run.cache.get(ids)
    if not ok:
        state.unreadable_batches += 1
        if state.unreadable_batches > run.steps_per_epoch:  # more than an epoch's worth: nothing will train
            raise UserError(f"none of the training images can be read ({run.cache.bad_report()})")
        return None
    masks = run.cache.get_masks(ok).to(run.device) if run.hide.needs_masks else None
    # Augment on the device, then normalise: the model sees a fresh variant of each image every epoch (with the
    # hidden region, if any, blacked out after the augmentation moved it).
    x = to_model_input(images.to(run.device, non_blocking=True), run.cfg.augment, run.gen, hide=run.hide, masks=masks)
    x = x.contiguous(memory_format=run.memory_format)
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(run.cfg, state.budget.progress(state.step))
    t1 = time.perf_counter()
    loss, correct = train_step(run.model, run.optimizer, x, run.label_table[ok], run.amp_dtype, run.cfg.label_smoothing)
    state.timings.data += t1 - t0
    state.timings.train += time.perf_counter() - t0
    state.timings.images += len(ok)
    if not math.isfinite(loss):  # diverged: every later step would be NaN, and its weights are useless
        raise UserError(f"the loss became {loss} at step {state.step + 1}: lower the learning rate (it is {run.cfg.lr:g})")
    state.step += 1
    state.window.add(loss, correct, len(ok))
    return Step(step=state.step, epoch=state.step // run.steps_per_epoch, total_steps=run.total_steps, train_loss=loss,
                train_images_per_sec=state.timings.images_per_sec(), eta_s=state.budget.eta(state.step))


def score(run: Run, ids: "tuple[int, ...] | list[int]") -> EvalResult:
    """Loss and accuracy of the model as it is on the images `ids` (validation, or the test at the end)."""
    return evaluate(run.model, run.batches(ids), run.device, run.amp_dtype, run.cfg.channels_last, tta_flip=run.cfg.tta_flip)


def validate(run: Run, state: RunState) -> EvalResult:
    """Score the validation set, and tell the budget how long that took (the final test takes about as long)."""
    t0 = time.perf_counter()
    val = score(run, run.split.val)
    seconds = time.perf_counter() - t0
    state.timings.eval += seconds
    state.budget.validated(seconds)
    return val


def explain_attention(run: Run, state: RunState) -> Attention:
    """Grad-CAM of the fixed attention images with the current weights: the strip that shows attention forming."""
    t0 = time.perf_counter()
    images, ok = run.cache.get(run.attention_ids)
    images = hide_pixels(images, run.hide, run.cache.get_masks(ok) if run.hide.needs_masks else None)
    x = to_model_input(images.to(run.device)).contiguous(memory_format=run.memory_format)
    with _cudnn_benchmark(False):  # three images per evaluation: a kernel search for them costs more than it saves
        maps, logits = gradcam(run.model, x)
    small = F.adaptive_avg_pool2d(torch.from_numpy(maps)[:, None], ATTENTION_GRID)[:, 0]
    small = small / small.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    classes = run.index.classes
    state.timings.attention += time.perf_counter() - t0
    return Attention(
        step=state.step, files=[relative_name(run.index, i) for i in ok],
        classes=[classes[run.index.labels[i]] for i in ok],
        predicted=[classes[k] for k in logits.argmax(1).tolist()], maps=small.round(decimals=3).tolist(),
    )


def record(state: RunState, val: EvalResult, attention: Attention | None) -> tuple[float, float]:
    """Add the evaluation to the run's curves (and its attention strip), and start the next training window.
    Returns the training loss and accuracy since the previous evaluation."""
    train_loss, train_accuracy = state.window.point()
    state.window = Window()
    state.history.append({"step": state.step, "train_loss": train_loss, "train_accuracy": train_accuracy,
                          "val_loss": val.loss, "val_accuracy": val.accuracy})
    if attention is not None:
        for key in ("files", "classes"):
            state.attention.setdefault(key, getattr(attention, key))
        state.attention.setdefault("steps", []).append(attention.step)
        state.attention.setdefault("maps", []).append(attention.maps)
    return train_loss, train_accuracy


def save(run: Run, state: RunState, val: EvalResult) -> bool:
    """Keep these weights if the keep policy says so, and refresh the resumable -last file now and then; the
    writer thread writes both while training goes on. Returns whether these weights are now the kept ones."""
    t0 = time.perf_counter()
    kept = run.keep.keeps(val, state.best)
    if kept:
        state.best.take(val, run.model, state.step)  # a copy of the weights: the loop goes on while the disk catches up
    save_last = time.perf_counter() - state.last_saved > run.cfg.save_last_every_s
    if kept or save_last:
        # Copies of the growing lists: the writer thread pickles these while training appends to the originals.
        metrics = {"val_accuracy": val.accuracy, "val_loss": val.loss, "step": state.step, "history": list(state.history),
                   "attention": {k: list(v) for k, v in state.attention.items()},
                   "elapsed_s": state.budget.run_seconds()}
    if kept:
        run.writer.save(run.best_path, state.best.state, metrics=metrics, step=state.step, **run.meta)
    if save_last:
        weights, optimizer = snapshot(run.model, run.optimizer)
        run.writer.save(run.last_path, weights, metrics=metrics, step=state.step, optimizer=optimizer, **run.meta)
        state.last_saved = time.perf_counter()
    state.timings.save += time.perf_counter() - t0
    return kept


def evaluate_and_save(run: Run, state: RunState) -> Iterator[Event]:
    """One evaluation: validate, record the curves' next point, save what is kept; its Evaluated (and Attention)
    events, then the budget's cadence counts from it."""
    began = time.perf_counter()
    val = validate(run, state)
    attention = explain_attention(run, state) if run.attention_ids else None
    train_loss, train_accuracy = record(state, val, attention)
    kept = save(run, state, val)
    set_train_mode(run.model)
    yield Evaluated(
        step=state.step, epoch=state.step // run.steps_per_epoch, total_steps=run.total_steps, train_loss=train_loss,
        train_accuracy=train_accuracy, val_loss=val.loss, val_accuracy=val.accuracy,
        train_images_per_sec=state.timings.images_per_sec(), eta_s=state.budget.eta(state.step), is_best=kept,
        checkpoint=str(run.best_path),
    )
    if attention is not None:
        yield attention
    if len(run.cache.bad) > state.reported_bad:
        state.reported_bad = len(run.cache.bad)
        yield Note(message=run.cache.bad_report())
    state.budget.evaluated(state.step, began)


def finish(run: Run, state: RunState, reason: str, loop_seconds: float) -> Done:
    """The honest number: the kept weights, once, on test images that played no part in training or stopping."""
    best, timings = state.best, state.timings
    test_accuracy, test_loss, report, t_test, calibration = None, None, {}, 0.0, {}
    if best.state is not None:
        run.model.load_state_dict(best.state)
        # Calibration and the out-of-distribution check, fitted once on the kept weights (cxr.train.fitted).
        calibration, ood = fit_after_training(run, best.val if best.val is not None else score(run, run.split.val))
        t0 = time.perf_counter()
        test = score(run, run.split.test)
        t_test = time.perf_counter() - t0
        report = classification_report(test.y_true, test.y_pred, run.index.classes)
        test_accuracy, test_loss = test.accuracy, test.loss
        metrics = {"val_accuracy": best.accuracy, "val_loss": best.loss, "best_step": best.step, "reason": reason,
                   "test_accuracy": test.accuracy, "test_loss": test.loss, "test": report, "seconds": loop_seconds,
                   "weights": run.weights, "pretrained": run.pretrained, "device": str(run.device),
                   "precision": run.precision, "history": state.history, "attention": state.attention}
        save_checkpoint(run.best_path, run.model, metrics=metrics, step=best.step, calibration=calibration, ood=ood,
                        **run.meta)
    return Done(
        steps=state.step, epochs=round(state.step / run.steps_per_epoch, 2), reason=reason,
        train_images_per_sec=timings.images_per_sec(), best_val_accuracy=max(best.accuracy, 0.0),
        best_step=best.step, test_accuracy=test_accuracy, test_loss=test_loss, test_report=report,
        checkpoint=str(run.best_path) if best.state is not None else "", calibration=calibration,
        last_checkpoint=str(run.last_path) if run.last_path.exists() else "", seconds=loop_seconds,
        seconds_data=timings.data, seconds_eval=timings.eval, seconds_attention=timings.attention,
        seconds_checkpoint=timings.save, seconds_writing=run.writer.seconds, seconds_test=t_test,
        peak_memory_mb=peak_memory_mb(run.device), skipped_files=[Path(run.index.files[i]).name for i in run.cache.bad],
    )


def close(run: Run, state: RunState, ended: bool) -> None:
    """Stop the decoding workers and let the writer finish. A run killed or failed mid-way keeps its latest weights
    (if they are numbers) for --resume; one that ended normally needs no -last file: its kept model is the result."""
    try:
        run.cache.stop_filling()
    finally:
        run.writer.close()  # what is queued reaches the disk before the -last file is rewritten or removed
    # A write that failed in the background fails the run (in `fit`), so it keeps its -last file like one that
    # failed in the loop.
    ended = ended and run.writer.error is None
    if not ended and state.step > run.start_step and all(torch.isfinite(p).all() for p in run.model.parameters()):
        save_checkpoint(run.last_path, run.model, step=state.step, optimizer=run.optimizer, **run.meta,
                        metrics={"step": state.step, "history": state.history, "elapsed_s": state.budget.run_seconds()})
    elif ended and state.best.state is not None:  # the run's model is saved: the resume point is done with
        run.last_path.unlink(missing_ok=True)


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """cuDNN's kernel search on (fixed input sizes: it picks the fastest kernels) or off, and the caller's setting
    back afterwards."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def fit(cfg: TrainConfig, stop: StopFlag | None = None) -> Iterator[Event]:
    """Train as `cfg` says, yielding Started, Step, Evaluated, Attention, Note and finally Done events."""
    began = time.perf_counter()  # the time budget counts the set-up too
    run = setup(cfg)
    yield Started(
        classes=list(run.index.classes), counts=run.index.counts(), split=run.split.sizes(), layout=run.index.layout,
        synthetic=run.index.synthetic, device=str(run.device), weights=run.weights, pretrained=run.pretrained,
        trainable_params=count_parameters(run.model)[0], total_steps=run.total_steps, start_step=run.start_step,
        checkpoint=str(run.best_path), image_size=run.cfg.image_size, plan=run.plan.reason if run.plan else "",
        settings=asdict(run.cfg),
    )
    for message in run.notes:
        yield Note(message=message)
    if cfg.workers:  # decode on every worker in the order the images are needed, while training starts
        run.cache.start_filling(run.decode_order(), cfg.workers)
    state, reason, ended = start_state(run, began), "", False
    with _cudnn_benchmark(run.device.type == "cuda" or torch.backends.cudnn.benchmark):
        try:
            set_train_mode(run.model)
            for ids in run.training_batches():
                reason = "stopped" if stop is not None and stop.is_set() else state.budget.stop_reason(state.step)
                if reason:
                    break
                step = train_one_step(run, state, ids)
                if step is None:
                    continue
                yield step
                if state.budget.evaluation_due(state.step):
                    yield from evaluate_and_save(run, state)
                    if cfg.target_accuracy and state.history[-1]["val_accuracy"] >= cfg.target_accuracy:
                        reason = "target"
                        break
            if reason == "time_budget" and not state.evaluated_last():
                # The budget ran out between evaluations: score the weights at the end (a schedule's best point).
                yield from evaluate_and_save(run, state)
            ended = True
        finally:
            close(run, state, ended)
        loop_seconds = state.budget.elapsed()
        run.writer.flush()  # a checkpoint that could not be written fails the run here, as it would have in the loop
        yield finish(run, state, reason, loop_seconds)
