"""The app's page: a header with the not-for-clinical-use notice, a data banner, the four tabs, and the one
page-level timer that keeps every tab current (the training view and every list of models), whichever tab is open.
The tab a visitor had open is remembered in their browser, so a reload returns to it."""

from __future__ import annotations

from functools import partial

import gradio as gr
from gradio.utils import get_upload_folder

from cxr.explain.card import BIASES, NOTICE

from . import classify_tab, data_tab, evaluate_tab, model_files, teacher, train_tab
from .context import AppContext
from .limits import UploadJanitor, limit_files_per_request, refuse_links
from .inference import CLASSIFY_AT_ONCE

TITLE = "Chest X-ray classifier: train it, then ask it why"
# The model card's words (cxr.explain.report), with the first of its bias notes: the one that matters most.
HEADER = f"**{NOTICE}** {BIASES[0]}"
CSS = """
#notice { border-left: 6px solid #d97706; padding: 4px 12px; background: rgba(217,119,6,0.08); }
#banner { border-left: 6px solid #2563eb; padding: 4px 12px; background: rgba(37,99,235,0.08); }
#weights_warning { border-left: 6px solid #dc2626; padding: 4px 12px; background: rgba(220,38,38,0.08); }
#ood_note { border-left: 6px solid #dc2626; padding: 4px 12px; background: rgba(220,38,38,0.08); }
/* Classify's answer for an image unlike the training X-rays (the note is shown): in view, but visibly no answer. */
#answer:has(#ood_note:not(.hidden)) #probs { opacity: 0.45; filter: grayscale(1); }
#answer:has(#ood_note:not(.hidden)) #probs .output-class { text-decoration: line-through; }
#train_status progress { height: 14px; margin-top: 6px; }
/* Fill the overlay box whatever the upload's size: a 299-px X-ray must read on a projector. */
#overlay img { width: 100%; height: 100%; object-fit: contain; }
#probs .output-class { font-size: 1.6em; }
/* Thumbnail captions wrap instead of ending in "...": "Viral Pneumonia" must read in full at 1024 px. */
#samples_gallery .caption-label, #variants_gallery .caption-label, #examples .caption-label,
#eval_losses .caption-label, #eval_cell .caption-label, #methods_gallery .caption-label { white-space: normal;
  max-width: 94%; }
/* The methods' maps arrive after the page is laid out: show both rows in full, no scrolling inside the gallery. */
#methods_gallery .grid-wrap, #methods_gallery .fixed-height { height: auto !important; max-height: none !important;
  overflow-y: visible !important; }
/* Gradio gives a gallery of height "auto" at least 450 px: the Data tab's one row of variants left a band of empty
   space under it. Each gallery is as tall as its thumbnails, and shows them all without scrolling. */
#samples_gallery .fixed-height, #variants_gallery .fixed-height { min-height: 0 !important; max-height: none !important;
  overflow-y: visible !important; }
"""
# The largest thing a visitor sends is a model (~45 MB); X-rays are held to 20 MB by Classify.
MAX_UPLOAD = f"{model_files.MAX_MODEL_MB}mb"
TAB_TITLES = {"data": "Data", "train": "Train", "classify": "Classify", "evaluate": "Evaluate"}  # id -> title
TABS = tuple(TAB_TITLES)


def remember_tab(evt: gr.SelectData) -> str:
    return TABS[evt.index] if isinstance(evt.index, int) and 0 <= evt.index < len(TABS) else "data"


# A reload reopens the tab the visitor had open, in the browser itself: a round trip to a busy server could land
# after the visitor already clicked another tab, and move them back.
RESTORE_TAB_JS = """(stored) => {
    const names = %s;
    const button = [...document.querySelectorAll('button[role=tab]')].find(b => b.textContent.trim() === names[stored]);
    if (button && button.getAttribute('aria-selected') !== 'true') button.click();
    return [];
}""" % TAB_TITLES


def show_classify() -> gr.Tabs:
    return gr.Tabs(selected="classify")


def page_files(demo: gr.Blocks) -> set[str]:
    """The cached files the page was built with (its galleries' images, the download button's model): every
    visitor's page links to them, so the upload janitor leaves them (Gradio's own cleanup does the same)."""
    return set().union(*(getattr(block, "keep_in_cache", set()) for block in list(demo.blocks.values())))


