"""The server-wide memo every cache of the app is made of: analyses, curve pictures, loaded models, splits."""

import threading
import time

import pytest

from demo.registry import Memo


def test_visitors_asking_at_once_share_one_computation():
    memo, calls = Memo(keep=2), []

    def slow() -> str:
        calls.append(1)
        time.sleep(0.2)
        return "analysis"

    results = []
    threads = [threading.Thread(target=lambda: results.append(memo.get(("a",), slow))) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["analysis"] * 5 and len(calls) == 1


def test_the_least_recently_used_key_goes_first():
    memo = Memo(keep=2)
    memo.get(("a",), lambda: 1)
    memo.get(("b",), lambda: 2)
    memo.get(("a",), lambda: 99)  # a is used again: b is now the oldest
    memo.get(("c",), lambda: 3)
    assert memo.get(("a",), lambda: 99) == 1 and memo.get(("b",), lambda: 22) == 22


def test_a_failed_computation_is_not_kept_and_the_next_caller_tries_again():
    memo = Memo(keep=2)

    def broken():
        raise ValueError("no such model")

    with pytest.raises(ValueError):
        memo.get(("x",), broken)
    assert memo.get(("x",), lambda: "now it works") == "now it works"
