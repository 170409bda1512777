"""Training: the config and `fit`, a generator that trains and reports as it goes (the events live in events.py).

The loop is the recipe: shuffle the training split, augment each batch, take an optimiser step on the
cross-entropy, and every `eval_every` steps measure loss and accuracy on a small fixed validation set; stop once
validation accuracy reaches the target (or the epochs, step cap or time budget run out). Every consumer (the CLI's
progress bar, `--json` lines, the app's live curves, the benchmark) reads the same stream of events. Stopping is
part of the stream: set the `stop` flag (checked before every step) or stop pulling. At the end the best weights are
scored once on the held-out test set, which training never looked at.

The file reads top-down as the loop does: the learning-rate schedule, `train_on_batch` (one step),
`evaluate_and_save` (validation, the best-so-far, the attention strip, checkpoints), `stop_reason`, `finish` (the
test score), and `fit`, which only strings them together. `setup` and the loop's small state objects live in run.py.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F

from cxr.train.checkpoint import save_checkpoint
from cxr.train.writer import snapshot
from cxr.train.config import TrainConfig
from cxr.data.index import relative_name
from cxr.data.cache import iterate_batches
from cxr.errors import UserError
from cxr.train.evaluate import EvalResult, classification_report, evaluate
from cxr.train.events import Attention, Done, Evaluated, Event, Note, Started, Step, StopFlag
from cxr.explain.maps import gradcam
from cxr.data.lungs import hide_pixels
from cxr.bench.measure import peak_memory_mb
from cxr.train.model import count_parameters, set_train_mode
from cxr.train.run import Best, Clock, Run, Window, best_so_far, setup
from cxr.data.transforms import to_model_input

__all__ = ["TrainConfig", "fit", "setup", "train_step", "train_on_batch", "evaluate_and_save", "finish", "learning_rate"]

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


def training_seconds(run: Run, clock: Clock) -> float:
    """Of a time budget, the seconds training may use: the rest is kept for the final validation and the test
    (about as long as a validation each, measured at the latest one)."""
    reserve = 2.5 * clock.last_eval * max(len(run.split.test) / max(len(run.split.val), 1), 1)
    return run.cfg.time_budget_s - reserve


def run_seconds(run: Run, clock: Clock) -> float:
    """Seconds the run has trained, a resumed run's earlier time included (what its budget counts)."""
    return run.prior_seconds + clock.elapsed()


def progress_of(run: Run, step: int, clock: Clock) -> float:
    """How far through the run we are: by steps, or by time when a budget is set (whichever is further). Both
    count from the run's start, so a resumed run picks up its schedule where it stopped."""
    by_steps = step / max(run.total_steps, 1)
    by_time = run_seconds(run, clock) / max(training_seconds(run, clock), 1e-9) if run.cfg.time_budget_s else 0.0
    return max(by_steps, by_time)


def eta_seconds(run: Run, step: int, clock: Clock) -> float:
    """Time left: the steps to go at the pace so far, or what is left of the budget, whichever is shorter."""
    eta = (run.total_steps - step) * clock.elapsed() / max(step - run.start_step, 1)
    if run.cfg.time_budget_s:
        eta = min(eta, max(run.cfg.time_budget_s - run_seconds(run, clock), 0.0))
    return eta


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


def train_on_batch(run: Run, ids: list[int], step: int, clock: Clock) -> tuple[float, float, int] | None:
    """Read, augment and learn from one batch: (loss, correct, images), or None if none of its files could be read."""
    t0 = time.perf_counter()
    images, ok = run.cache.get(ids)
    if not ok:
        return None
    y = run.label_table[ok]
    masks = run.cache.get_masks(ok).to(run.device) if run.hide.needs_masks else None
    # Augment on the device, then normalise: the model sees a fresh variant of each image every epoch (with the
    # hidden region, if any, blacked out after the augmentation moved it).
    x = to_model_input(images.to(run.device, non_blocking=True), run.cfg.augment, run.gen, hide=run.hide, masks=masks)
    x = x.contiguous(memory_format=run.memory_format)
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(run.cfg, progress_of(run, step, clock))
    t1 = time.perf_counter()
    loss, correct = train_step(run.model, run.optimizer, x, y, run.amp_dtype, run.cfg.label_smoothing)
    clock.data += t1 - t0
    clock.train += time.perf_counter() - t0
    clock.images += len(ok)
    if not math.isfinite(loss):  # diverged: every later step would be NaN, and its weights are useless
        raise UserError(f"the loss became {loss} at step {step + 1}: lower the learning rate (it is {run.cfg.lr:g})")
    return loss, correct, len(ok)


