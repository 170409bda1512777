"""What every command shares, below them all: the exit codes, the checks that turn a bad path into one sentence
before any work starts (`existing_folder`, `checkpoint_file`, `output_folder`), and JSON lines on stdout. It
imports no command, so `main` and each command module import it without a circle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cxr.errors import UserError

EXIT_BAD_INPUT = 2  # a sentence for people: the input is at fault
EXIT_BUG = 1  # a traceback: the program, or the machine, is at fault


def _named(path: "str | Path", flag: str) -> str:
    return f"{flag} {path}" if flag else str(path)


def existing_folder(path: "str | Path", flag: str) -> Path:
    """`path` as a folder that must already exist (a dataset)."""
    p = Path(path).expanduser()
    if p.is_file():
        raise UserError(f"{_named(path, flag)} is a file; give the folder that holds the class folders")
    if not p.is_dir():
        raise UserError(f"{_named(path, flag)} does not exist")
    return p


def checkpoint_file(path: "str | Path", flag: str = "--checkpoint") -> None:
    """A folder where a checkpoint file belongs is refused here; a missing file is `load_checkpoint`'s sentence."""
    if Path(path).expanduser().is_dir():
        raise UserError(f"{_named(path, flag)} is a folder; name the checkpoint file (.pt) inside it")


def output_folder(path: "str | Path", flag: str, what: str) -> Path:
    """`path` as a folder that `what` will be written into, checked before any work: it, or the nearest part of
    it that exists, must be a writable folder. The writer creates it (so a refused run leaves no empty folder)."""
    p = Path(path).expanduser()
    existing = next(q for q in (p, *p.parents) if q.exists())  # the root always exists
    if not existing.is_dir():
        where = "is a file" if existing == p else f"is inside {existing}, which is a file"
        raise UserError(f"{_named(path, flag)} {where}; give a folder to write {what} into")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{_named(path, flag)} cannot be written ({existing} is not writable); give another folder")
    return p


def print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)
