"""A teacher's first class on the real sample, timed and photographed: start the app on a fresh server, let the
starter model (a Fast run) train, and screenshot each view once it has finished.

    python -m benchmarks.sample_walk [DATA_DIR]     # default ../shared/cxr-sample

Prints the seconds until the server answers and until Classify classifies with the starter model, then waits for
the starter run to end and writes `artifacts/screenshots/sample-<view>-<W>x<H>.png` for the Train tab (curves,
attention strip), the Evaluate tab (top losses, a clicked confusion-matrix cell) and Classify (a top loss sent
there), at 1440x900 and 1024x768. It also prints the model's top losses as words. Close other work first: on two
cores the figures move with the load.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from cxr.train.config import SAMPLE_DATA
from tests.demo_fixtures import start_app, wait_http
from benchmarks.startup import first_classify
from tests.test_browser import ARGS, CHROMIUM, SHOTS


def shoot(page, name: str) -> None:
    for w, h in ((1440, 900), (1024, 768)):
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_timeout(800)
        page.screenshot(path=str(SHOTS / f"sample-{name}-{w}x{h}.png"), full_page=True)


def main(argv: list[str] | None = None) -> int:
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    from cxr.data.index import index_dataset

    args = sys.argv[1:] if argv is None else argv
    data = Path(args[0]) if args else SAMPLE_DATA
    SHOTS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    checkpoints = tempfile.mkdtemp(prefix="cxr-walk-")
    proc, url = start_app(["--data", str(data)], {"CXR_CHECKPOINTS": checkpoints})
    try:
        wait_http(url, proc)
        print(f"server answers after {time.perf_counter() - t0:.1f} s", flush=True)
        first_classify(url, str(index_dataset(data).files[0]))
        print(f"Classify answers (starter model) after {time.perf_counter() - t0:.1f} s", flush=True)
        client = Client(url, verbose=False)
        while (state := client.predict(api_name="/training_status"))["status"] in ("running", "stopping"):
            time.sleep(2)
        print(f"starter run {state['status']} after {time.perf_counter() - t0:.1f} s: {state.get('message', '')}", flush=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(300_000)
            page.goto(url)
            page.get_by_text("not a medical device").wait_for()
            page.get_by_role("tab", name="Train").click()
            page.locator("#attention_step input[type=range]").wait_for()
            shoot(page, "train")
            page.get_by_role("tab", name="Evaluate").click()
            page.locator("#eval_losses img").first.wait_for()
            print("top losses:", page.locator("#eval_losses").inner_text().replace("\n", " | "), flush=True)
            print("summary:", page.locator("#eval_summary").inner_text().replace("\n", " "), flush=True)
            cells = page.locator("#eval_confusion [role=gridcell]").all()
            wrong = [c for c in cells if c.get_attribute("data-col") != "0" and c.inner_text().strip() not in ("", "0")]
            if wrong:
                wrong[0].click()
                page.locator("#eval_cell img").first.wait_for()
            shoot(page, "evaluate")
            page.locator("#eval_losses .thumbnail-item").first.click()
            page.locator("#overlay img").wait_for()
            page.wait_for_timeout(1500)
            print("classify:", page.locator("#probs").inner_text().replace("\n", " "), "|",
                  page.locator("#cam_caption").inner_text().replace("\n", " "), flush=True)
            shoot(page, "classify")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