def validate_now(run: Run, ids: "tuple[int, ...] | list[int]") -> EvalResult:
    batches = iterate_batches(run.cache, ids, run.index.labels, run.eval_batch, hide=run.hide)
    return evaluate(run.model, batches, run.device, run.amp_dtype, run.cfg.channels_last, tta_flip=run.cfg.tta_flip)


def explain_attention(run: Run, step: int) -> Attention:
    """Grad-CAM of the fixed attention images with the current weights: the strip that shows attention forming."""
    images, ok = run.cache.get(run.attention_ids)
    images = hide_pixels(images, run.hide, run.cache.get_masks(ok) if run.hide.needs_masks else None)
    x = to_model_input(images.to(run.device)).contiguous(memory_format=run.memory_format)
    with _cudnn_benchmark(False):  # three images per evaluation: a kernel search for them costs more than it saves
        maps, logits = gradcam(run.model, x)
    small = F.adaptive_avg_pool2d(torch.from_numpy(maps)[:, None], ATTENTION_GRID)[:, 0]
    small = small / small.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    classes = run.index.classes
    return Attention(
        step=step, files=[relative_name(run.index, i) for i in ok], classes=[classes[run.index.labels[i]] for i in ok],
        predicted=[classes[k] for k in logits.argmax(1).tolist()], maps=small.round(decimals=3).tolist(),
    )


def evaluate_and_save(run: Run, step: int, window: Window, best: Best, clock: Clock, last_saved: list[float]) -> list[Event]:
    """Validate, keep the best weights on disk (with keep="last": the latest), refresh the resumable -last file
    now and then, and explain the attention images: the events of one evaluation."""
    t0 = time.perf_counter()
    val = validate_now(run, run.split.val)
    clock.last_eval = time.perf_counter() - t0
    clock.eval += clock.last_eval
    train_loss, train_accuracy = window.point()
    run.history.append({"step": step, "train_loss": train_loss, "train_accuracy": train_accuracy,
                        "val_loss": val.loss, "val_accuracy": val.accuracy})
    events: list[Event] = []
    if run.attention_ids:
        t0 = time.perf_counter()
        att = explain_attention(run, step)
        for key in ("files", "classes"):
            run.attention.setdefault(key, getattr(att, key))
        run.attention.setdefault("steps", []).append(step)
        run.attention.setdefault("maps", []).append(att.maps)
        clock.attention += time.perf_counter() - t0
        events.append(att)
    t0 = time.perf_counter()
    if run.cfg.keep == "last":
        best.accuracy = -1.0  # the latest weights are the ones to keep: an annealed schedule ends at its best
    is_best = best.update(val, run.model, step)
    save_last = time.perf_counter() - last_saved[0] > run.cfg.save_last_every_s
    if is_best or save_last:
        # Copies of the growing lists: the writer thread pickles these while training appends to the originals.
        metrics = {"val_accuracy": val.accuracy, "val_loss": val.loss, "step": step, "history": list(run.history),
                   "attention": {k: list(v) for k, v in run.attention.items()}, "elapsed_s": run_seconds(run, clock)}
    if is_best:  # best.state is already a copy of the weights: the loop goes on while the disk catches up
        run.writer.save(run.best_path, best.state, metrics=metrics, step=step, **run.meta)
    if save_last:
        state, optimizer = snapshot(run.model, run.optimizer)
        run.writer.save(run.last_path, state, metrics=metrics, step=step, optimizer=optimizer, **run.meta)
        last_saved[0] = time.perf_counter()
    set_train_mode(run.model)
    clock.save += time.perf_counter() - t0
    eta = eta_seconds(run, step, clock)
    events.insert(0, Evaluated(
        step=step, epoch=step // run.steps_per_epoch, total_steps=run.total_steps, train_loss=train_loss,
        train_accuracy=train_accuracy, val_loss=val.loss, val_accuracy=val.accuracy,
        train_images_per_sec=clock.images / max(clock.train, 1e-9), eta_s=eta, is_best=is_best, checkpoint=str(run.best_path),
    ))
    return events


