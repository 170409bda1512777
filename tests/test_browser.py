"""A real Chromium page through Playwright: what a teacher and the students see in front of a class, click by click.

Uses Debian's Chromium (/usr/bin/chromium); skipped when it or Playwright is missing, unless CXR_REQUIRE_BROWSER=1
(CI sets it, so a broken browser setup fails instead of silently skipping). Every tab is photographed at 1440x900 and
at 1024x768 (a classroom projector) into artifacts/screenshots/ (git-ignored) for a person to look at.

Servers start once per module: `server` (one small model, the one the Classify, Data, Evaluate and Train tests use),
`models_server` (a folder of models with chosen test scores, for the lists of models), `teacher_server` (a teacher
key) and, for the starter model, the real `python app.py` with an empty checkpoints folder. Runs that are not about
the Start button are started over the API, the way a script would.
"""

import base64
import io
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.demo_fixtures import make_context, serve, start_app, wait_http, write_model

CHROMIUM = os.environ.get("CXR_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
DESK, PROJECTOR = (1440, 900), (1024, 768)
SHORT_RUN = dict(preset="fast-cpu", image_size=64, batch_size=8, lr=1e-3, max_steps=4, eval_every=2, weights="none",
                 teacher_key="")
TAB_KEY = "cxr_open_tab"  # where the page keeps the open tab (demo.ui)
LABEL = re.compile(r"^Fast \(CPU\) · (\d\d [A-Z][a-z]{2} )?\d\d:\d\d · test \d+\.\d %$")  # synthetic: said by the banner
# Every event a page sends to the server, read off its own fetch calls: {fn, sent, done} (fn is the gradio dependency
# id, times from performance.now()), in window.cxrEvents. A test that asserts nothing changed waits on these answers
# (see _answered), not on a fixed time that a loaded machine may overrun.
EVENTS_JS = """(() => {
  const events = window.cxrEvents = [], byId = {}, early = {}, realFetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const url = typeof input === "string" ? input : String(input.url || input);
    if (url.includes("/queue/join")) {  // an event sent: its answer comes later on the data stream, by event_id
      const event = {fn: null, sent: performance.now(), done: null};
      try { event.fn = JSON.parse(init.body).fn_index; } catch (e) {}
      events.push(event);
      const response = await realFetch(input, init);
      response.clone().json().then(j => {  // a quick event's answer may come before this does
        byId[j.event_id] = event;
        if (j.event_id in early) event.done = early[j.event_id];
      }, () => {});
      return response;
    }
    const response = await realFetch(input, init);
    if (!url.includes("/queue/data") || !response.body) return response;
    const [mine, page] = response.body.tee();  // read a copy of the stream; the page reads the other
    (async () => {
      const reader = mine.pipeThrough(new TextDecoderStream()).getReader();
      for (let rest = "";;) {
        const {value, done} = await reader.read();
        if (done) return;
        const lines = (rest + value).split("\\n");
        rest = lines.pop();
        for (const line of lines.filter(l => l.startsWith("data:"))) {
          const msg = JSON.parse(line.slice(5));
          if (msg.msg !== "process_completed") continue;
          if (byId[msg.event_id]) byId[msg.event_id].done = performance.now();
          else early[msg.event_id] = performance.now();
        }
      }
    })().catch(() => {});  // the page aborts the stream when it is done with it
    return new Response(page, {status: response.status, statusText: response.statusText, headers: response.headers});
  };
})();"""

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover
    sync_playwright = None
available = sync_playwright is not None and shutil.which(CHROMIUM) is not None
if not available and os.environ.get("CXR_REQUIRE_BROWSER"):
    raise RuntimeError(f"browser tests required but Playwright or {CHROMIUM} is missing")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not available, reason=f"Playwright or {CHROMIUM} not installed")]
if available:
    expect.set_options(timeout=30_000)  # two busy cores: the page's timer and the queue answer in seconds, not ms


# ------------------------------------------------------------------------------------------------ servers
@pytest.fixture(scope="module")
def models_server(synthetic_root, trained_checkpoint, tmp_path_factory):
    """A folder of models a person must tell apart: the best (test 90 %) is older than a worse one (60 %), and a
    resumable -last twin lies beside it. Yields (url, context)."""
    context = make_context(synthetic_root, tmp_path_factory.mktemp("models-ckpt"))
    folder = context.settings.checkpoints_dir
    best = write_model(trained_checkpoint, folder / "resnet18-20250101-090000.pt", 0.90)
    shutil.copy(best, folder / "resnet18-20250101-090000-last.pt")
    worse = write_model(trained_checkpoint, folder / "resnet18-20250101-100000.pt", 0.60)
    for age, path in ((300, best), (300, folder / "resnet18-20250101-090000-last.pt"), (100, worse)):
        os.utime(path, (time.time() - age, time.time() - age))
    with serve(context) as url:
        yield url, context


