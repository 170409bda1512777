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
