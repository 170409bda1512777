"""Reliability: bad files through the app, bad datasets, corrupt checkpoints, processes killed mid-save and
mid-training, many requests, and the limits a public Space needs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from gradio.utils import get_upload_folder
from PIL import Image

import cxr.train.loop
from cxr.train.checkpoint import load_checkpoint, save_checkpoint
from cxr.train.model import build_model
from cxr.train.events import Done, Step
from cxr.train.loop import fit
from demo import classify_tab
from tests import imagefiles
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------ bad input, through the app
@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(imagefiles.READABLE))
def test_app_classifies_every_readable_format(ctx, tmp_path, kind):
    writer, name = imagefiles.READABLE[kind]
    r = classify_tab.classify(ctx, str(writer(tmp_path / name)), "tiny.pt", "predicted class", 0.5)
    assert len(r.probs) == 3 and r.overlay.dtype == np.uint8 and r.overlay.ndim == 3


def test_app_downscales_a_10000_pixel_square_scan(ctx, tmp_path):
    path = imagefiles.png_huge(tmp_path / "huge.png")
    r = classify_tab.classify(ctx, str(path), "tiny.pt", "predicted class", 0.5)
    assert max(r.overlay.shape[:2]) <= 1024 and len(r.probs) == 3


# ----------------------------------------------------------------------------------------------- bad datasets
def _mixed_dataset(root: Path) -> Path:
    """Every class holds images of different sizes and modes, as real collections do."""
    # (a 1x1 or single-colour image has no content and is refused as such: see test_images_hostile)
    writers = [imagefiles.png_8bit, imagefiles.png_16bit, imagefiles.png_rgba, imagefiles.png_palette,
               imagefiles.jpeg_cmyk, imagefiles.jpeg_exif_rotated]
    for name in ("COVID", "Normal", "Viral Pneumonia"):
        folder = root / name
        folder.mkdir(parents=True)
        for k, writer in enumerate(writers):
            writer(folder / f"{k}{'.jpg' if 'jpeg' in writer.__name__ else '.png'}")
        ramp = np.tile(np.linspace(0, 255, 500, dtype=np.uint8), (120, 1))
        Image.fromarray(np.stack([ramp, ramp // 2, 255 - ramp], axis=2)).save(folder / "wide.png")
    return root


def test_training_copes_with_images_of_different_sizes_and_modes(tmp_path):
    data = _mixed_dataset(tmp_path / "mixed")
    done = list(fit(tiny_config(data, tmp_path / "m.pt", max_steps=2, test_per_class=1, val_per_class=1)))[-1]
    assert isinstance(done, Done) and not done.skipped_files


@pytest.mark.parametrize(
    "setup, words",
    [
        (lambda r: None, "no folder for class"),  # an empty folder
        (lambda r: [(r / n).mkdir() for n in ("COVID", "Normal", "Viral Pneumonia")], "has no images"),
        (lambda r: [_write(r / n, 4) for n in ("COVID", "Normal")], "no folder for class 'viral'"),
        (lambda r: [_write(r / n, 4 if n != "Normal" else 1) for n in ("COVID", "Normal", "Viral Pneumonia")],
         "class 'normal' has 1 image"),
    ],
    ids=["empty folder", "empty classes", "missing class", "class with one image"],
)
def test_bad_datasets_end_with_one_clear_sentence(tmp_path, setup, words):
    root = tmp_path / "data"
    root.mkdir()
    setup(root)
    with pytest.raises(ValueError, match=words):
        next(fit(tiny_config(root, tmp_path / "m.pt")))


def _write(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("L", (32, 32), 20 * i).save(folder / f"{i}.png")


# ----------------------------------------------------------------------------------- checkpoints, interruptions
def test_checkpoint_for_another_class_list_is_refused(synthetic_root, tmp_path):
    four = list(fit(tiny_config(synthetic_root, tmp_path / "four.pt", max_steps=1,
                                classes=("covid", "normal", "viral", "lung_opacity"))))[-1]
    with pytest.raises(ValueError, match="classes"):
        next(fit(tiny_config(synthetic_root, tmp_path / "three.pt", resume=four.checkpoint)))


_SAVER = """
import sys
sys.path.insert(0, {root!r})
from cxr.train.checkpoint import save_checkpoint
from cxr.train.model import build_model
model, _ = build_model(3, "none")
step = 0
while True:
    step += 1
    save_checkpoint({path!r}, model, ("covid", "normal", "viral"), 64, {{}}, {{"step": step}}, step=step)
    print(step, flush=True)
