"""How a handler tells a visitor something went wrong: one escaped sentence, no traceback in the server's log.

Gradio renders an error toast as HTML, so a message that repeats what a visitor typed (a model name, a class) could
inject markup: every message goes through `html.escape`. Expected refusals (bad input, not allowed) are not logged
as tracebacks; real bugs are logged with `log.exception` by the handler and shown as `SOMETHING_WRONG`.
"""

from __future__ import annotations

import html
import math
import re
import time
from pathlib import PurePath
from typing import Any

import gradio as gr

from cxr.train.config import TrainConfig
from cxr.train.budget import seconds_to_evaluation

from .job import Snapshot

SOMETHING_WRONG = "Something went wrong on the server. Please try again, or try another image."


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/'\"`(),;]+/)+([^\s/'\"`(),;]*)")
# A quoted absolute path (as Python's errors print one) may hold spaces: "'/srv/my data/x.png'".
_QUOTED_PATH = re.compile(r"""(['"])(/[^'"\n]*/[^'"\n]*)\1""")
# Fields of a run's record that name server files or folders; a visitor sees only their last part.
_PATH_FIELDS = {"data", "out", "resume", "checkpoint", "last_checkpoint", "skipped_files"}


def hide_paths(text: str) -> str:
    """`text` with every absolute path cut to its last part ("into /root/.cache/torch/hub/checkpoints" -> "into
    checkpoints"): where the server keeps things is the teacher's business (README), not every visitor's."""
    text = _QUOTED_PATH.sub(lambda m: m.group(1) + PurePath(m.group(2)).name + m.group(1), text)
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or PurePath(m.group(0)).name, text)


def public_record(value: Any, key: str = "") -> Any:
    """A run's record (config, events) as a visitor may see it: path-valued fields cut to their names and absolute
    paths in every other text hidden (`hide_paths`). Returns a new structure; `value` is left as it was."""
    if isinstance(value, dict):
        return {k: public_record(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_record(v, key) for v in value]
    if isinstance(value, str):
        return PurePath(value).name if key in _PATH_FIELDS and value else hide_paths(value)
    return value


def user_error(message: str) -> gr.Error:
    """An error toast for an expected refusal: escaped, and kept out of the server's traceback log. It stays on
    screen until closed: panels that emptied say "the red message says why", and a student who looked at the
    projector for ten seconds must still find it."""
    return gr.Error(html.escape(str(message)), duration=None, print_exception=False)


NOT_YET = "No model yet"  # the title of the toast for a request that is fine but early


def not_yet(message: str) -> gr.Error:
    """For a request that is fine but early (no model yet): a short blue notice titled "No model yet", not a red
    "Error" that stays (the tab says the same and counts down, so a lasting toast would only go stale), and an
    invisible error that still ends the event, so the page's `.failure` steps run and an API caller gets the
    sentence. (Gradio 6.31's page heads a toast with its kind, "Info", whatever title the server sends.)"""
    text = html.escape(str(message))
    gr.Info(text, title=NOT_YET, duration=8)
    return gr.Error(text, title=NOT_YET, visible=False, print_exception=False)


def roughly(seconds: float) -> str:
    """How long until something, as coarsely as a guess from a run's pace deserves: the pace of the first steps
    jumps, and a countdown in seconds that jumps or sits at "1 s" reads as broken."""
    if seconds < 15:
        return "in a few seconds"
    if seconds < 60:
        return "in under a minute"
    return f"in about {math.ceil(seconds / 60)} min"


def _validation_seconds(snap: Snapshot) -> float:
    """About how long the first evaluation takes before its model is saved: the validation images at the run's
    training pace so far (a pass without gradients is faster, so this errs on the late side)."""
    pace = snap.last_step.get("train_images_per_sec", 0.0) if snap.last_step else 0.0
    images = int((snap.started.get("split") or {}).get("val", 0))
    return images / pace if pace > 0 else 0.0


def no_model_yet(snap: Snapshot, markdown: bool = True, countdown: bool = True, teacher_only: bool = False) -> str:
    """Why there is no model to classify or evaluate with yet, and when there will be one: the run now training
    saves its first model at its first evaluation; with no run, how to train one (or, with a teacher key, that
    the teacher does). Plain text for an error toast; no countdown where the sentence is not refreshed every
    second (it would stand still, then be wrong)."""
    head = "The starter model is training:" if snap.active else "No trained model yet."
    if not snap.active:
        who = "The teacher trains one" if teacher_only else "Train one"
        rest = (f"{who} in the Train tab (the Fast preset takes a few minutes); it appears here as soon as its "
                "first evaluation is saved.")
    elif not snap.last_step:
        rest = "it is reading the X-rays; the first model is ready in a few minutes."
    else:  # the first evaluation saves the first model; when it comes is the training loop's rule
        cfg = TrainConfig(eval_every=int(snap.config.get("eval_every", TrainConfig.eval_every)),
                          time_budget_s=float(snap.config.get("time_budget_s") or 0.0))
        steps = snap.last_step["step"] - int(snap.started.get("start_step", 0))
        # The budget's evaluation clock starts when training does, after the set-up (a process, the data, the model):
        # counted from the Start press instead, the set-up's seconds would come off the wait, and "in a few seconds"
        # would show for half a minute.
        since = time.time() - (snap.trained_at or snap.started_at)
        wait = seconds_to_evaluation(cfg, steps, since, snap.steps_per_second) + _validation_seconds(snap)
        when = f" {roughly(wait)}" if math.isfinite(wait) and countdown else ""
        rest = f"ready{when} at its first evaluation, and shown here then (you can watch it in the Train tab)."
    if markdown:
        return f"**{head}** " + rest.replace("Train tab", "**Train** tab")
    return f"{head} {rest}"
