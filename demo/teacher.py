"""Who may start and stop training. With a teacher key set (`--teacher-key` / CXR_TEACHER_KEY), Start, Stop and
adding models need it, checked on the server for the page and the API alike; this module owns the Train tab's key
box, the sentence beside it, and this page's teacher mode, which a reload of the same browser tab keeps.

Once the server accepts the key, the page swaps it for a **teacher token**: the expiry time and an HMAC of it keyed
with the key's digest, valid for TOKEN_HOURS. The page keeps only the token (in the key box, and in the tab's
sessionStorage so a reload keeps teacher mode). A browser can bring sessionStorage back after the tab was closed
(reopening a closed tab, session restore), so what it could give a student is a token that expires after the
lesson, never the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from .context import AppContext

TOKEN_HOURS = 3  # a lesson and then some; after that a reloaded page asks for the key again

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


def _mac(digest: bytes, expiry: int) -> str:
    return hmac.new(digest, f"cxr-teacher-until-{expiry}".encode(), hashlib.sha256).hexdigest()


def make_token(digest: bytes, now: float | None = None) -> str:
    """A teacher token for the key whose digest is `digest`, valid for TOKEN_HOURS from `now`."""
    expiry = int((time.time() if now is None else now) + TOKEN_HOURS * 3600)
    return f"teacher.{expiry}.{_mac(digest, expiry)}"


def token_is_valid(digest: bytes, token: str, now: float | None = None) -> bool:
    """Whether `token` was made by `make_token` for this digest and has not expired."""
    try:
        kind, expiry_text, mac = token.split(".")
        expiry = int(expiry_text)
    except ValueError:
        return False
    unexpired = expiry > (time.time() if now is None else now)
    return kind == "teacher" and bool(digest) and unexpired and hmac.compare_digest(mac, _mac(digest, expiry))


def check_key(ctx: AppContext, teacher_key: str) -> tuple:
    """The key box: unlock Start and Stop for this page when the key is right, and swap it for a teacher token
    (the key leaves the page; it is never echoed)."""
    if ctx.is_teacher(teacher_key):
        return True, TEACHER_MODE, make_token(ctx.settings.teacher_key_digest)
    return False, "That is not the teacher key. " + ONLY_TEACHER, gr.skip()


def recall_key(ctx: AppContext, remembered: str | None) -> tuple:
    """A reloaded page with the token this browser tab remembered (see KEY_STORE): teacher mode again while it is
    valid; an expired one, or one from before a restart with another key, is dropped in silence (box emptied, no
    accusation)."""
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
    key_box.submit(ctx.bind(check_key), [key_box], [teacher, who, key_box], api_name=False).then(
        None, [key_box, who], None, js=REMEMBER_KEY_JS, api_name=False)
    return key_box, who, teacher


def on_page_load(ctx: AppContext, demo: gr.Blocks, key_box: gr.Textbox, who: gr.Markdown,
                 teacher: gr.State) -> None:
    """A new page (or a reload) of a tab where the teacher unlocked Start: teacher mode again, token in the box."""
    demo.load(None, None, [key_box], js=RECALL_KEY_JS, api_name=False, show_progress="hidden").then(
        ctx.bind(recall_key), [key_box], [teacher, who, key_box], api_name=False,
        show_progress="hidden").then(None, [key_box, who], None, js=REMEMBER_KEY_JS, api_name=False)