"""


@pytest.mark.slow
def test_a_process_killed_while_saving_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "model.pt"
    interrupted = 0
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER.format(root=str(ROOT), path=str(path))],
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # one save has completed
        time.sleep(0.05 + 0.07 * round_)  # then kill it at varying points of a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        interrupted += any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
        ckpt = load_checkpoint(path)  # whatever moment the kill came, the file is a whole checkpoint
        assert ckpt.classes == ("covid", "normal", "viral") and ckpt.step >= 1
    assert interrupted, "no kill landed mid-save; the test did not exercise what it protects"


@pytest.mark.slow
def test_an_error_in_a_batch_keeps_the_best_checkpoint_and_resume_goes_on(synthetic_root, tmp_path, monkeypatch):
    real, calls = cxr.train.loop.to_model_input, {"n": 0}

    def flaky(*args, **kwargs):
        if len(args) > 1:  # a training batch (evaluation and the attention strip call it without augmentation)
            calls["n"] += 1
            if calls["n"] == 5:
                raise RuntimeError("simulated failure in batch 5")
        return real(*args, **kwargs)

    monkeypatch.setattr(cxr.train.loop, "to_model_input", flaky)
    cfg = tiny_config(synthetic_root, tmp_path / "m.pt", max_steps=20, eval_every=2)
    with pytest.raises(RuntimeError, match="batch 5"):
        list(fit(cfg))
    assert load_checkpoint(tmp_path / "m.pt").step == 4  # the best, from the evaluation at step 4
    last = load_checkpoint(tmp_path / "m-last.pt")
    assert last.step == 4 and last.optimizer is not None
    monkeypatch.setattr(cxr.train.loop, "to_model_input", real)
    events = list(fit(tiny_config(synthetic_root, tmp_path / "r.pt", max_steps=6, resume=str(tmp_path / "m-last.pt"))))
    assert [e.step for e in events if isinstance(e, Step)] == [5, 6]


@pytest.mark.slow
def test_a_killed_training_process_keeps_its_best_checkpoint_and_resumes(synthetic_root, tmp_path):
    out = tmp_path / "run.pt"
    cmd = [sys.executable, "-m", "cxr", "train", "--data", str(synthetic_root), "--weights", "none", "--image-size", "64",
           "--batch-size", "8", "--eval-every", "2", "--max-steps", "1000", "--test-per-class", "3",
           "--val-per-class", "3", "--target-accuracy", "1.0", "--lr", "1e-7", "--out", str(out), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "step" and event["step"] == 5:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    best = load_checkpoint(out)
    assert best.step in (2, 4)
    events = list(fit(tiny_config(synthetic_root, tmp_path / "resumed.pt", max_steps=best.step + 2, resume=str(out))))
    assert events[0].start_step == best.step and isinstance(events[-1], Done)


# ------------------------------------------------------------------------------------------------ many users
def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
def test_many_classify_calls_leak_no_hooks_and_no_memory(ctx, synthetic_root):
    images = sorted((synthetic_root / "COVID" / "images").glob("*.png"))
    model = ctx.classifier("tiny.pt").model

    def burst(n):
        for i in range(n):
            classify_tab.classify(ctx, str(images[i % len(images)]), "tiny.pt", "predicted class", 0.45)

    burst(30)  # warm-up: allocator pools and caches settle
    before = _rss_mb()
    burst(200)
    growth = _rss_mb() - before
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    assert hooks == 0
    assert growth < 40, f"memory grew by {growth:.0f} MB over 200 requests"


def test_checkpoint_names_cannot_reach_outside_the_folder(ctx, tmp_path):
    outside = tmp_path / "outside.pt"
    save_checkpoint(outside, build_model(3, "none")[0], ("covid", "normal", "viral"), 64, {}, {})
    for name in (str(outside), "../outside.pt", "..", ""):
        with pytest.raises(ValueError):
            ctx.checkpoint_path(name)


@pytest.mark.slow
def test_load_script_smoke(tmp_path):
    """tests/loadgen.py end to end with a small class: no errors, memory flat."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.loadgen", "--clients", "4", "--requests", "3",
                           "--memory-requests", "40"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 errors" in proc.stdout and "p95" in proc.stdout and "server memory" in proc.stdout