@pytest.fixture(scope="module")
def teacher_server(synthetic_root, trained_checkpoint, tmp_path_factory):
    """The app started with the teacher key "k3y". Yields (url, context)."""
    from demo.auth import digest_key
    from demo.context import AppContext

    plain = make_context(synthetic_root, tmp_path_factory.mktemp("teacher-ckpt"), trained_checkpoint)
    with serve(AppContext(replace(plain.settings, teacher_key_digest=digest_key("k3y")))) as url:
        yield url, plain


@pytest.fixture
def offline(monkeypatch):
    """No download can succeed, whatever network the machine has: weights "auto" must fall back to random."""
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# ------------------------------------------------------------------------------------------------ pages
@pytest.fixture(scope="module")
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def visit(browser):
    """visit(url, tab, size): a new visitor (own browser storage) with `tab` open; closed after the test."""
    contexts = []

    def open_page(url: str, tab: str = "Data", size: tuple[int, int] = DESK):
        context = browser.new_context(viewport={"width": size[0], "height": size[1]}, accept_downloads=True)
        context.add_init_script(EVENTS_JS)
        contexts.append(context)
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(url)
        expect(pg.get_by_text("not a medical device")).to_be_visible(timeout=120_000)
        # The page reopens the tab a visitor had open once its load event is served, and the browser stores the
        # open tab (encrypted) when it is. Click the tab, wait until the stored tab changes, and reload: the page
        # then opens on that tab, and no late restore can move it after this returns.
        pg.wait_for_function(f"() => localStorage.getItem('{TAB_KEY}') !== null")
        if tab != "Data":
            stored = pg.evaluate(f"() => localStorage.getItem('{TAB_KEY}')")
            pg.get_by_role("tab", name=tab).click()
            pg.wait_for_function(f"s => localStorage.getItem('{TAB_KEY}') !== s", arg=stored)
            pg.reload()
        expect(pg.get_by_role("tab", name=tab)).to_have_attribute("aria-selected", "true")
        return pg

    yield open_page
    for context in contexts:
        context.close()


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


def _classify_image(pg, image: Path) -> None:
    _drop_file(pg, "#upload button.upload-container", image)
    expect(pg.locator("#probs")).to_contain_text("Viral Pneumonia", timeout=120_000)
    expect(pg.locator("#cam_caption")).to_contain_text("Grad-CAM for")


def _options(pg, dropdown: str) -> list[str]:
    """The labels a dropdown offers, read as a visitor does: open it, read, close it."""
    pg.locator(f"{dropdown} input").click()
    labels = [o.get_attribute("aria-label") for o in pg.locator(f"{dropdown} [role=option]").all()]
    pg.keyboard.press("Escape")
    pg.locator(f"{dropdown} input").blur()  # a dropdown opens on focus: leave it unfocused for the next click
    return labels


def _pick(pg, dropdown: str, label: str) -> None:
    pg.locator(f"{dropdown} input").click()
    pg.locator(f"{dropdown} [role=option][aria-label='{label}']").click()
    pg.locator(f"{dropdown} input").blur()


def _label(ctx, name: str) -> str:
    return next(m.label for m in ctx.models() if m.name == name)


def _add_model(folder: Path, source: Path, test_accuracy: float, name: str) -> Path:
    """A model lands in the folder as training saves it: written aside, then renamed into place."""
    aside = write_model(source, folder / f"{name}.part", test_accuracy)
    return aside.rename(folder / name)


def _loaded(pg, images: str) -> None:
    """Wait until every image matching `images` has been fetched and decoded (a gallery loads lazily)."""
    pg.wait_for_function("s => [...document.querySelectorAll(s)].every(i => i.complete && i.naturalWidth > 0)",
                         arg=images)


def _sent(pg) -> int:
    """How many events the page has sent so far: the mark `_answered` counts from."""
    return pg.evaluate("() => window.cxrEvents.length")


def _answered(pg, mark: int, own: bool = True) -> None:
    """Wait until every event the page sent since `mark` is answered, then a tick of the page's timer sent after those
    answers is answered too: by then the handlers an action started have run, their .then steps included, and a timer
    tick has had its say. `own`: the action must have sent an event of its own (not only ticks)."""
    try:
        _wait_answered(pg, mark, own)
    except PlaywrightTimeout:
        events = pg.evaluate("m => window.cxrEvents.slice(m)", mark)
        names = {d["id"]: d["targets"] for d in pg.evaluate("() => window.gradio_config.dependencies")}
        raise AssertionError("events unanswered or no timer tick after them: " + "; ".join(
            f"{names.get(e['fn'])} sent {e['sent']:.0f} ms, answered {e['done']}" for e in events[-12:])) from None


