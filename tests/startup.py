"""Start-up time: seconds from `python app.py` until the server answers, and until Chromium shows the page.

    python -m tests.startup [DATA_DIR ...]

Starts the app once with its default data (the real database under data/ if present, else the synthetic set,
drawn on first start), then once per DATA_DIR given (`--data DIR`), each on a free port, and prints two figures per
start: HTTP 200 on `/`, and the page rendered with its notice and first gallery image (Debian Chromium through
Playwright, as in the browser tests). Close other work first: on two cores the numbers move with the load.
"""

from __future__ import annotations

import sys
import time

from tests.demo_fixtures import start_app, wait_http
from tests.test_browser import ARGS, CHROMIUM


def measure(extra: list[str]) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc, url = start_app(extra)
    try:
        wait_http(url, proc)
        t_http = time.perf_counter() - t0
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            page.goto(url)
            page.get_by_text("not a medical device").wait_for(timeout=120_000)
            page.locator("#samples_gallery img").first.wait_for(timeout=120_000)
            t_page = time.perf_counter() - t0
            browser.close()
        return t_http, t_page
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    dirs = sys.argv[1:] if argv is None else argv
    for extra in [[]] + [["--data", d] for d in dirs]:
        t_http, t_page = measure(extra)
        label = f"--data {extra[1]}" if extra else "default data"
        print(f"{label}: server answers after {t_http:.1f} s, first page rendered after {t_page:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