def build_app(ctx: AppContext) -> gr.Blocks:
    # delete_cache: uploads and rendered images older than 15 minutes are removed every 5 minutes (Classify also
    # has each X-ray deleted a minute after it is read), so a day of classes does not fill the Space's disk.
    with gr.Blocks(title="cxr: chest X-ray classifier", delete_cache=(300, 900)) as demo:
        # What visitors sent (Gradio's record, only ever read here): the only files a request may have deleted.
        ctx.uploads = demo.upload_file_set
        if getattr(ctx, "janitor", None) is None:
            ctx.janitor = UploadJanitor(get_upload_folder(), protected=lambda: page_files(demo)).start()
        limit_files_per_request(refuse=ctx.janitor.refusal)
        refuse_links()
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(HEADER, elem_id="notice")
        if ctx.settings.banner:
            gr.Markdown(ctx.settings.banner, elem_id="banner")
        with gr.Tabs() as tabs:
            with gr.Tab(TAB_TITLES["data"], id="data"):
                data_tab.build(ctx)
            with gr.Tab(TAB_TITLES["train"], id="train"):
                train = train_tab.build(ctx)
            with gr.Tab(TAB_TITLES["classify"], id="classify"):
                classify = classify_tab.build(ctx)
            with gr.Tab(TAB_TITLES["evaluate"], id="evaluate"):
                evaluate = evaluate_tab.build(ctx)
        open_tab = gr.BrowserState("data", storage_key="cxr_open_tab")
        tabs.select(remember_tab, None, [open_tab], api_name=False, show_progress="hidden")

        # The one page-level timer: the training view, then every list of models.
        timer = gr.Timer(1.0)
        timer.tick(ctx.bind(train_tab.poll, train), [train.seen, train.keys.teacher, train.compare],
                   train.poll_outputs(), api_name=False, concurrency_limit=None, show_progress="hidden")
        lists = classify_tab.ModelLists(classify.checkpoint, classify.known, classify.hint, train.compare,
                                        evaluate.model)
        timer.tick(ctx.bind(classify_tab.model_list, lists), [classify.known, classify.checkpoint], lists.outputs,
                   api_name=False, concurrency_limit=None, show_progress="hidden")
        # A new page: its tab, the current default model (not the one of when the server started).
        demo.load(None, [open_tab], None, js=RESTORE_TAB_JS, api_name=False)
        teacher.on_page_load(ctx, demo, train.keys)
        demo.load(ctx.bind(classify_tab.model_list, lists), [classify.known, gr.State(None)], lists.outputs,
                  api_name=False, show_progress="hidden").then(
            ctx.bind(model_files.download_model), [classify.checkpoint], [classify.download_btn], api_name=False,
            show_progress="hidden")
        # Evaluate -> Classify: a clicked top loss or matrix-cell image opens in Classify, classified by that model.
        for clicked in evaluate.open_events:
            opened = clicked.then(show_classify, None, [tabs], api_name=False).then(
                ctx.bind(classify_tab.open_from_evaluate, classify),
                [evaluate.open_id, evaluate.model, classify.target, classify.alpha],
                [classify.checkpoint, *classify.panels], api_name=False, concurrency_id="classify",
                concurrency_limit=CLASSIFY_AT_ONCE)  # a group takes its members' lowest limit
            opened.success(partial(classify_tab.ready_for_next, classify), None, [classify.upload, classify.waiting],
                           api_name=False)
            opened.failure(partial(classify_tab.cleared, classify), None, classify.panels, api_name=False)
        classify.add_file.upload(ctx.bind(model_files.add_model), [classify.add_file, train.keys.key_box],
                                 [classify.add_status], api_name=False)
    # Classification is CPU-bound: two at a time use both cores; the rest wait their turn in the queue.
    demo.queue(default_concurrency_limit=2, max_size=200)
    return demo


def launch_kwargs(ctx: AppContext | None = None) -> dict:
    kwargs = {"theme": gr.themes.Soft(), "css": CSS + evaluate_tab.CSS, "max_file_size": MAX_UPLOAD, "show_error": False}
    if ctx is not None:
        kwargs["allowed_paths"] = [str(ctx.settings.checkpoints_dir)]  # the Download button serves models from here
    return kwargs
