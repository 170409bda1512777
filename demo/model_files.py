"""Model files, in the Classify tab's "Model files" drawer: download the chosen model (a free Space's disk is wiped on
restart, so a teacher takes the models worth keeping home), or add one from a file, trained at home with
`python -m cxr train` or downloaded in an earlier class. A file is added only if it is small enough, loads as a cxr
checkpoint without running any code, and is for this dataset's classes; with a teacher key set, only the teacher
may add one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import gradio as gr

from cxr.train.checkpoint import checkpoint_name, load_checkpoint
from cxr.data.index import display_name

from .context import AppContext
from .labels import percent
from .limits import forget_upload
from .messages import user_error

MAX_MODEL_MB = 64  # a ResNet18 checkpoint is about 45 MB


def download_model(ctx: AppContext, checkpoint: str | None) -> str | None:
    """The chosen model's .pt file, for the Download button (a teacher takes it home, or to the next class)."""
    if not checkpoint:
        return None
    try:
        return str(ctx.checkpoint_path(checkpoint))
    except ValueError as e:
        raise user_error(str(e)) from None


def add_model(ctx: AppContext, file: str | None, teacher_key: str | None = None) -> str:
    """Add a checkpoint from a file: size-limited, loaded without running code, for this dataset's classes."""
    if not file:
        return ""
    try:
        if not ctx.is_teacher(teacher_key):
            raise ValueError("Only the teacher can add models: enter the teacher key in the Train tab.")
        size = os.path.getsize(file)
        if size > MAX_MODEL_MB * 2**20:
            raise ValueError(f"that file is {size / 2**20:.0f} MB; a cxr model is about 45 MB (at most {MAX_MODEL_MB} MB)")
        ckpt = load_checkpoint(file)  # weights_only: a file carrying code is refused, never run
        if ckpt.classes != ctx.index.classes:
            raise ValueError(f"that model is for the classes {', '.join(ckpt.class_names)}; this app's data has "
                             f"{', '.join(display_name(c) for c in ctx.index.classes)}")
        name = checkpoint_name()
        ctx.settings.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, ctx.settings.checkpoints_dir / f".{name}.upload")
        os.replace(ctx.settings.checkpoints_dir / f".{name}.upload", ctx.settings.checkpoints_dir / name)
    except ValueError as e:
        raise user_error(str(e).replace(Path(file).name, "that file")) from None
    finally:
        forget_upload(ctx, file)
    test = ckpt.metrics.get("test_accuracy")
    return f"Added the model as `{name}`" + (f" (test accuracy {percent(test)})" if test is not None else "") + "."


def build(ctx: AppContext, default: str | None) -> tuple[gr.DownloadButton, gr.File, gr.Markdown]:
    """The drawer: the download button (for `default`, the model the page opens on), the add-a-model field and
    its status line."""
    with gr.Accordion("Model files: download the chosen model, or add one you trained elsewhere", open=False,
                      elem_id="model_files"):
        with gr.Row():
            # Filled from the start (the page's load event refreshes it): a click before that event is served works too.
            download_btn = gr.DownloadButton("Download the chosen model (.pt)", value=download_model(ctx, default),
                                             elem_id="download_model")
            add_file = gr.File(label="Add a model (.pt)", file_types=[".pt"], type="filepath", elem_id="add_model",
                               height=100)
        add_status = gr.Markdown(elem_id="add_model_status")
    return download_btn, add_file, add_status
