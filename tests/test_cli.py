"""The command line, run as users run it (`python -m cxr ...` in a subprocess) where the output format matters,
and in-process where a test must swap out the network."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cxr.data.download
from cxr.cli.main import main
from tests import imagefiles

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cxr", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.slow
def test_train_json_ends_with_done_carrying_the_promised_fields(synthetic_root, tmp_path):
    out = tmp_path / "m.pt"
    proc = run_cli("train", "--data", synthetic_root, "--weights", "none", "--max-steps", 3, "--batch-size", 8,
               "--image-size", 64, "--eval-every", 2, "--test-per-class", 3, "--val-per-class", 3,
               "--augment", "hflip,rotate", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "done"
    done = lines[-1]
    for key in ("steps", "train_images_per_sec", "test_accuracy", "checkpoint"):
        assert key in done, key
    assert done["steps"] == 3 and Path(done["checkpoint"]) == out and out.exists()
    assert {line["event"] for line in lines} >= {"start", "step", "eval", "done"}


def test_train_json_start_event_says_the_lungs_were_hidden(synthetic_root, tmp_path, capsys):
    # Whoever reads the stream (a script, the app's /training_status) learns from the first line that this is the
    # shortcut experiment, with the box it hid: every setting of the run, by name.
    args = ["train", "--data", synthetic_root, "--weights", "none", "--max-steps", 1, "--batch-size", 4,
            "--image-size", 32, "--eval-every", 1, "--test-per-class", 2, "--val-per-class", 2, "--hide-lungs", "box",
            "--hide-box", "0.2,0.8,0.1,0.9", "--out", tmp_path / "m.pt", "--json"]
    assert main([str(a) for a in args]) == 0
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["event"] == "start"
    assert start["settings"]["hide_lungs"] == "box" and start["settings"]["hide_box"] == [0.2, 0.8, 0.1, 0.9]
    assert start["settings"]["image_size"] == start["image_size"] == 32


@pytest.mark.slow
def test_train_without_json_prints_readable_lines(synthetic_root, tmp_path):
    proc = run_cli("train", "--data", synthetic_root, "--preset", "fast-cpu", "--weights", "none", "--max-steps", 2,
               "--image-size", 64, "--eval-every", 1, "--test-per-class", 3, "--val-per-class", 3,
               "--out", tmp_path / "m.pt")
    assert proc.returncode == 0, proc.stderr
    assert "val accuracy" in proc.stdout and "confusion matrix" in proc.stdout and "SYNTHETIC" in proc.stdout
    # The Fast preset keeps the last weights under a time budget: no "[best]" for a worse score, no step total.
    assert "[saved]" in proc.stdout and "[best]" not in proc.stdout and "last validation accuracy" in proc.stdout
    assert re.search(r"^step 1  train loss", proc.stdout, re.M), proc.stdout


def test_train_help_gives_each_settings_default_per_preset(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "default: adamw (fast-cpu), adam (recipe, gpu)" in text  # without --preset the machine's preset decides
    assert "--target-accuracy X 0 to 1; default: 0.95" in text and "--seed N 0 to 2147483647; default: 0" in text


@pytest.mark.slow
def test_evaluate_json_reports_every_image(trained_checkpoint, synthetic_root):
    proc = run_cli("evaluate", "--checkpoint", trained_checkpoint, "--data", synthetic_root, "--split", "all", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["classes"] == ["covid", "normal", "viral"] and report["count"] == 36
    assert len(report["confusion_matrix"]) == 3 and set(report["per_class"]) == {"covid", "normal", "viral"}
    assert 0 <= report["accuracy"] <= 1


# The shared data has all four classes, the shared model three: evaluate says which folder it left out.
LEFT_OUT = ("this model has no class for the folder Lung_Opacity, so its images were left out (it knows COVID, Normal, "
            "Viral Pneumonia)")


def evaluate_json(capsys, *args) -> dict:
    assert main(["evaluate", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_evaluate_json_lists_the_ten_largest_losses_and_roc_auc_per_class(trained_checkpoint, synthetic_root, capsys):
    report = evaluate_json(capsys, "--checkpoint", trained_checkpoint, "--data", synthetic_root, "--split", "all")
    top = report["top_losses"]
    assert len(top) == 10 and [r["loss"] for r in top] == sorted((r["loss"] for r in top), reverse=True)
    assert all(set(r) == {"file", "true", "predicted", "probability", "loss"} for r in top)
    assert all(Path(r["file"]).is_file() and r["true"] in report["classes"] for r in top)
    assert set(report["roc_auc"]) == {"covid", "normal", "viral"}
    assert all(0 <= v <= 1 for v in report["roc_auc"].values())
    assert report["loss"] > 0 and report["count"] == 36


def test_evaluate_json_measures_calibration_before_and_after_the_checkpoints_temperature(
        trained_checkpoint, synthetic_root, tmp_path, capsys):
    from cxr.train.checkpoint import read_checkpoint_file

    raw = read_checkpoint_file(trained_checkpoint)
    raw["calibration"] = {"temperature": 2.0, "fitted_on": "validation"}
    torch.save(raw, tmp_path / "warm.pt")
    report = evaluate_json(capsys, "--checkpoint", tmp_path / "warm.pt", "--data", synthetic_root)
    assert report["temperature"] == 2.0 and set(report["ece"]) == {"before", "after"}
    assert all(0 <= v <= 1 for v in report["ece"].values()) and report["ece"]["before"] != report["ece"]["after"]
    assert sum(b["count"] for b in report["reliability"]["after"]) == report["count"]
    plain = evaluate_json(capsys, "--checkpoint", trained_checkpoint, "--data", synthetic_root)
    assert plain["temperature"] == 1.0 and plain["ece"]["before"] == pytest.approx(plain["ece"]["after"])
    assert plain["ece"]["before"] == pytest.approx(report["ece"]["before"])  # the same model, the same images


def test_evaluate_runs_the_model_once_over_each_image(trained_checkpoint, synthetic_root, capsys, monkeypatch):
    import cxr.train.checkpoint

    seen, load = [], cxr.train.checkpoint.load_checkpoint

    def counting_load(*a, **k):
        ckpt = load(*a, **k)
        ckpt.model.register_forward_hook(lambda m, inputs, out: seen.append(len(inputs[0])))
        return ckpt

    monkeypatch.setattr(cxr.train.checkpoint, "load_checkpoint", counting_load)
    report = evaluate_json(capsys, "--checkpoint", trained_checkpoint, "--data", synthetic_root, "--split", "all")
    assert sum(seen) == report["count"] == 36


def test_evaluate_split_test_scores_only_the_checkpoints_own_test_images(trained_checkpoint, synthetic_root, capsys):
    from cxr.train.checkpoint import load_checkpoint

    saved = load_checkpoint(trained_checkpoint).metrics["test"]
    report = evaluate_json(capsys, "--checkpoint", trained_checkpoint, "--data", synthetic_root)  # test by default
    assert report["count"] == saved["count"] == 9 and report["split"] == "test"
    assert report["notes"] == [LEFT_OUT]  # nothing about the split: only the class folder the model lacks
    assert report["confusion_matrix"] == saved["confusion_matrix"]
    assert len(report["top_losses"]) == 9  # fewer images than ten: all of them, largest loss first


def test_evaluate_scores_the_saved_test_images_of_a_changed_folder_and_says_which_are_gone(
        trained_checkpoint, synthetic_root, tmp_path, capsys):
    import shutil

    from cxr.train.checkpoint import load_checkpoint

    saved = load_checkpoint(trained_checkpoint).split["test"]
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_root, copy)
    (copy / saved[0]).unlink()
    report = evaluate_json(capsys, "--checkpoint", trained_checkpoint, "--data", copy)
    assert report["count"] == 8 and report["notes"] == [
        "1 of this model's 9 test images are not in this folder: the other 8 are used", LEFT_OUT]
    assert {Path(r["file"]).relative_to(copy).as_posix() for r in report["top_losses"]} == set(saved[1:])


def test_evaluate_text_names_roc_auc_and_the_split(trained_checkpoint, synthetic_root, capsys):
    args = ["evaluate", "--checkpoint", str(trained_checkpoint), "--data", str(synthetic_root), "--split", "test"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("9 test images of this checkpoint's split") and "ROC AUC (one class against the rest)" in out


@pytest.mark.slow
def test_report_writes_the_card_folder_and_lists_its_files(trained_checkpoint, synthetic_root, tmp_path, capsys):
    out = tmp_path / "card"
    assert main(["report", "--checkpoint", str(trained_checkpoint), "--data", str(synthetic_root), "--out", str(out),
                 "--no-weights"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed.splitlines()[0]
    for name in ("README.md", "metrics.json", "confusion_matrix.png", "top_losses.png"):
        assert (out / name).is_file() and f"  {name}" in printed
    assert not list(out.glob("*.pt"))


@pytest.mark.slow
def test_predict_json_and_gradcam_files(trained_checkpoint, synthetic_root, tmp_path):
    images = sorted((synthetic_root / "COVID" / "images").glob("*.png"))[:2]
    bad = imagefiles.text_as_png(tmp_path / "bad.png")
    proc = run_cli("predict", "--checkpoint", trained_checkpoint, *images, bad, "--cam-dir", tmp_path / "cams", "--json")
    assert proc.returncode == 2  # one input was bad: bad input, not a bug (exit 1)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["file"]).name for r in rows] == [images[0].name, images[1].name, "bad.png"]
    for row in rows[:2]:
        assert row["label"] in ("covid", "normal", "viral")
        assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert Path(row["cam"]).exists() and row["ms"] > 0
    assert "not an image" in rows[2]["error"]
    assert "2 images on cpu: read + predict + Grad-CAM" in proc.stderr and "ms p95" in proc.stderr


@pytest.mark.parametrize("given", ["viral", "Viral Pneumonia", "viral pneumonia", "VIRAL"])
def test_predict_target_takes_the_key_or_the_printed_name(trained_checkpoint, synthetic_root, tmp_path, capsys, given):
    image = sorted((synthetic_root / "COVID" / "images").glob("*.png"))[0]
    assert main(["predict", "--checkpoint", str(trained_checkpoint), str(image), "--target", given,
                 "--cam-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cam"].endswith("_gradcam_viral.png")


def test_predict_target_without_cam_dir_says_no_map_is_drawn_and_a_wrong_one_lists_the_names(
        trained_checkpoint, synthetic_root, capsys):
    image = str(sorted((synthetic_root / "COVID" / "images").glob("*.png"))[0])
    assert main(["predict", "--checkpoint", str(trained_checkpoint), image, "--target", "COVID"]) == 0
    assert "without --cam-dir no map is drawn" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(trained_checkpoint), image, "--target", "flu"]) == 2
    assert "viral (Viral Pneumonia)" in capsys.readouterr().err


def test_make_synthetic_writes_the_kaggle_layout(tmp_path, capsys):
    assert main(["make-synthetic", str(tmp_path / "syn"), "--per-class", "2", "--size", "48", "--classes", "covid,normal"]) == 0
    assert len(list((tmp_path / "syn" / "COVID" / "images").glob("*.png"))) == 2
    assert (tmp_path / "syn" / "SYNTHETIC.txt").exists() and "wrote a synthetic dataset" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--data", "/no/such/folder"], "does not exist"),
        (["train", "--data", "/tmp", "--classes", "covid"], "at least two distinct"),
        (["predict", "--checkpoint", "/no/such.pt", "x.png"], "does not exist"),
        (["evaluate", "--checkpoint", "/no/such.pt", "--data", "/tmp"], "does not exist"),
        (["evaluate", "--checkpoint", "/no/such.pt", "--data", "/tmp", "--split", "test"], "does not exist"),
        (["report", "--checkpoint", "/no/such.pt", "--data", "/tmp", "--out", "/tmp/card"], "does not exist"),
        (["report", "--checkpoint", "/tmp", "--data", "/tmp", "--out", "/tmp/card"], "is a folder"),
        (["make-synthetic", "/tmp/x", "--size", "8"], "size must be"),
    ],
)
def test_bad_inputs_exit_non_zero_with_one_sentence(args, words, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def one_sentence(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "not a problem with your input" not in err
    return err


@pytest.mark.parametrize("inside", [False, True], ids=["the-file", "below-a-file"])
def test_predict_cam_dir_that_is_a_file_is_bad_input_not_a_bug(trained_checkpoint, synthetic_root, tmp_path, capsys,
                                                                inside):
    taken = tmp_path / "taken"
    taken.write_text("")
    image = str(sorted((synthetic_root / "COVID" / "images").glob("*.png"))[0])
    cam_dir = taken / "cams" if inside else taken
    assert main(["predict", "--checkpoint", str(trained_checkpoint), image, "--cam-dir", str(cam_dir)]) == 2
    assert "is a file; give a folder to write the Grad-CAM overlays into" in one_sentence(capsys)


def test_make_synthetic_into_a_file_is_bad_input_and_writes_nothing(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("notes")
    assert main(["make-synthetic", str(taken), "--per-class", "1", "--size", "32"]) == 2
    assert f"{taken} is a file; give a folder to write the dataset into" in one_sentence(capsys)
    assert taken.read_text() == "notes"


@pytest.mark.parametrize("flag, value", [("--epochs", "1000000000"), ("--seed", "3000000000")])
def test_an_integer_setting_out_of_range_is_printed_as_an_integer(flag, value, capsys):
    assert main(["train", "--data", "/tmp", flag, value]) == 2
    err = one_sentence(capsys)
    assert err.rstrip().endswith(f"got {value}") and "e+" not in err


def test_predict_of_a_multiframe_dicom_says_which_frame_of_how_many(trained_checkpoint, tmp_path, capsys):
    dicom = str(imagefiles.dicom_multiframe(tmp_path / "frames.dcm", rgb=True))
    note = "frames.dcm holds 3 frames; only the first is shown and classified"
    assert main(["predict", "--checkpoint", str(trained_checkpoint), dicom]) == 0
    out, err = capsys.readouterr()
    assert f"note: {note}" in err.splitlines() and "Warning" not in err and out.startswith(dicom)
    assert main(["predict", "--checkpoint", str(trained_checkpoint), dicom, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["note"] == note


def test_predict_json_says_whether_each_image_looks_like_the_training_data(trained_checkpoint, synthetic_root, tmp_path,
                                                                         capsys):
    import numpy as np
    import torch
    from PIL import Image

    from cxr.train.checkpoint import read_checkpoint_file

    xray, noise = str(synthetic_root / "Normal" / "images" / "Normal-1.png"), tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(noise)
    assert main(["predict", "--checkpoint", str(trained_checkpoint), str(noise), xray, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["looks_like_training_data"] is False and rows[0]["ood_score"] > 1
    assert all(isinstance(r["ood_score"], float) and isinstance(r["looks_like_training_data"], bool) for r in rows)
    old = read_checkpoint_file(trained_checkpoint)
    del old["ood"]  # a checkpoint saved before its run ended, or by an older cxr: no check, and it says so
    torch.save(old, tmp_path / "old.pt")
    assert main(["predict", "--checkpoint", str(tmp_path / "old.pt"), xray, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["ood_score"] is None and row["looks_like_training_data"] is None


def test_predict_of_a_one_frame_image_carries_no_note(trained_checkpoint, synthetic_root, capsys):
    image = str(sorted((synthetic_root / "COVID" / "images").glob("*.png"))[0])
    assert main(["predict", "--checkpoint", str(trained_checkpoint), image, "--json"]) == 0
    out, err = capsys.readouterr()
    assert "note" not in json.loads(out) and "note:" not in err


@pytest.mark.parametrize("split", ["test", "all"])
def test_evaluate_names_the_class_folder_the_model_has_no_class_for(trained_checkpoint, synthetic_root, capsys, split):
    assert (synthetic_root / "Lung_Opacity").is_dir()  # four class folders, a model of three
    args = ["evaluate", "--checkpoint", str(trained_checkpoint), "--data", str(synthetic_root), "--split", split]
    report = evaluate_json(capsys, *args[1:])
    assert report["ignored_folders"] == ["Lung_Opacity"] and report["notes"] == [LEFT_OUT]
    assert report["count"] == (9 if split == "test" else 36)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"note: {LEFT_OUT}" in printed.splitlines()
    assert "--split all scores every image" not in printed  # that hint is for missing test images only


def test_docs_cli_md_is_what_the_parsers_say_now():
    from cxr.cli import reference

    assert reference.DOC.read_text() == reference.render(), "docs/cli.md is stale: run python -m cxr.cli.reference"


def test_the_command_modules_sit_below_main_with_no_circle():
    import ast

    for path in sorted((ROOT / "cxr" / "cli").glob("*.py")):
        if path.name in ("main.py", "reference.py"):
            continue
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "cxr.cli.main" not in imported, f"{path.name} imports cxr.cli.main: a circle"


@pytest.mark.slow
def test_bad_input_as_a_user_sees_it_has_no_traceback():
    proc = run_cli("train", "--data", "/no/such/folder")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --data /no/such/folder does not exist") and "Traceback" not in proc.stderr


def test_download_offline_fails_fast_and_says_where_to_put_the_data(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cxr.data.download, "network_available", lambda *a, **k: False)
    assert main(["download", "--dest", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "COVID-19_Radiography_Dataset" in err and str(tmp_path) in err and "kaggle.com" in err


def test_download_uses_kagglehub_with_the_public_handle(monkeypatch, tmp_path):
    calls = {}

    class FakeHub:
        @staticmethod
        def dataset_download(handle, output_dir=None):
            calls["handle"], calls["dir"] = handle, output_dir
            (Path(output_dir) / "COVID-19_Radiography_Dataset").mkdir(parents=True)
            return output_dir

    monkeypatch.setattr(cxr.data.download, "network_available", lambda *a, **k: True)
    monkeypatch.setitem(sys.modules, "kagglehub", FakeHub)
    path = cxr.data.download.download_dataset(tmp_path)
    assert calls == {"handle": "tawsifurrahman/covid19-radiography-database", "dir": str(tmp_path)}
    assert path == tmp_path / "COVID-19_Radiography_Dataset"


def test_network_check_fails_fast_for_an_unreachable_host():
    import time

    start = time.perf_counter()
    assert not cxr.data.download.network_available("host.invalid", timeout=2)
    assert time.perf_counter() - start < 10

