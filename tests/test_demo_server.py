"""The running server, through gradio_client: what a Space's API users and the browser both rely on."""

import time

import pytest
from gradio_client import Client, handle_file


@pytest.fixture(scope="module")
def client(server):
    url, _ = server
    return Client(url, verbose=False)


def test_classify_an_image_over_http(client, synthetic_root):
    image = synthetic_root / "Viral Pneumonia" / "images" / "Viral Pneumonia-2.png"
    probs, overlay, caption, _targets = client.predict(
        handle_file(str(image)), "tiny.pt", "predicted class", 0.5, api_name="/classify")
    assert probs["label"] in ("COVID", "Normal", "Viral Pneumonia")
    assert {c["label"] for c in probs["confidences"]} == {"COVID", "Normal", "Viral Pneumonia"}
    assert overlay and "Grad-CAM for" in caption


def test_a_bad_upload_is_one_sentence_and_the_server_keeps_going(client, tmp_path, synthetic_root):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(bad)), "tiny.pt", "predicted class", 0.5, api_name="/classify")
    good = synthetic_root / "COVID" / "images" / "COVID-2.png"
    assert client.predict(handle_file(str(good)), "tiny.pt", "predicted class", 0.5, api_name="/classify")[0]["label"]


def test_new_batch_over_http(client):
    gallery, compare = client.predict(["hflip", "rotate"], api_name="/new_batch")  # State is not sent
    assert len(gallery) == 12 and len(compare) == 6


def test_start_watch_and_stop_a_training_run(client, server):
    _, ctx = server
    # a learning rate too small to reach the target, so the run is still going when we press Stop
    settings = ("fast-cpu", 64, 8, 1e-7, 50, 0, 1, 0.99, "none", ["hflip"], "none", 0)
    assert "Starting" in client.predict(*settings, api_name="/start_training")
    with pytest.raises(Exception, match="already going"):
        client.predict(*settings, api_name="/start_training")
    deadline, seen, status = time.time() + 120, -1, ""
    while time.time() < deadline:
        status, loss, *_rest, seen = client.predict(seen, api_name="/poll")
        points = [row for row in (loss or {}).get("data", []) if isinstance(row[1], (int, float)) and row[1] == row[1]]
        if points:  # rows with a real (not NaN placeholder) loss: an evaluation has landed
            break
        time.sleep(0.5)
    assert "Training" in status and "images/s" in status, status
    assert len(points) >= 2  # a training and a validation point: the curve has begun
    client.predict(api_name="/stop_training")
    assert ctx.job.wait(60)
    status = client.predict(-1, api_name="/poll")[0]
    assert "Finished" in status and "stopped by a user" in status
