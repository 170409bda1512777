"""A real Chromium page through Playwright: what a teacher does in front of a class, click by click.

Uses Debian's Chromium (/usr/bin/chromium); skipped when it or Playwright is missing, unless CXR_REQUIRE_BROWSER=1
(CI sets it, so a broken browser setup fails instead of silently skipping). Screenshots of each tab land in
artifacts/screenshots/ (git-ignored) for a person to look at.
"""

import base64
import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = os.environ.get("CXR_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None
available = sync_playwright is not None and shutil.which(CHROMIUM) is not None
if not available and os.environ.get("CXR_REQUIRE_BROWSER"):
    raise RuntimeError(f"browser tests required but Playwright or {CHROMIUM} is missing")
pytestmark = pytest.mark.skipif(not available, reason=f"Playwright or {CHROMIUM} not installed")


@pytest.fixture(scope="module")
def page(server):
    url, _ = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.set_default_timeout(60_000)
        pg.goto(url)
        expect(pg.get_by_text("not a medical device")).to_be_visible()
        yield pg
        browser.close()


def _drop_file(pg, selector: str, path: Path, mime: str = "image/png") -> None:
    """Drag a file from 'the desktop' onto an element: a real drop event carrying a DataTransfer."""
    data = pg.evaluate_handle(
        """([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            return dt;
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name, mime],
    )
    for kind in ("dragenter", "dragover", "drop"):
        pg.dispatch_event(selector, kind, {"dataTransfer": data})


def test_browse_augmented_samples(page):
    page.get_by_role("tab", name="Data").click()
    first = page.locator("#samples_gallery img").first
    before = first.get_attribute("src")  # the batch the tab opened with
    page.locator("#batch_btn").click()
    expect(first).not_to_have_attribute("src", before)  # the new batch (and its variants) has landed
    expect(page.locator("#samples_gallery img")).to_have_count(12)
    expect(page.locator("#variants_gallery img")).to_have_count(6)
    expect(page.locator("#samples_gallery")).to_contain_text("(synthetic)")
    captions = [c.strip() for c in page.locator("#samples_gallery .caption-label").all_inner_texts()]
    assert len(captions) == 12 and all(captions), captions
    expect(page.locator("#variants_gallery")).to_contain_text(f"original: {captions[0]}")
    k = next((n for n, c in enumerate(captions) if c != captions[0]), 4)  # another class, so the change shows
    page.locator("#samples_gallery img").nth(k).click()  # its original and variants replace the first one's
    expect(page.locator("#variants_gallery")).to_contain_text(f"original: {captions[k]}")
    expect(page.locator("#variants_gallery img")).to_have_count(6)
    page.screenshot(path=str(SHOTS / "data.png"), full_page=True)


def test_train_see_the_curve_grow_and_stop(page, server):
    _, ctx = server
    page.get_by_role("tab", name="Train").click()
    page.locator("#settings_acc").locator("button").first.click()
    page.locator("#max_steps input").fill("0")
    page.locator("#lr input").fill("1e-7")  # too small to reach the target: the run is still going at Stop
    page.locator("#eval_every input[type=number]").fill("1")
    page.locator("#eval_every input[type=number]").press("Enter")
    page.locator("#start_btn").click()
    status = page.locator("#train_status")
    expect(status).to_contain_text("images/s", timeout=120_000)
    expect(page.locator("#stop_btn")).to_be_enabled()
    deadline = time.time() + 120
    while len(ctx.job.snapshot().evaluations) < 2 and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(1.5)  # one timer tick to draw it
    first = page.locator("#loss_plot").screenshot()
    while len(ctx.job.snapshot().evaluations) < 4 and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(1.5)
    second = page.locator("#loss_plot").screenshot()
    assert first != second, "the loss curve did not change between evaluations"
    page.screenshot(path=str(SHOTS / "train-running.png"), full_page=True)
    # A second visitor (a fresh browser context: another student, or the teacher after a refresh) sees the same
    # run live, cannot start another, and can stop it; the first page sees the stop.
    other = page.context.browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        second = other.new_page()
        second.goto(server[0])
        second.get_by_role("tab", name="Train").click()
        expect(second.locator("#train_status")).to_contain_text("images/s", timeout=60_000)
        expect(second.locator("#loss_plot")).to_contain_text("validation loss")
        expect(second.locator("#start_btn")).to_be_disabled()
        second.locator("#stop_btn").click()
        expect(second.locator("#train_status")).to_contain_text("stopped by a user", timeout=120_000)
    finally:
        other.close()
    expect(status).to_contain_text("stopped by a user", timeout=120_000)
    expect(page.locator("#test_metrics")).to_be_visible()
    expect(page.locator("#start_btn")).to_be_enabled()
    page.screenshot(path=str(SHOTS / "train-done.png"), full_page=True)


def test_drag_an_xray_into_classify_and_see_label_and_overlay(page, synthetic_root):
    page.get_by_role("tab", name="Classify").click()
    image = synthetic_root / "COVID" / "images" / "COVID-5.png"
    _drop_file(page, "#upload button.upload-container", image)
    probs = page.locator("#probs")
    expect(probs).to_contain_text("COVID", timeout=60_000)
    expect(probs).to_contain_text("Viral Pneumonia")
    expect(page.locator("#overlay img")).to_have_count(1)
    expect(page.locator("#cam_caption")).to_contain_text("Grad-CAM for")
    # A small upload (this one is 96 px) is drawn to fill the overlay box, so a projector shows it: most of the
    # box's pixels are the image, not the light background around it.
    shot = Image.open(io.BytesIO(page.locator("#overlay").screenshot())).convert("L")
    covered = (np.asarray(shot) < 200).mean()
    assert covered > 0.3, f"the overlay covers only {covered:.0%} of its box"
    page.screenshot(path=str(SHOTS / "classify.png"), full_page=True)


def test_a_file_over_the_upload_limit_is_refused_in_the_page(page, tmp_path):
    page.reload()  # an empty drop box again
    page.get_by_role("tab", name="Classify").click()
    big = tmp_path / "huge-scan.png"
    big.write_bytes(b"\x89PNG" + os.urandom(21 * 2**20))  # over the 20 MB limit: refused before it is sent
    _drop_file(page, "#upload button.upload-container", big)
    expect(page.get_by_text("exceed the maximum allowed size of 20.0 Mb").first).to_be_visible()