def stop_reason(run: Run, step: int, stop: StopFlag | None, clock: Clock) -> str:
    """Why the run should end before taking step `step + 1`, or "" to go on."""
    if stop is not None and stop.is_set():
        return "stopped"
    if step >= run.total_steps:
        return "max_steps" if run.cfg.max_steps == run.total_steps else "epochs"
    if run.cfg.time_budget_s and run_seconds(run, clock) >= training_seconds(run, clock):
        return "time_budget"
    return ""


def finish(run: Run, best: Best, step: int, reason: str, clock: Clock, loop_seconds: float) -> Done:
    """The honest number: the best weights, once, on test images that played no part in training or stopping."""
    test_accuracy, test_loss, report, t_test = None, None, {}, 0.0
    if best.state is not None:
        run.model.load_state_dict(best.state)
        t0 = time.perf_counter()
        test = validate_now(run, run.split.test)
        t_test = time.perf_counter() - t0
        report = classification_report(test.y_true, test.y_pred, run.index.classes)
        test_accuracy, test_loss = test.accuracy, test.loss
        metrics = {"val_accuracy": best.accuracy, "val_loss": best.loss, "best_step": best.step,
                   "test_accuracy": test.accuracy, "test_loss": test.loss, "test": report, "reason": reason,
                   "weights": run.weights, "pretrained": run.pretrained, "device": str(run.device),
                   "precision": run.precision,
                   "history": run.history, "attention": run.attention, "seconds": loop_seconds}
        save_checkpoint(run.best_path, run.model, metrics=metrics, step=best.step, **run.meta)
    return Done(
        steps=step, epochs=round(step / run.steps_per_epoch, 2), reason=reason,
        train_images_per_sec=clock.images / clock.train if clock.train else 0.0, best_val_accuracy=max(best.accuracy, 0.0),
        best_step=best.step, test_accuracy=test_accuracy, test_loss=test_loss, test_report=report,
        checkpoint=str(run.best_path) if best.state is not None else "",
        last_checkpoint=str(run.last_path) if run.last_path.exists() else "", seconds=loop_seconds,
        seconds_data=clock.data, seconds_eval=clock.eval, seconds_attention=clock.attention, seconds_checkpoint=clock.save,
        seconds_writing=run.writer.seconds, seconds_test=t_test, peak_memory_mb=peak_memory_mb(run.device),
        skipped_files=[Path(run.index.files[i]).name for i in run.cache.bad],
    )


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


# A run under a time budget evaluates about this many times at least, whatever `eval_every` says (evaluation_due).
MIN_EVALUATIONS = 8


def _shuffled_batches(ids: tuple[int, ...], batch_size: int, gen: torch.Generator) -> Iterator[list[int]]:
    """Batches of training ids, epoch after epoch, each epoch in a new random order."""
    while True:
        perm = torch.randperm(len(ids), generator=gen).tolist()
        for b in range(0, len(perm), batch_size):
            yield [ids[i] for i in perm[b : b + batch_size]]


def decode_order(run: Run) -> list[int]:
    """The order images are first needed in: validation (the first evaluation, the attention strip), the first
    epoch's training batches exactly as `_shuffled_batches` will draw them, then the test set."""
    gen = torch.Generator()
    gen.set_state(run.gen.get_state())  # a copy: the training order itself is left untouched
    first_epoch = [run.split.train[i] for i in torch.randperm(len(run.split.train), generator=gen).tolist()]
    return list(run.split.val) + first_epoch + list(run.split.test)


def evaluation_due(cfg: TrainConfig, step: int, total_steps: int, window: Window) -> bool:
    """Every `eval_every` steps and at the last step. Under a time budget, counted from the previous evaluation:
    `eval_every` steps since, or `budget / MIN_EVALUATIONS` seconds since it began, whichever comes first, so that a
    short run (a 40 s demonstration at the Fast preset's 40 steps) still draws a curve and saves a model before its
    end, not one point at the last step. The time rule also waits for at least as much training as the previous
    evaluation took, so that on a slow or busy machine evaluating never takes over the run (one every step)."""
    if step == total_steps:
        return True
    if not cfg.time_budget_s:
        return step % cfg.eval_every == 0
    since = window.seconds()
    return window.steps >= cfg.eval_every or (since >= cfg.time_budget_s / MIN_EVALUATIONS and
                                              since >= 2 * window.paused)


