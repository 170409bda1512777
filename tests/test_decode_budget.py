"""The memory budget decodes share: they wait in turn, and a decode larger than the budget still runs, alone.
(That a big decode gives its memory back, through read_xray, is in test_images_hostile.)"""

import threading
import time

from cxr.data.decode_budget import DecodeBudget


def test_decodes_wait_while_the_memory_budget_is_spent():
    budget, entered = DecodeBudget(100), threading.Event()

    def second() -> None:
        with budget.reserve(60):
            entered.set()

    with budget.reserve(60):
        waiting = threading.Thread(target=second)
        waiting.start()
        assert not entered.wait(0.2), "60 + 60 bytes do not fit a budget of 100"
    assert entered.wait(5)
    waiting.join()
    with budget.reserve(500):  # larger than the whole budget: it still runs, alone
        assert budget.used == 500


def test_decodes_are_served_in_the_order_they_asked():
    budget, order = DecodeBudget(100), []

    def ask(name: str, nbytes: int) -> None:
        with budget.reserve(nbytes):
            order.append(name)

    def started(thread: threading.Thread, tickets: int) -> None:
        thread.start()
        for _ in range(500):  # until it holds its ticket (it then waits inside reserve)
            if budget._next >= tickets:
                return
            time.sleep(0.01)
        raise AssertionError("the thread never asked")

    with budget.reserve(90):  # the budget is nearly spent: both below must wait
        big = threading.Thread(target=ask, args=("big", 80), daemon=True)
        started(big, 2)
        small = threading.Thread(target=ask, args=("small", 5), daemon=True)
        started(small, 3)
        time.sleep(0.2)
        assert order == [], "5 bytes fit beside the 90 held, but the big decode asked first"
    big.join(5), small.join(5)
    assert not big.is_alive() and not small.is_alive() and order == ["big", "small"]


def test_a_burst_of_requests_gives_its_memory_back_once_after_the_last(monkeypatch):
    from cxr.data import decode_budget

    trims = []
    monkeypatch.setattr(decode_budget, "_malloc_trim", lambda pad: trims.append(pad))
    monkeypatch.setattr(decode_budget, "TRIM_DELAY_S", 0.05)
    budget = DecodeBudget(10**9)
    with budget.working():
        with budget.working():
            with budget.reserve(decode_budget.TRIM_BYTES):  # one big decode inside the burst
                pass
            budget.settle()  # as read_xray does after its decode: too early, a request is still working
        assert trims == []
        time.sleep(0.2)
        assert trims == [], "one request is still running: its model work and drawing are still to come"
    for _ in range(100):  # the last request ended: the trim follows after TRIM_DELAY_S
        if trims:
            break
        time.sleep(0.02)
    assert trims == [0]
    with budget.working():  # a burst of small images only: nothing to give back
        with budget.reserve(1000):
            pass
    time.sleep(0.2)
    assert trims == [0]


def test_limit_arenas_applies_on_glibc():
    import ctypes

    from cxr.data.decode_budget import limit_arenas

    try:
        ctypes.CDLL(None).mallopt
    except AttributeError:
        assert limit_arenas() is False
    else:
        assert limit_arenas(8) is True  # a cap the test process never reaches