@pytest.mark.slow
def test_uploads_are_limited_in_size_and_number_and_the_cache_is_trimmed(tmp_path, synthetic_root, trained_checkpoint):
    import httpx
    from gradio_client import Client, handle_file

    from demo.limits import FORGET_AFTER_S
    from demo.ui import build_app, launch_kwargs
    from tests.demo_fixtures import free_port, make_context

    context = make_context(synthetic_root, tmp_path / "ck", trained_checkpoint)
    app = build_app(context)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        url = f"http://127.0.0.1:{port}/"
        client = Client(url, verbose=False)
        big = tmp_path / "big.png"
        big.write_bytes(b"\x89PNG" + os.urandom(65 * 2**20))
        with pytest.raises(ValueError, match="maximum file size"):  # the client reads the page's 64 MB limit
            client.predict(handle_file(str(big)), "tiny.pt", "predicted class", 0.5, api_name="/classify")
        with big.open("rb") as f:  # a caller that ignores it is refused by the server before anything is kept
            r = httpx.post(url + "gradio_api/upload", files={"files": ("big.png", f, "image/png")}, timeout=60)
        assert r.status_code == 413 and "maximum allowed size" in r.text
        scan = tmp_path / "scan.png"
        scan.write_bytes(b"\x89PNG" + os.urandom(21 * 2**20))  # under the page's limit, over an X-ray's
        with pytest.raises(Exception, match="scan.png is 21 MB; X-rays of at most 20 MB are accepted"):
            client.predict(handle_file(str(scan)), "tiny.pt", "predicted class", 0.5, api_name="/classify")
        many = [("files", (f"x{k}.png", b"\x89PNG small", "image/png")) for k in range(5)]
        r = httpx.post(url + "gradio_api/upload", files=many, timeout=60)
        assert r.status_code == 400 and "Too many files" in r.text  # a page never sends more than one at a time
        good = tmp_path / f"upload-{uuid.uuid4().hex}.png"
        shutil.copy(synthetic_root / "Normal" / "images" / "Normal-1.png", good)
        assert client.predict(handle_file(str(good)), "tiny.pt", "predicted class", 0.5, api_name="/classify")[0]
        sent = list(Path(get_upload_folder()).rglob(good.name))
        assert sent  # kept a minute: a classmate may have sent the same file (stored once) and still wait to read it
        context.janitor.trim(now=time.time() + FORGET_AFTER_S + 1)
        assert not any(p.exists() for p in sent)  # then gone
        # A request naming one of the server's own cached files (as the page's galleries are) must not delete it.
        page_image = Path(get_upload_folder()) / uuid.uuid4().hex / "gallery.png"
        page_image.parent.mkdir(parents=True)
        shutil.copy(synthetic_root / "Normal" / "images" / "Normal-2.png", page_image)
        named = {"path": str(page_image), "meta": {"_type": "gradio.FileData"}}
        client.predict(named, "tiny.pt", "predicted class", 0.5, api_name="/classify")
        assert page_image.exists()
        context.janitor.stop()
        context.janitor.full = True  # over the cap: new uploads are refused until the janitor has made room
        r = httpx.post(url + "gradio_api/upload", files={"files": ("x.png", b"\x89PNG small", "image/png")}, timeout=60)
        assert r.status_code == 400 and "upload space is full" in r.text
        context.janitor.full = False
    finally:
        app.close()


def test_the_janitor_keeps_the_pages_files_deletes_read_uploads_later_and_refuses_while_full(tmp_path):
    from demo.limits import FULL, UploadJanitor

    files = []
    for k in range(4):
        path = tmp_path / f"f{k}" / "x.png"
        path.parent.mkdir()
        path.write_bytes(b"0" * 1000)
        os.utime(path, (1000 + k, 1000 + k))
        files.append(path)
    page = {str(files[0]), str(files[1])}  # the images the page was built with; f2, f3: old leftovers
    janitor = UploadJanitor(tmp_path, protected=lambda: page, max_bytes=1500)
    assert sorted(p.parent.name for p in janitor.trim()) == ["f2", "f3"]
    assert files[0].exists() and files[1].exists()
    assert janitor.full and janitor.refusal() == FULL  # the page's own files alone are over this cap: uploads wait
    page.discard(str(files[1]))
    janitor.trim()
    assert not files[1].exists() and not janitor.full and janitor.refusal() == ""
    janitor.forget(str(files[0]), after_s=60)  # a classified upload: deleted a minute later, not at once
    janitor.trim(now=time.time() + 30)
    assert files[0].exists()
    janitor.trim(now=time.time() + 61)
    assert not files[0].exists()


def test_the_upload_cache_is_trimmed_oldest_first(tmp_path):
    from demo.limits import trim_folder

    for k in range(5):
        path = tmp_path / f"u{k}" / "x.png"
        path.parent.mkdir()
        path.write_bytes(b"0" * 1000)
        os.utime(path, (1000 + k, 1000 + k))
    removed, left = trim_folder(tmp_path, 2500)
    assert left == 2000
    assert sorted(p.parent.name for p in removed) == ["u0", "u1", "u2"]
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.png")) == 2000


def test_a_file_input_given_as_a_link_is_refused_not_downloaded(monkeypatch):
    import asyncio

    import gradio as gr
    from gradio import processing_utils

    from demo.limits import NO_LINKS, refuse_links

    fetched = []

    async def network(url):  # stands in for the internet a Space can reach
        fetched.append(url)
        raise AssertionError("the server tried to download the link")

    monkeypatch.setattr(processing_utils, "async_ssrf_protected_get", network)
    monkeypatch.setattr(processing_utils, "async_ssrf_protected_download", processing_utils.async_ssrf_protected_download)
    refuse_links()
    with gr.Blocks():
        box = gr.File(type="filepath")
    forged = {"path": "https://cdn.example.org/huge.bin", "meta": {"_type": "gradio.FileData"}}
    with pytest.raises(ValueError, match=NO_LINKS):
        asyncio.run(processing_utils.async_move_files_to_cache(forged, box, check_in_upload_folder=True))
    assert fetched == []
