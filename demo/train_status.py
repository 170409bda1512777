"""The Train tab's run in words: the status line, the random-weights warning, the shortcut lesson, the test set's
table and the curves' x range, each from one `Snapshot` of the job (no gradio: the page and the public
`/training_status` API say the same)."""

from __future__ import annotations

import time

import pandas as pd

from cxr.bench.measure import format_duration
from cxr.data.index import display_name
from cxr.explain.focus import shortcut_sentence
from cxr.train.events import REASONS
from cxr.train.model import is_random_fallback

from .job import Snapshot
from .labels import METHODS_PANEL, percent, preset_title
from .messages import hide_paths

RANDOM_WEIGHTS = ("**Training from random weights.** The ImageNet starting weights could not be loaded ({why}), so "
                  "this model learns vision from a few hundred X-rays: expect lower accuracy and slower progress, and "
                  "the 95 % target is unlikely. *(Teachers: the \"ImageNet weights offline\" section of "
                  "docs/recipe.md says how to fix this.)*")


# The status line a page is built with. The page is built once, before the starter run starts, and served to every
# later visitor: a state read then ("No training yet") would be false on every page loaded while the starter
# trains, until the page timer's first tick (a second, more on a busy server), which says what is true.
STATUS_ON_LOAD = "Asking the server about training ..."


def attention_caption(true: str, called: str) -> str:
    """'Viral Pneumonia: right' or 'Normal, called COVID': a third of a 1024 px page wide, where the old
    'Viral Pneumonia · called Viral Pneumonia · step 10' lost the model's answer under an ellipsis."""
    if true == called:
        return f"{display_name(true)}: right"
    return f"{display_name(true)}, called {display_name(called)}"


def weights_warning(snap: Snapshot) -> str:
    started = snap.started
    if started and is_random_fallback(started.get("weights", "")):  # "auto" fell back; "none" was a choice
        # The reason only (e.g. "could not download ImageNet weights (URLError)"): the server's folders are the
        # teacher's business (README), not every visitor's.
        return RANDOM_WEIGHTS.format(why=started.get("weights", "").split(": ", 1)[-1].split(";")[0].split(". Accuracy")[0])
    return ""


def status_text(snap: Snapshot, saved_as: str | None = None, may_start: bool = True) -> str:
    """The run's state in a line or two. `saved_as`: the finished model's label as Classify's list shows it (the
    file name otherwise); `may_start`: whether this page may press Start (a student's page waits for the teacher)."""
    started = snap.started
    where = (f" · {preset_title(snap.config.get('preset', ''))} on {started['device']}, "
             f"{'pretrained' if started.get('pretrained') else 'random'} weights") if started else ""
    if snap.status == "idle":
        return ("No training yet. Choose settings and press **Start**." if may_start else
                "No training yet: the curves appear here when the teacher starts a run.")
    if snap.status == "failed":
        return f"**Training failed:** {hide_paths(snap.error)}. The best checkpoint so far is kept."
    if snap.status == "done" and snap.done:
        d = snap.done
        head = f"**Finished** after {d['steps']} steps ({d['epochs']:g} epochs, {format_duration(d['seconds'])}): " \
               f"{REASONS.get(d['reason'], d['reason'])}{where}."
        if not d["checkpoint"]:
            return head + " It ended before its first evaluation, so nothing was saved."
        saved = f"*{saved_as}*" if saved_as else f"`{d['checkpoint'].rsplit('/', 1)[-1]}`"
        kept = "Last" if snap.config.get("keep") == "last" else "Best"  # the weights kept and tested
        return (f"{head} {kept} validation accuracy {percent(d['best_val_accuracy'])} (step {d['best_step']}); "
                f"**test accuracy {percent(d['test_accuracy'])}** on {d['test_report']['count']} held-out images. "
                f"Saved: pick {saved} in **Classify**.{hidden_lungs_sentence(snap, saved)}")
    step = snap.last_step
    if not step:
        return ("Starting: reading the dataset and building the model ..." if snap.status == "running" else "Stopping ...")
    head = "**Stopping** after this step" if snap.status == "stopping" else "**Training**"
    budget = snap.config.get("time_budget_s") or 0
    if budget:  # a time budget: progress is time, the step count has no end to show
        elapsed = min(time.time() - snap.started_at, budget)
        bar = f"<progress value='{elapsed:.0f}' max='{budget:.0f}' style='width:100%'></progress>"
        where_in_run = f"step {step['step']} (epoch {step['epoch'] + 1}) · {format_duration(elapsed)} of {format_duration(budget)}"
    else:
        bar = f"<progress value='{step['step']}' max='{step['total_steps']}' style='width:100%'></progress>"
        where_in_run = f"step {step['step']} of {step['total_steps']} (epoch {step['epoch'] + 1})"
    plan = f"<br>Image size: {started['plan']}." if started.get("plan") else ""  # why a smaller size (cxr.train.plan)
    return (f"{head}{where} · {where_in_run} · {step['train_images_per_sec']:.1f} images/s · "
            f"about {format_duration(step['eta_s'])} left{bar}{plan}")


def expected_steps(snap: Snapshot) -> int:
    """The x range of the curves: the run's step count, or, under a time budget (whose step count is only an upper
    bound), the steps it will reach at its pace so far; a finished run ends at its last step."""
    step = snap.last_step
    if not step:
        return 0
    if not snap.config.get("time_budget_s"):
        return step["total_steps"]
    if not snap.active:
        return step["step"]
    return min(step["total_steps"], round(step["step"] + step["eta_s"] * snap.steps_per_second))


def hidden_lungs_sentence(snap: Snapshot, saved: str = "this model") -> str:
    """The shortcut lesson in one sentence, against chance, when the lungs were hidden, and where to see what the
    model used instead: the methods side by side in Classify (`saved`: the model as the lists name it)."""
    mode = snap.config.get("hide_lungs", "none")
    if mode == "none" or not snap.done.get("test_report"):
        return ""
    lesson = shortcut_sentence(snap.done["test_accuracy"], len(snap.done["test_report"]["classes"]), mode)
    return (f"\n\n**{lesson}** What did it use? Grad-CAM is coarse and can still paint the blacked-out region. "
            f"In **Classify**, pick {saved} (**{METHODS_PANEL}** opens under the overlay), click an example and "
            "press the panel's button. "
            "Integrated Gradients and Occlusion both measure against a black image, so the blacked-out region gets "
            "(almost) no credit there: they show where its evidence lies.")


def report_frame(report: dict) -> pd.DataFrame:
    """The test set's per-class metrics, named as the Evaluate tab names them."""
    def row(name: str, m: dict, count: int) -> dict:
        return {"class": name, "precision": round(m["precision"], 3), "recall": round(m["recall"], 3),
                "F1": round(m["f1"], 3), "test images": count}
    rows = [row(display_name(k), r, r["support"]) for k, r in report["per_class"].items()]
    rows.append(row("macro average", report["macro"], report["count"]))
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "F1", "test images"])
