"""Start-up time: seconds from `python app.py` until the server answers, until Chromium shows the page, and until
Classify can classify (a fresh server: an empty checkpoints folder, so the starter model must train first).

    python -m benchmarks.startup [DATA_DIR ...]

Starts the app once with its default data (the real database under data/ if present, else the synthetic set,
drawn on first start), then once per DATA_DIR given (`--data DIR`), each on a free port with an empty checkpoints
folder, and prints three figures per start: HTTP 200 on `/`, the page rendered with its notice and first gallery
image (Debian Chromium through Playwright, as in the browser tests), and the first successful `/classify` answer
(the starter model's first checkpoint). Close other work first: on two cores the numbers move with the load.
"""

from __future__ import annotations

import sys
import tempfile
import time

from tests.demo_fixtures import start_app, wait_http
from tests.test_browser import ARGS, CHROMIUM


def first_classify(url: str, image: str, timeout: float = 1200) -> None:
    """Wait until the server has a model and classifies `image` with it."""
    from gradio_client import Client, handle_file

    client, deadline = Client(url, verbose=False), time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.predict(api_name="/training_status")
        if state["evaluations"] or state["status"] in ("done", "failed"):
            model = state["evaluations"][-1]["checkpoint"].rsplit("/", 1)[-1] if state["evaluations"] else ""
            client.predict(handle_file(image), model, "predicted class", 0.45, api_name="/classify")
            return
        time.sleep(1)
    raise RuntimeError("no model within the time limit")


def measure(extra: list[str]) -> tuple[float, float, float]:
    from cxr.data.index import index_dataset
    from demo.settings import resolve_settings

    t0 = time.perf_counter()
    proc, url = start_app(extra, {"CXR_CHECKPOINTS": tempfile.mkdtemp(prefix="cxr-startup-")})
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
        data = resolve_settings(extra[1] if extra else None).data_dir
        first_classify(url, str(index_dataset(data).files[0]))
        return t_http, t_page, time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    dirs = sys.argv[1:] if argv is None else argv
    for extra in [[]] + [["--data", d] for d in dirs]:
        t_http, t_page, t_classify = measure(extra)
        label = f"--data {extra[1]}" if extra else "default data"
        print(f"{label}: server answers after {t_http:.1f} s, first page rendered after {t_page:.1f} s, Classify "
              f"answers (starter model) after {t_classify:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
