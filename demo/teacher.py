"""Who may start and stop training. With a teacher key set (`--teacher-key` / CXR_TEACHER_KEY), Start, Stop and
adding models need it, checked on the server for the page and the API alike; this module owns the Train tab's key
box, the sentence beside it, and this page's teacher mode, which a reload of the same browser tab keeps.

The key and token logic itself (no gradio) is `demo.auth`.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .auth import make_token
from .context import AppContext

ONLY_TEACHER = "Only the teacher can start or stop a run: students, watch the curves here and try the model in **Classify**."
TEACHER_MODE = "**Teacher mode:** you can start and stop runs from this page."
ANYONE = ("Anyone who opens this page can press **Start** and **Stop**. On a public Space, set a teacher key "
          "(`CXR_TEACHER_KEY`) so that only the teacher can.")

# Teacher mode survives a reload (a projector page gets refreshed when something looks stuck): the teacher token,
# never the key, is kept in the tab's sessionStorage, and only once the server accepted the key; a refused or
# expired one is forgotten.
KEY_STORE = "cxr_teacher_token"
REMEMBER_KEY_JS = """(token, who) => {
    if (token && String(who).startsWith('**Teacher mode')) sessionStorage.setItem('%s', token);
    else sessionStorage.removeItem('%s');
    return [];
}""" % (KEY_STORE, KEY_STORE)
RECALL_KEY_JS = "() => sessionStorage.getItem('%s') || ''" % KEY_STORE


@dataclass
class TeacherBox:
    """The key box, the sentence on who may train, and this page's teacher mode (a State the Train tab reads)."""

    key_box: gr.Textbox
    who: gr.Markdown
    teacher: gr.State

    @property
    def outputs(self) -> list[gr.components.Component]:
        return [self.teacher, self.who, self.key_box]


def check_key(ctx: AppContext, box: TeacherBox, teacher_key: str) -> dict:
    """The key box: unlock Start and Stop for this page when the key is right, and swap it for a teacher token
    (the key leaves the page; it is never echoed)."""
    if ctx.is_teacher(teacher_key):
        return {box.teacher: True, box.who: TEACHER_MODE, box.key_box: make_token(ctx.settings.teacher_key_digest)}
    return {box.teacher: False, box.who: "That is not the teacher key. " + ONLY_TEACHER}


def recall_key(ctx: AppContext, box: TeacherBox, remembered: str | None) -> dict:
    """A reloaded page with the token this browser tab remembered (see KEY_STORE): teacher mode again while it is
    valid; an expired one, or one from before a restart with another key, is dropped in silence (box emptied, no
    accusation)."""
    if not remembered or not ctx.settings.teacher_only:
        return {c: gr.skip() for c in box.outputs}  # an empty dict would read as one value, not "no change"
    if ctx.is_teacher(remembered):
        return {box.teacher: True, box.who: TEACHER_MODE}
    return {box.teacher: False, box.who: ONLY_TEACHER, box.key_box: ""}


def build(ctx: AppContext) -> TeacherBox:
    teacher_only = ctx.settings.teacher_only
    with gr.Row(equal_height=True):
        key_box = gr.Textbox(label="Teacher key (press Enter to unlock Start and Stop)", type="password",
                             visible=teacher_only, elem_id="teacher_key", scale=1,
                             placeholder="type the key, then press Enter")
        who = gr.Markdown(ONLY_TEACHER if teacher_only else ANYONE, elem_id="who_may_train")
    box = TeacherBox(key_box, who, gr.State(not teacher_only))
    key_box.submit(ctx.bind(check_key, box), [key_box], box.outputs, api_name=False).then(
        None, [key_box, who], None, js=REMEMBER_KEY_JS, api_name=False)
    return box


def on_page_load(ctx: AppContext, demo: gr.Blocks, box: TeacherBox) -> None:
    """A new page (or a reload) of a tab where the teacher unlocked Start: teacher mode again, token in the box."""
    demo.load(None, None, [box.key_box], js=RECALL_KEY_JS, api_name=False, show_progress="hidden").then(
        ctx.bind(recall_key, box), [box.key_box], box.outputs, api_name=False,
        show_progress="hidden").then(None, [box.key_box, box.who], None, js=REMEMBER_KEY_JS, api_name=False)
