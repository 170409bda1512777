"""Smoke test on real X-rays: ../shared/cxr-sample (the Kaggle v4 layout), skipped when it is not there."""

import json

import numpy as np
import pytest

from cxr.cli.main import main
from cxr.data.index import index_dataset, split_dataset
from cxr.predict import Classifier
from cxr.train.events import Done
from cxr.train.loop import fit
from tests.conftest import SAMPLE, tiny_config

pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"real sample not found at {SAMPLE}")


@pytest.mark.slow
def test_real_sample_trains_evaluates_predicts_and_explains(tmp_path, capsys):
    index = index_dataset(SAMPLE)
    assert index.layout == "kaggle-v4" and not index.synthetic
    assert index.counts() == {"covid": 250, "normal": 250, "viral": 250}
    split = split_dataset(index)
    assert split.sizes() == {"train": 570, "val": 90, "test": 90}

    cfg = tiny_config(SAMPLE, tmp_path / "real.pt", image_size=96, batch_size=16, max_steps=3, eval_every=3,
                      test_per_class=30, val_per_class=10)
    done = list(fit(cfg))[-1]
    assert isinstance(done, Done) and done.test_report["count"] == 90 and not done.skipped_files

    assert main(["evaluate", "--checkpoint", done.checkpoint, "--data", str(SAMPLE), "--split", "all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 750 and sum(map(sum, report["confusion_matrix"])) == 750

    clf = Classifier(done.checkpoint)
    files = [index.files[i] for i in split.test[:5]]
    for f in files:
        pred = clf.predict(f, explain=True)
        assert pred.label in clf.classes and pred.image.size == (299, 299)
        assert pred.heatmap.shape == (96, 96) and np.isfinite(pred.heatmap).all()

    assert main(["predict", "--checkpoint", done.checkpoint, *map(str, files[:2]), "--json",
                 "--cam-dir", str(tmp_path / "cams")]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and all(row["label"] in clf.classes for row in rows)
    assert len(list((tmp_path / "cams").glob("*.png"))) == 2