def seconds_to_evaluation(cfg: TrainConfig, steps_since: int, seconds_since: float, steps_per_second: float) -> float:
    """About how long until `evaluation_due` says yes, `steps_since` steps and `seconds_since` seconds after the
    previous evaluation (or the start) at this pace: how long until a run's first model, for a page that waits."""
    by_steps = (cfg.eval_every - steps_since) / steps_per_second if steps_per_second > 0 else math.inf
    if not cfg.time_budget_s:
        return by_steps
    return max(0.0, min(by_steps, cfg.time_budget_s / MIN_EVALUATIONS - seconds_since))


def fit(cfg: TrainConfig, stop: StopFlag | None = None) -> Iterator[Event]:
    """Train as `cfg` says, yielding Started, Step, Evaluated, Attention, Note and finally Done events."""
    clock = Clock()
    run = setup(cfg)
    yield Started(
        classes=list(run.index.classes), counts=run.index.counts(), split=run.split.sizes(), layout=run.index.layout,
        synthetic=run.index.synthetic, device=str(run.device), weights=run.weights, pretrained=run.pretrained,
        trainable_params=count_parameters(run.model)[0], total_steps=run.total_steps, start_step=run.start_step,
        checkpoint=str(run.best_path),
    )
    for message in run.notes:
        yield Note(message=message)
    if cfg.workers:  # decode on every worker in the order the images are needed, while training starts
        run.cache.start_filling(decode_order(run), cfg.workers)
    step, reason, best, window, last_saved, reported_bad, ended = run.start_step, "", best_so_far(run), Window(), [time.perf_counter()], 0, False
    with _cudnn_benchmark(run.device.type == "cuda" or torch.backends.cudnn.benchmark):
        try:
            set_train_mode(run.model)
            for n_batch, ids in enumerate(_shuffled_batches(run.split.train, cfg.batch_size, run.gen)):
                reason = stop_reason(run, step, stop, clock)
                if reason:
                    break
                result = train_on_batch(run, ids, step, clock)
                if result is None:
                    if n_batch - (step - run.start_step) > run.steps_per_epoch:
                        raise UserError(f"none of the training images can be read ({run.cache.bad_report()})")
                    continue
                step += 1
                window.add(*result)
                eta = eta_seconds(run, step, clock)
                yield Step(step=step, epoch=step // run.steps_per_epoch, total_steps=run.total_steps, train_loss=result[0],
                           train_images_per_sec=clock.images / clock.train, eta_s=eta)
                if not evaluation_due(cfg, step, run.total_steps, window):
                    continue
                began = time.perf_counter()
                yield from evaluate_and_save(run, step, window, best, clock, last_saved)
                # The time rule counts from when this evaluation began, and knows how long it took.
                window = Window(started=began, paused=time.perf_counter() - began)
                if len(run.cache.bad) > reported_bad:
                    reported_bad = len(run.cache.bad)
                    yield Note(message=run.cache.bad_report())
                if cfg.target_accuracy and run.history[-1]["val_accuracy"] >= cfg.target_accuracy:
                    reason = "target"
                    break
            if reason == "time_budget" and (not run.history or run.history[-1]["step"] != step):
                # The budget ran out between evaluations: score the weights at the end (a schedule's best point).
                yield from evaluate_and_save(run, step, window, best, clock, last_saved)
            ended = True
        finally:
            try:
                run.cache.stop_filling()
            finally:
                run.writer.close()  # what is queued reaches the disk before the -last file is rewritten or removed
            # A write that failed in the background fails the run (below), so it keeps its -last file like one that
            # failed in the loop.
            ended = ended and run.writer.error is None
            # Killed or failed mid-run: keep the latest weights (if they are numbers) for --resume. A run that ended
            # normally needs no -last file: its best checkpoint is what a person keeps.
            if not ended and step > run.start_step and all(torch.isfinite(p).all() for p in run.model.parameters()):
                save_checkpoint(run.last_path, run.model, step=step, optimizer=run.optimizer, **run.meta,
                                metrics={"step": step, "history": run.history, "elapsed_s": run_seconds(run, clock)})
            elif ended and best.state is not None:  # the run's model is saved: the resume point is done with
                run.last_path.unlink(missing_ok=True)
        loop_seconds = clock.elapsed()
        run.writer.flush()  # a checkpoint that could not be written fails the run here, as it would have in the loop
        yield finish(run, best, step, reason, clock, loop_seconds)
