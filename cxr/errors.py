"""The one error type for bad input: what a person did or has (a flag, a file, a folder, a setting, no network).

A `UserError` is told as one sentence that says what was wrong and what to do; the CLI exits with code 2 and the
app shows it as a message. It is a `ValueError`, so the library's older checks (`raise ValueError(...)`) read the
same to every caller. Anything else that escapes is a bug: the CLI prints the traceback and exits with 1, the app
logs it and shows a plain sentence.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input or an unmet precondition, worded for the person who can fix it."""
