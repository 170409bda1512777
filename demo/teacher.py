"""Who may start and stop training. With a teacher key set (`--teacher-key` / CXR_TEACHER_KEY), Start, Stop and
adding models need it, checked on the server for the page and the API alike; this module owns the Train tab's key
box, the sentence beside it, and this page's teacher mode, which a reload of the same browser tab keeps.
"""

from __future__ import annotations

import gradio as gr

from .context import AppContext

ONLY_TEACHER = "Only the teacher can start or stop a run: students, watch the curves here and try the model in **Classify**."
TEACHER_MODE = "**Teacher mode:** you can start and stop runs from this page."
ANYONE = ("Anyone who opens this page can press **Start** and **Stop**. On a public Space, set a teacher key "
          "(`CXR_TEACHER_KEY`) so that only the teacher can.")

# Teacher mode survives a reload (a projector page gets refreshed when something looks stuck): the key is kept in
# the tab's sessionStorage, which a reload keeps and closing the tab forgets, so the next user of a shared classroom
# PC opens a student's page. Kept only once the server accepted it; a refused key is forgotten.
KEY_STORE = "cxr_teacher_key"
REMEMBER_KEY_JS = """(key, who) => {
    if (key && String(who).startsWith('**Teacher mode')) sessionStorage.setItem('%s', key);
    else sessionStorage.removeItem('%s');
    return [];
}""" % (KEY_STORE, KEY_STORE)
RECALL_KEY_JS = "() => sessionStorage.getItem('%s') || ''" % KEY_STORE


def check_key(ctx: AppContext, teacher_key: str) -> tuple[bool, str]:
    """The key box: unlock Start and Stop for this page when the key is right (the key itself is never echoed)."""
    if ctx.is_teacher(teacher_key):
        return True, TEACHER_MODE
    return False, "That is not the teacher key. " + ONLY_TEACHER


def recall_key(ctx: AppContext, remembered: str | None) -> tuple:
    """A reloaded page with the key this browser tab remembered (see KEY_STORE): teacher mode again if it is still
    the key; a key from before a restart with another key is dropped in silence (box emptied, no accusation)."""
    if not remembered or not ctx.settings.teacher_only:
        return gr.skip(), gr.skip(), gr.skip()
    if ctx.is_teacher(remembered):
        return True, TEACHER_MODE, gr.skip()
    return False, ONLY_TEACHER, ""


def build(ctx: AppContext) -> tuple[gr.Textbox, gr.Markdown, gr.State]:
    """The key box and the sentence on who may train; the page's teacher mode (a State the Train tab reads)."""
    teacher_only = ctx.settings.teacher_only
    with gr.Row(equal_height=True):
        key_box = gr.Textbox(label="Teacher key (press Enter to unlock Start and Stop)", type="password",
                             visible=teacher_only, elem_id="teacher_key", scale=1,
                             placeholder="type the key, then press Enter")
        who = gr.Markdown(ONLY_TEACHER if teacher_only else ANYONE, elem_id="who_may_train")
    teacher = gr.State(not teacher_only)
    key_box.submit(ctx.bind(check_key), [key_box], [teacher, who], api_name=False).then(
        None, [key_box, who], None, js=REMEMBER_KEY_JS, api_name=False)
    return key_box, who, teacher


def on_page_load(ctx: AppContext, demo: gr.Blocks, key_box: gr.Textbox, who: gr.Markdown,
                 teacher: gr.State) -> None:
    """A new page (or a reload) of a tab where the teacher unlocked Start: teacher mode again, key typed in."""
    demo.load(None, None, [key_box], js=RECALL_KEY_JS, api_name=False, show_progress="hidden").then(
        ctx.bind(recall_key), [key_box], [teacher, who, key_box], api_name=False,
        show_progress="hidden").then(None, [key_box, who], None, js=REMEMBER_KEY_JS, api_name=False)
