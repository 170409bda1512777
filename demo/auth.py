"""The teacher key and teacher tokens, with no gradio: what `demo.context` (who may train) and `demo.teacher` (the
key box) both need, kept below both so neither imports the other.

The key is kept only as a sha256 digest: it never reaches a page, a log line or a message. Once a page proves it
knows the key it gets a **teacher token** instead: an expiry time and an HMAC of it keyed with the key's digest,
valid for TOKEN_HOURS, so what a browser keeps (and could hand a student) expires after the lesson.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

TOKEN_HOURS = 3  # a lesson and then some; after that a reloaded page asks for the key again
MIN_KEY_LENGTH = 16  # a shorter key is warned about at start: wrong keys are not rate-limited


def digest_key(key: str) -> bytes:
    """The digest a key is kept as (b"" for no key: then anyone may train)."""
    return hashlib.sha256(key.encode()).digest() if key else b""


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


def may_train(digest: bytes, key: Any) -> bool:
    """True when no key is set (empty digest), or `key` is the key (compared in constant time), or is a teacher
    token for it that has not expired. Anything else a request sends (None, a number) is not the teacher."""
    if not digest:
        return True
    return isinstance(key, str) and (hmac.compare_digest(digest_key(key), digest) or token_is_valid(digest, key))