def _wait_answered(pg, mark: int, own: bool) -> None:
    pg.wait_for_function("""([mark, own]) => {
        const ticks = new Set(window.gradio_config.dependencies
                                .filter(d => d.targets.some(t => t[1] === "tick")).map(d => d.id));
        const since = window.cxrEvents.slice(mark), mine = since.filter(e => !ticks.has(e.fn));
        if ((own && !mine.length) || mine.some(e => e.done === null)) return false;
        const last = Math.max(-Infinity, ...mine.map(e => e.done));
        return since.some(t => ticks.has(t.fn) && t.sent > last && t.done !== null
                               && since.every(e => e.sent > t.sent || e.done !== null));
    }""", arg=[mark, own])


def _changed(locator, before: bytes, timeout: float = 60.0) -> bytes:
    """Wait until the element looks different from `before` (a screenshot); return its new look."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = locator.screenshot()
        if now != before:
            return now
        time.sleep(0.3)
    raise AssertionError(f"{locator} did not change within {timeout:.0f} s")


def _screenshots(pg, name: str) -> None:
    """The page at the desk and at the projector size, top of the open tab first, whole page."""
    size = pg.viewport_size
    for w, h in (DESK, PROJECTOR):
        pg.set_viewport_size({"width": w, "height": h})
        pg.wait_for_timeout(500)  # one layout pass at the new width
        pg.screenshot(path=str(SHOTS / f"{name}-{w}x{h}.png"), full_page=True)
    pg.set_viewport_size(size)


# ------------------------------------------------------------------------------------------------ training
def _client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def _wait_run(url: str, until=lambda s: s["status"] in ("done", "failed", "idle"), timeout: float = 600.0) -> dict:
    """Poll `/training_status` until `until(status)`; the status."""
    app, deadline = _client(url), time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = app.predict(api_name="/training_status")
        if until(status):
            return status
        time.sleep(0.5)
    raise AssertionError(f"the run did not get there within {timeout:.0f} s: {status['text']}")


def _train(url: str, **settings) -> dict:
    """Start a short run over the API once nothing is running; wait for its end; the final status."""
    _wait_run(url, lambda s: s["status"] not in ("running", "stopping"))
    _client(url).predict(**{**SHORT_RUN, **settings}, api_name="/start_training")
    status = _wait_run(url)
    assert status["status"] == "done", status["text"]
    return status


# ================================================================================================ Classify: models
def test_download_serves_the_chosen_model_to_a_new_visitor(visit, models_server):
    url, ctx = models_server
    page = visit(url, "Classify")  # the first visitor: the default model is the one of when the server started
    chosen = page.locator("#checkpoint input").input_value()
    name = next(m.name for m in ctx.models() if m.label == chosen)
    page.locator("#model_files").get_by_text("Model files").click()
    with page.expect_download(timeout=20_000) as download:
        page.locator("#download_model").click()
    assert download.value.suggested_filename == name
    assert Path(download.value.path()).read_bytes() == (ctx.settings.checkpoints_dir / name).read_bytes()


def test_classify_lists_a_model_saved_after_the_page_opened_whichever_tab_is_open(visit, models_server,
                                                                                  trained_checkpoint):
    url, ctx = models_server
    folder = ctx.settings.checkpoints_dir
    page = visit(url, "Classify")  # opens on Classify, never visits Train
    _options(page, "#checkpoint")
    page.locator("#checkpoint input").click()  # the list stays open while the model lands
    _add_model(folder, trained_checkpoint, 0.311, "resnet18-20250102-090000.pt")
    new = page.locator(f"#checkpoint [role=option][aria-label='{_label(ctx, 'resnet18-20250102-090000.pt')}']")
    expect(new).to_have_count(1, timeout=2_000)
    page.keyboard.press("Escape")

    page.get_by_role("tab", name="Data").click()
    _add_model(folder, trained_checkpoint, 0.322, "resnet18-20250102-100000.pt")
    _answered(page, _sent(page), own=False)  # a tick of the page's timer since the model landed
    page.get_by_role("tab", name="Classify").click()
    assert _label(ctx, "resnet18-20250102-100000.pt") in _options(page, "#checkpoint")


def test_models_are_labelled_apart_and_a_new_visitor_starts_on_the_best(visit, models_server, trained_checkpoint):
    url, ctx = models_server
    folder = ctx.settings.checkpoints_dir
    page = visit(url, "Classify")
    files = [p for p in folder.glob("*.pt") if not p.stem.endswith("-last")]  # a resumable twin is no model
    # The page was built before the last test's models landed: its load event brings the list up to date, and the
    # tab is restored in the browser without waiting for it.
    deadline = time.monotonic() + 10
    while len(labels := _options(page, "#checkpoint")) < len(files) and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert all(LABEL.match(label) for label in labels), labels
    assert len(set(labels)) == len(labels) == len(files), labels
    best, worse = _label(ctx, "resnet18-20250101-090000.pt"), _label(ctx, "resnet18-20250101-100000.pt")
    assert "test 90.0 %" in best and labels.index(best) > labels.index(worse)  # the best, though not the newest
    expect(page.locator("#checkpoint input")).to_have_value(best)

    # This visitor picks the worse model; a newer, better one lands: the list grows, the choice stays.
    _pick(page, "#checkpoint", worse)
    _add_model(folder, trained_checkpoint, 0.95, "resnet18-20250103-090000.pt")
    newest = _label(ctx, "resnet18-20250103-090000.pt")
    deadline = time.monotonic() + 10
    while newest not in _options(page, "#checkpoint") and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    _answered(page, _sent(page), own=False)  # another tick of the page's timer
    expect(page.locator("#checkpoint input")).to_have_value(worse)
    expect(visit(url, "Classify").locator("#checkpoint input")).to_have_value(newest)  # a new visitor: the best


def test_an_added_model_file_joins_the_list_and_a_fake_one_is_refused_in_a_sentence(visit, models_server,
                                                                                   trained_checkpoint, tmp_path):
    url, _ = models_server
    page = visit(url, "Classify")
    page.locator("#model_files").get_by_text("Model files").click()
    mine = write_model(trained_checkpoint, tmp_path / "trained-at-home.pt", 0.777)
    page.locator("#add_model input[type=file]").set_input_files(mine)
    expect(page.locator("#add_model_status")).to_contain_text("Added the model as", timeout=60_000)
    _answered(page, _sent(page), own=False)  # a tick of the page's timer
    assert any("test 77.7 %" in label for label in _options(page, "#checkpoint"))

    fake = tmp_path / "notes.pt"
    fake.write_text("my notes from the lecture, not a model\n")
    page = visit(url, "Classify")
    page.locator("#model_files").get_by_text("Model files").click()
    page.locator("#add_model input[type=file]").set_input_files(fake)
    toast = page.locator(".toast-body")
    expect(toast).to_be_visible(timeout=60_000)
    message = toast.first.inner_text().strip()
    assert re.fullmatch(r"[^.]+\.?", message), message  # one sentence, no traceback


def test_opening_the_dropdowns_before_an_image_shows_no_error(visit, models_server):
    url, _ = models_server
    page = visit(url, "Classify")
    labels = _options(page, "#checkpoint")
    mark = _sent(page)
    _pick(page, "#checkpoint", labels[-1])
    _pick(page, "#target", "predicted class")
    _answered(page, mark)  # every handler the two picks started has answered
    expect(page.locator(".toast-body")).to_have_count(0)
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)


# ================================================================================================ the teacher
def test_only_the_teacher_key_unlocks_start_and_the_key_never_reaches_the_page(visit, teacher_server):
    url, _ = teacher_server
    page = visit(url, "Train")
    expect(page.locator("#start_btn")).to_be_disabled()
    expect(page.locator("#who_may_train")).to_contain_text("Only the teacher can start or stop a run")
    expect(page.locator("#preset input").first).to_be_disabled()  # the teacher's settings: shown, not editable
    expect(page.locator("#train_status")).to_contain_text("when the teacher starts a run")
    key = page.locator("#teacher_key input")
    key.fill("guess")
    mark = _sent(page)
    key.press("Enter")
    expect(page.locator("#who_may_train")).to_contain_text("That is not the teacher key")
    _answered(page, mark)  # the key's handler and a timer tick after it: neither unlocked Start
    expect(page.locator("#start_btn")).to_be_disabled()
    _screenshots(page, "train-student")
    key.fill("k3y")
    key.press("Enter")
    expect(page.locator("#who_may_train")).to_contain_text("Teacher mode")
    expect(page.locator("#start_btn")).to_be_enabled(timeout=10_000)
    expect(page.locator("#preset input").first).to_be_enabled()
    expect(page.locator("#train_status")).to_contain_text("Choose settings and press Start")
    assert "k3y" not in page.content()
    # A reload of the same browser tab keeps teacher mode; another visitor's page does not get it.
    page.reload()
    expect(page.locator("#who_may_train")).to_contain_text("Teacher mode", timeout=30_000)
    expect(page.locator("#start_btn")).to_be_enabled(timeout=10_000)
    expect(page.locator("#preset input").first).to_be_enabled()
    stored = page.evaluate("() => JSON.stringify(sessionStorage)")
    assert "k3y" not in stored and "k3y" not in page.content()  # the tab keeps a token that expires, not the key
    other = visit(url, "Train")
    _answered(other, 0)  # the new page's load events (the key's recall among them) and a timer tick after them
    expect(other.locator("#start_btn")).to_be_disabled()
    expect(other.locator("#who_may_train")).to_contain_text("Only the teacher can start or stop a run")


# ================================================================================================ a model from minute one
@pytest.fixture(scope="module")
def starter_app(synthetic_root, tmp_path_factory):
    """`python app.py --data SYNTHETIC` with an empty checkpoints folder (the starter is on by default)."""
    tmp = tmp_path_factory.mktemp("starter")
    proc, url = start_app(["--data", str(synthetic_root)], {
        "CXR_CHECKPOINTS": str(tmp / "checkpoints"), "TORCH_HOME": str(tmp / "torch-home"),
        "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "127.0.0.1,localhost"})
    try:
        wait_http(url, proc, timeout=240)
        yield url
    finally:
        try:
            _client(url).predict(teacher_key="", api_name="/stop_training")
        except Exception:  # already gone: terminating it below is all that is left to do
            pass
        proc.terminate()
        proc.wait(60)


def test_classify_says_the_starter_is_training_then_classifies_with_it(visit, starter_app, synthetic_root):
    page = visit(starter_app, "Classify")
    expect(page.locator("#no_checkpoint")).to_contain_text("starter model is training")
    expect(page.locator("#examples")).to_be_hidden()  # no model, so no "examples from this model's test set"
    _screenshots(page, "classify-starter")
    expect(page.locator("#no_checkpoint")).to_be_hidden(timeout=600_000)  # its first checkpoint has landed
    expect(page.locator("#checkpoint input")).not_to_have_value("", timeout=10_000)
    _classify_image(page, synthetic_root / "Normal" / "images" / "Normal-3.png")
    expect(page.locator("#overlay img")).to_have_count(1)


def test_an_xray_dropped_before_any_model_is_classified_when_one_lands(visit, synthetic_root, trained_checkpoint,
                                                                         tmp_path):
    context = make_context(synthetic_root, tmp_path / "no-model-yet")  # no starter run: the test says when one lands
    with serve(context) as url:
        page = visit(url, "Classify")
        expect(page.locator("#no_checkpoint")).to_contain_text("No trained model yet")
        _drop_file(page, "#upload button.upload-container", synthetic_root / "COVID" / "images" / "COVID-1.png")
        expect(page.locator("#cam_caption")).to_contain_text("Waiting for the first model")
        expect(page.locator(".toast-body.info")).to_contain_text("No trained model yet")  # a notice, not an error
        expect(page.locator(".toast-body.error")).to_have_count(0)
        _screenshots(page, "classify-waiting")
        _add_model(context.settings.checkpoints_dir, trained_checkpoint, 0.9, "resnet18-20250105-090000.pt")
        expect(page.locator("#probs")).to_contain_text("Viral Pneumonia", timeout=60_000)  # no second drop needed
        expect(page.locator("#cam_caption")).to_contain_text("Grad-CAM for")
        expect(page.locator("#upload button.upload-container")).to_be_visible()  # emptied for the next X-ray
        expect(page.locator("#examples")).to_be_visible()


# ================================================================================================ Classify: one X-ray
def test_prediction_and_overlay_fit_on_a_projector_without_scrolling(visit, server, synthetic_root):
    url, _ = server
    page = visit(url, "Classify", PROJECTOR)
    _classify_image(page, synthetic_root / "COVID" / "images" / "COVID-5.png")
    expect(page.locator("#overlay img")).to_have_count(1)
    page.locator("[role=tabpanel]:visible").evaluate("panel => panel.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(SHOTS / "classify-projector-view-1024x768.png"))
    for part in ("#probs .output-class", "#probs .confidence-set >> nth=0", "#overlay img"):
        box = page.locator(part).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= PROJECTOR[1], (part, box)
    expect(page.locator("#colour_bar [role=img]")).to_be_in_viewport()
    badges = page.locator("#overlay [data-testid=block-label]").evaluate_all(
        "labels => labels.filter(l => l.offsetWidth > 1 && l.offsetHeight > 1 && l.innerText.trim())")
    assert badges == [], "a label badge covers the overlay"
    # A small upload (this one is 64 px) fills the overlay box: most of the box's pixels are the image.
    shot = Image.open(io.BytesIO(page.locator("#overlay").screenshot())).convert("L")
    assert (np.asarray(shot) < 200).mean() > 0.3
    _screenshots(page, "classify")


def test_clicking_an_example_below_the_results_brings_the_probabilities_into_view(visit, server):
    url, _ = server
    page = visit(url, "Classify")  # 1440 x 900: the examples lie under the fold, the results above them
    example = page.locator("#examples .thumbnail-item").first
    example.scroll_into_view_if_needed()
    expect(page.locator("#probs")).not_to_be_in_viewport()
    example.click()
    expect(page.locator("#cam_caption")).to_contain_text("Grad-CAM for", timeout=120_000)
    for part in ("#probs .output-class", "#overlay img"):
        box = page.locator(part).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= DESK[1], (part, box)
    page.screenshot(path=str(SHOTS / "classify-example-clicked-view-1440x900.png"))


def test_opacity_slider_redraws_the_overlay_from_the_keyboard(visit, server, synthetic_root):
    url, _ = server
    page = visit(url, "Classify")
    _classify_image(page, synthetic_root / "Normal" / "images" / "Normal-2.png")
    _loaded(page, "#overlay img")
    before = page.locator("#overlay img").screenshot()
    page.locator("#alpha input[type=range]").focus()
    for _ in range(4):
        page.keyboard.press("ArrowLeft")
    _changed(page.locator("#overlay img"), before, timeout=30)


def test_a_reload_returns_to_the_tab_that_was_open(visit, server):
    url, _ = server
    page = visit(url, "Classify")  # chosen by clicking, remembered, then reloaded
    page.reload()
    expect(page.get_by_role("tab", name="Classify")).to_have_attribute("aria-selected", "true", timeout=30_000)
    expect(page.locator("#upload")).to_be_visible()


def test_a_file_over_the_upload_limit_is_refused_in_the_page(visit, server, tmp_path):
    url, _ = server
    page = visit(url, "Classify")
    big = tmp_path / "huge-scan.png"
    big.write_bytes(b"\x89PNG" + os.urandom(21 * 2**20))  # over the 20 MB an X-ray may have
    _drop_file(page, "#upload button.upload-container", big)
    expect(page.locator(".toast-body")).to_contain_text("X-rays of at most 20 MB are accepted", timeout=120_000)


def test_a_file_that_is_no_image_empties_the_result_under_one_sentence(visit, server, synthetic_root, tmp_path):
    url, _ = server
    page = visit(url, "Classify", PROJECTOR)
    _classify_image(page, synthetic_root / "COVID" / "images" / "COVID-5.png")
    expect(page.locator("#overlay img")).to_have_count(1)
    expect(page.locator("#upload button.upload-container")).to_be_visible()  # the box emptied for the next drop
    notes = tmp_path / "notes.png"
    notes.write_text("not an X-ray")
    _drop_file(page, "#upload button.upload-container", notes)
    expect(page.locator(".toast-body")).to_contain_text("is not an image this app can read", timeout=120_000)
    expect(page.locator("#cam_caption")).to_contain_text("Nothing classified", timeout=30_000)
    expect(page.locator("#overlay img")).to_have_count(0)  # the last X-ray's result is gone, not left beside notes.png
    expect(page.locator("#upload button.upload-container")).to_be_visible()  # and notes.png left the box with it
    for part in ("#overlay", "#probs", "#target", "#cam_caption"):  # no panel left showing "Error"
        expect(page.locator(f"{part} .error")).to_have_count(0)
    _screenshots(page, "classify-refused")


def test_the_explanation_methods_compare_side_by_side_with_a_random_model(visit, server, synthetic_root):
    url, _ = server
    page = visit(url, "Classify")
    _classify_image(page, synthetic_root / "COVID" / "images" / "COVID-5.png")
    page.locator("#explain_panel").get_by_text("Compare explanation methods").click()
    button = page.locator("#compare_methods")
    expect(button).to_contain_text("about")  # the expected time on this machine, before it runs
    button.click()
    gallery = page.locator("#methods_gallery img")
    expect(gallery).to_have_count(6, timeout=180_000)  # three methods, each beside the random model's map
    captions = page.locator("#methods_gallery .caption-label").all_inner_texts()
    for name in ("Grad-CAM", "Integrated Gradients", "Occlusion"):
        assert any(name in c for c in captions), (name, captions)
    verdict = page.locator("#methods_verdict")  # the sanity check in plain words (cxr.explain.sanity.sanity_words)
    expect(verdict).to_contain_text(re.compile(r"random-weights map|no evidence"))
    assert not re.search(r"\bnan\b|rank correlation", verdict.inner_text()), verdict.inner_text()
    _loaded(page, "#methods_gallery img")
    for img in gallery.all():  # both rows in full: no map cut off by the gallery's own scrolling
        box, frame = img.bounding_box(), page.locator("#methods_gallery").bounding_box()
        assert box["y"] + box["height"] <= frame["y"] + frame["height"] + 1, (box, frame)
    page.locator("#explain_panel").scroll_into_view_if_needed()
    _screenshots(page, "classify-methods")


# ================================================================================================ Data
def test_augmentation_switches_redraw_the_samples_and_hiding_blacks_out_the_lungs(visit, server):
    url, _ = server
    page = visit(url, "Data")
    expect(page.locator("#data_biases")).to_contain_text("children")
    expect(page.locator("#samples_gallery img")).to_have_count(12)
    expect(page.locator("#variants_gallery img")).to_have_count(6)
    first = page.locator("#samples_gallery img").first
    _loaded(page, "#samples_gallery img")
    before = first.screenshot()
    page.locator("#aug_box").get_by_text("rotate").click()  # one switch flipped (rotation, off in the Fast preset): the main gallery is redrawn too
    before = _changed(first, before)
    for gallery in ("#samples_gallery", "#variants_gallery"):  # every row shows, no scrollbar inside
        inner = page.locator(gallery).evaluate(
            """g => [g, ...g.querySelectorAll('*')].filter(e => /(auto|scroll)/.test(getComputedStyle(e).overflowY)
                                                          && e.scrollHeight > e.clientHeight + 2).length""")
        assert inner == 0, f"{gallery} scrolls inside"
        gap = page.locator(gallery).evaluate(  # and no band of empty space under the last row
            """g => g.getBoundingClientRect().bottom - Math.max(...[...g.querySelectorAll('img')].map(
                       i => i.getBoundingClientRect().bottom))""")
        assert gap < 40, f"{gallery} has {gap:.0f} px of empty space under its thumbnails"
    _screenshots(page, "data")

    page.locator("#hide_preview").get_by_text("lungs hidden: central box").click()
    _changed(first, before)
    for _ in range(20):  # the new picture may still be loading when it first differs from the old one
        _loaded(page, "#samples_gallery img")
        pixels = np.asarray(Image.open(io.BytesIO(first.screenshot())).convert("L"), dtype=float)
        h, w = pixels.shape
        centre = pixels[int(h * 0.4):int(h * 0.6), int(w * 0.4):int(w * 0.6)]
        if h > 80 and centre.mean() < 20:
            break
        page.wait_for_timeout(500)
    assert centre.mean() < 20, f"the middle of the sample is not black (mean grey {centre.mean():.0f}, {w}x{h} px)"
    page.screenshot(path=str(SHOTS / "data-lungs-hidden-1440x900.png"), full_page=True)


# ================================================================================================ Evaluate
def test_evaluate_opens_matrix_cells_and_sends_a_top_loss_to_classify(visit, server):
    url, _ = server
    page = visit(url, "Evaluate")
    expect(page.locator("#eval_losses img").first).to_be_visible(timeout=180_000)
    cells = page.locator("#eval_confusion [role=gridcell]")
    expect(cells.first).to_be_visible()
    cell = next(c for c in cells.all() if c.get_attribute("data-col") != "0" and c.inner_text().strip() != "0")
    count = int(cell.inner_text())
    cell.click()
    expect(page.locator("#eval_cell_caption")).to_contain_text("the model called", timeout=60_000)
    expect(page.locator("#eval_cell img")).to_have_count(min(count, 24))
    _screenshots(page, "evaluate")

    page.locator("#eval_losses .thumbnail-item").first.click()
    expect(page.get_by_role("tab", name="Classify")).to_have_attribute("aria-selected", "true", timeout=60_000)
    expect(page.locator("#probs")).to_contain_text("Viral Pneumonia", timeout=60_000)
    expect(page.locator("#overlay img")).to_have_count(1)


# ================================================================================================ Train
def test_curves_show_from_the_first_evaluation_with_no_progress_timer(visit, server, offline):
    url, _ = server
    _wait_run(url, lambda s: s["status"] not in ("running", "stopping"))
    page = visit(url, "Train")
    page.evaluate("""() => {  // record every progress timer a person could see on the status line
        window.timerSeen = [];
        new MutationObserver(() => {
            for (const t of document.querySelectorAll('#train_status [data-testid=status-tracker]')) {
                const shown = getComputedStyle(t).opacity !== '0' && t.getBoundingClientRect().height > 0;
                if (shown && /\\d+\\.\\d+\\s?s\\b/.test(t.innerText)) window.timerSeen.push(t.innerText);
            }
        }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
    }""")
    before = page.locator("#curves img").get_attribute("src")
    page.locator("#settings_acc").locator("button").first.click()
    for field, value in (("image_size", "64"), ("batch_size", "8"), ("max_steps", "4"), ("eval_every", "2")):
        box = page.locator(f"#{field} input[type=number]")
        box.fill(value)
        box.press("Enter")
    page.locator("#start_btn").click()
    _wait_run(url, lambda s: len(s["evaluations"]) >= 1)
    expect(page.locator("#curves img")).not_to_have_attribute("src", before, timeout=30_000)
    # With the settings open the curves start far below the fold; Start scrolls the status line and them into view.
    top = page.evaluate("() => document.querySelector('#curves').getBoundingClientRect().top")
    assert 0 <= top < page.viewport_size["height"] / 2, f"the curves start {top:.0f} px down the window"
    page.screenshot(path=str(SHOTS / "train-started-view-1440x900.png"))  # what the window shows, not the page
    assert "0.000000" not in page.locator("#curves").inner_text()
    expect(page.locator("#train_status")).to_contain_text("Finished", timeout=600_000)
    expect(page.locator("#test_metrics")).to_be_visible()
    seen = page.evaluate("window.timerSeen")
    assert seen == [], f"a progress timer showed on the status line: {sorted(set(seen))[:5]}"
    _screenshots(page, "train")


def test_a_run_that_fell_back_to_random_weights_says_so_and_the_presets_fit_the_machine(visit, server, offline):
    import torch

    url, _ = server
    gpu = torch.cuda.is_available()
    page = visit(url, "Train")
    expect(page.locator("#preset label")).to_have_text(["Fast (CPU)", "Recipe"] + (["GPU"] if gpu else []))
    if not gpu:
        expect(page.locator("#preset")).to_contain_text("No GPU preset: this server has no CUDA GPU")
    _wait_run(url, lambda s: s["status"] not in ("running", "stopping"))
    _client(url).predict(**{**SHORT_RUN, "weights": "auto", "max_steps": 0, "lr": 1e-7}, api_name="/start_training")
    warning = page.locator("#weights_warning")
    expect(warning).to_be_visible(timeout=120_000)
    expect(warning).to_contain_text("Training from random weights")
    expect(page.locator("#train_status")).to_contain_text(" on cuda" if gpu else " on cpu", timeout=120_000)
    _client(url).predict(teacher_key="", api_name="/stop_training")
    _wait_run(url, lambda s: s["status"] not in ("running", "stopping"))


def test_a_run_started_elsewhere_shows_live_and_any_page_can_stop_it(visit, server):
    url, _ = server
    _wait_run(url, lambda s: s["status"] not in ("running", "stopping"))
    _client(url).predict(**{**SHORT_RUN, "max_steps": 0, "lr": 1e-7}, api_name="/start_training")  # by someone else
    page = visit(url, "Train")
    expect(page.locator("#train_status")).to_contain_text("images/s", timeout=120_000)
    expect(page.locator("#start_btn")).to_be_disabled()  # one run at a time
    page.locator("#stop_btn").click()
    expect(page.locator("#train_status")).to_contain_text("stopped by a user", timeout=120_000)
    expect(page.locator("#start_btn")).to_be_enabled()


def test_a_run_from_chosen_random_weights_shows_no_fallback_warning(visit, server):
    url, _ = server
    _train(url)  # weights "none": random on purpose, nothing to fix
    page = visit(url, "Train")
    expect(page.locator("#train_status")).to_contain_text("random weights")
    _answered(page, 0)  # the page's load events and a timer tick after them
    expect(page.locator("#weights_warning")).to_be_hidden()


def test_attention_strip_scrubs_through_a_finished_run(visit, server):
    url, _ = server
    _train(url)
    page = visit(url, "Train")
    slider = page.locator("#attention_step input[type=range]")
    expect(slider).to_be_visible(timeout=30_000)
    strip = page.locator("#attention_strip")
    expect(strip).to_contain_text("Where the model looks at step 4")
    slider.focus()
    page.keyboard.press("Home")
    expect(strip).to_contain_text("Where the model looks at step 2", timeout=30_000)


def test_hiding_the_lungs_ends_with_the_shortcut_lesson(visit, server):
    url, ctx = server
    done = _train(url, hide_lungs="box")["done"]
    page = visit(url, "Train")
    status = page.locator("#train_status")
    expect(status).to_contain_text("With the lungs hidden")
    expect(status).to_contain_text("chance is")
    expect(status).to_contain_text("(Compare explanation methods")  # where to see what it used instead
    expect(status).to_contain_text("opens under the overlay")
    expect(page.locator("#attention_note")).to_contain_text("never saw the region inside the magenta line")
    _screenshots(page, "train-lungs-hidden")
    classify = visit(url, "Classify")  # where the status sends the class: the methods panel opens for this model
    _pick(classify, "#checkpoint", _label(ctx, done["checkpoint"]))
    expect(classify.locator("#compare_methods")).to_be_visible()
