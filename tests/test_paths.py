"""The default checkpoints folder: the project's, a Space's persistent storage, or CXR_CHECKPOINTS."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import demo.paths
from demo.paths import default_checkpoint_dir


@pytest.fixture
def storage(tmp_path) -> Path:
    """A writable folder standing in for a Space's /data."""
    path = tmp_path / "data"
    path.mkdir()
    return path


def test_outside_a_space_checkpoints_stay_in_the_project(tmp_path, storage):
    assert default_checkpoint_dir({}, root=tmp_path, storage=storage) == tmp_path / "checkpoints"


def test_a_space_with_persistent_storage_keeps_checkpoints_there(tmp_path, storage):
    env = {"SPACE_ID": "teacher/cxr"}
    assert default_checkpoint_dir(env, root=tmp_path, storage=storage) == storage / "checkpoints"


def test_a_space_without_persistent_storage_uses_the_project_folder(tmp_path):
    env = {"SPACE_ID": "teacher/cxr"}
    assert default_checkpoint_dir(env, root=tmp_path, storage=tmp_path / "absent") == tmp_path / "checkpoints"


def test_a_file_named_like_the_storage_is_not_storage(tmp_path):
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("")
    env = {"SPACE_ID": "teacher/cxr"}
    assert default_checkpoint_dir(env, root=tmp_path, storage=not_a_folder) == tmp_path / "checkpoints"


def test_read_only_storage_is_passed_over(tmp_path, storage, monkeypatch):
    # A read-only mount answers os.access(W_OK) with False even for root, who could write to a chmod-ed folder,
    # so the test asks os.access as a read-only mount would answer rather than chmod the folder.
    real_access = os.access
    monkeypatch.setattr(demo.paths.os, "access",
                        lambda path, mode: False if Path(path) == storage and mode & os.W_OK else real_access(path, mode))
    env = {"SPACE_ID": "teacher/cxr"}
    assert default_checkpoint_dir(env, root=tmp_path, storage=storage) == tmp_path / "checkpoints"


@pytest.mark.parametrize("space", [{}, {"SPACE_ID": "teacher/cxr"}])
def test_cxr_checkpoints_wins_everywhere(tmp_path, storage, space):
    env = {**space, "CXR_CHECKPOINTS": str(tmp_path / "mine")}
    assert default_checkpoint_dir(env, root=tmp_path, storage=storage) == tmp_path / "mine"


def test_an_empty_cxr_checkpoints_counts_as_unset(tmp_path, storage):
    env = {"SPACE_ID": "teacher/cxr", "CXR_CHECKPOINTS": ""}
    assert default_checkpoint_dir(env, root=tmp_path, storage=storage) == storage / "checkpoints"


def test_the_process_environment_is_read_when_no_env_is_given(tmp_path, storage, monkeypatch):
    monkeypatch.setenv("CXR_CHECKPOINTS", str(tmp_path / "from-env"))
    assert default_checkpoint_dir(root=tmp_path, storage=storage) == tmp_path / "from-env"


def test_the_rule_loads_without_gradio():
    code = "import sys; sys.modules['gradio'] = None\nimport demo.paths; print(demo.paths.default_checkpoint_dir({}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=demo.paths.ROOT)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == demo.paths.ROOT / "checkpoints"
