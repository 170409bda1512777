"""The batching inference worker: answers equal one-at-a-time answers, whatever arrives together."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from cxr.predict import Classifier
from demo.inference import InferenceQueue, _batches, _Request


def _inputs(clf: Classifier, synthetic_root, n: int) -> list[torch.Tensor]:
    files = sorted((synthetic_root / "COVID" / "images").glob("*.png"))[:n // 2] + \
        sorted((synthetic_root / "Normal" / "images").glob("*.png"))[:n - n // 2]
    return [clf.model_input(clf.predict(f).image) for f in files]


def test_a_batch_gives_each_image_the_answer_it_gets_alone(trained_checkpoint, synthetic_root):
    clf = Classifier(trained_checkpoint)
    xs = _inputs(clf, synthetic_root, 6)
    targets = [None, 0, None, 2, 1, None]
    together = clf.explain_batch(xs, targets)
    for x, t, (probs, heat, ood) in zip(xs, targets, together):
        [(probs1, heat1, ood1)] = clf.explain_batch([x], [t])
        assert probs == pytest.approx(probs1, abs=1e-5)
        assert np.allclose(heat, heat1, atol=1e-4)
        assert ood == pytest.approx(ood1, rel=1e-3)  # the out-of-distribution score too
    # None means the image's own predicted class: the same map as naming that class
    probs, heat, _ = together[0]
    [(_, named, _)] = clf.explain_batch([xs[0]], [int(np.argmax(probs))])
    assert np.allclose(heat, named, atol=1e-4)


def test_concurrent_requests_are_batched_and_answered_as_alone(trained_checkpoint, synthetic_root):
    clf = Classifier(trained_checkpoint)
    xs = _inputs(clf, synthetic_root, 8)
    alone = [clf.explain_batch([x], [None])[0] for x in xs]
    worker = InferenceQueue(max_batch=4, threads=lambda: 1)
    gate = threading.Barrier(len(xs))
    answers: dict[int, tuple] = {}

    def ask(i: int) -> None:
        gate.wait()
        answers[i] = worker.explain(clf, xs[i], None)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(answers) == list(range(len(xs)))
    for i, (probs, heat, _) in answers.items():
        assert probs == pytest.approx(alone[i][0], abs=1e-5)
        assert np.allclose(heat, alone[i][1], atol=1e-4)
    assert max(worker.batches) <= 4 and sum(worker.batches) == len(xs)


def test_a_failing_request_fails_only_its_batch_and_the_worker_goes_on(trained_checkpoint, synthetic_root):
    clf = Classifier(trained_checkpoint)
    worker = InferenceQueue(threads=lambda: 1)
    with pytest.raises(ValueError):
        worker.explain(clf, _inputs(clf, synthetic_root, 2)[0], 99)  # no class 99
    probs, heat, _ = worker.explain(clf, _inputs(clf, synthetic_root, 2)[0], None)
    assert sum(probs) == pytest.approx(1.0, abs=1e-5) and heat.shape[-1] == clf.checkpoint.image_size


def test_only_one_models_inputs_of_one_shape_share_a_batch():
    a, b = object(), object()
    reqs = [_Request(a, torch.zeros(1, 3, 8, 8), None), _Request(b, torch.zeros(1, 3, 8, 8), None),
            _Request(a, torch.zeros(1, 3, 16, 16), None), _Request(a, torch.zeros(1, 3, 8, 8), None)]
    groups = _batches(reqs, size=8)
    assert [[reqs.index(r) for r in g] for g in groups] == [[0, 3], [1], [2]]
    assert [len(g) for g in _batches(reqs * 5, size=4)][:3] == [4, 4, 2]


def test_a_server_classifies_on_the_gpu_when_it_has_one(monkeypatch):
    from cxr.predict import inference_device

    assert inference_device(cuda_available=True).type == "cuda"
    assert inference_device(cuda_available=False).type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device().type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device().type == "cuda"


def test_predict_batched_equals_predict(trained_checkpoint, synthetic_root):
    from demo.inference import predict_batched

    clf = Classifier(trained_checkpoint)
    image = synthetic_root / "Normal" / "images" / "Normal-2.png"
    worker = InferenceQueue(threads=lambda: 1)
    for target in (None, "covid"):
        alone, batched = clf.predict(image, explain=True, target=target), predict_batched(worker, clf, image, target)
        assert batched.label == alone.label and batched.target == alone.target
        assert batched.probabilities == pytest.approx(alone.probabilities, abs=1e-5)
        assert np.allclose(batched.heatmap, alone.heatmap, atol=1e-4)
        assert batched.image.size == alone.image.size


def test_classify_takes_one_core_while_a_run_trains_unless_told_otherwise(monkeypatch):
    from demo.inference import inference_threads

    monkeypatch.delenv("CXR_INFERENCE_THREADS", raising=False)
    assert inference_threads(training=True, cores=2) == 1
    assert inference_threads(training=False, cores=2) == 2
    monkeypatch.setenv("CXR_INFERENCE_THREADS", "2")
    assert inference_threads(training=True, cores=2) == 2
    monkeypatch.setenv("CXR_INFERENCE_THREADS", "many")  # not a number: the rule above
    assert inference_threads(training=True, cores=2) == 1
