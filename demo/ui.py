"""The app's page: a header with the not-for-clinical-use notice, a data banner, and the three tabs."""

from __future__ import annotations

import gradio as gr

from . import classify_tab, data_tab, train_tab
from .context import AppContext

TITLE = "Chest X-ray classifier: train it, then ask it why"
NOTICE = (
    "**A teaching and research tool, not a medical device.** Its answers must never be used to diagnose, treat "
    "or triage anyone. The COVID-19 Radiography Database mixes hospitals, ages and sources, so a model can score "
    "well by learning where an image came from rather than what disease it shows."
)
CSS = """
#notice { border-left: 6px solid #d97706; padding: 4px 12px; background: rgba(217,119,6,0.08); }
#banner { border-left: 6px solid #2563eb; padding: 4px 12px; background: rgba(37,99,235,0.08); }
#train_status progress { height: 14px; margin-top: 6px; }
/* Fill the overlay box whatever the upload's size: a 299-px X-ray must read on a projector. */
#overlay img { width: 100%; height: 100%; object-fit: contain; }
"""
MAX_UPLOAD = "20mb"  # an X-ray PNG is 0.1 to 5 MB; a DICOM up to ~20 MB


def build_app(ctx: AppContext) -> gr.Blocks:
    # delete_cache: uploads and rendered images older than an hour are removed every 10 minutes, so a day of
    # classes does not fill the Space's disk.
    with gr.Blocks(title="cxr: chest X-ray classifier", delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(NOTICE, elem_id="notice")
        if ctx.settings.banner:
            gr.Markdown(ctx.settings.banner, elem_id="banner")
        with gr.Tabs():
            with gr.Tab("Data", id="data"):
                data_tab.build(ctx)
            with gr.Tab("Train", id="train"):
                timer, _ = train_tab.build(ctx)
            with gr.Tab("Classify", id="classify"):
                parts = classify_tab.build(ctx)
        # One timer drives both the training view and the list of checkpoints Classify can use.
        timer.tick(ctx.bind(classify_tab.refresh_checkpoints), [parts["known"], parts["checkpoint"]],
                   [parts["checkpoint"], parts["known"], parts["hint"]], api_name=False, concurrency_limit=None,
                   show_progress="hidden")
    # Classification is CPU-bound: two at a time use both cores; the rest wait their turn in the queue.
    demo.queue(default_concurrency_limit=2, max_size=200)
    return demo


def launch_kwargs() -> dict:
    return {"theme": gr.themes.Soft(), "css": CSS, "max_file_size": MAX_UPLOAD, "show_error": False}
