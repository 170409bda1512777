"""How a handler tells a visitor something went wrong: one escaped sentence, no traceback in the server's log.

Gradio renders an error toast as HTML, so a message that repeats what a visitor typed (a model name, a class) could
inject markup: every message goes through `html.escape`. Expected refusals (bad input, not allowed) are not logged
as tracebacks; real bugs are logged with `log.exception` by the handler and shown as `SOMETHING_WRONG`.
"""

from __future__ import annotations

import html

import gradio as gr

SOMETHING_WRONG = "Something went wrong on the server. Please try again, or try another image."


def user_error(message: str) -> gr.Error:
    """An error toast for an expected refusal: escaped, and kept out of the server's traceback log."""
    return gr.Error(html.escape(str(message)), print_exception=False)
