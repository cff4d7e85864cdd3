"""README's `python -m s3prl_plugins.bin.pretrain --config egs/mini/conf/hubert_tiny.yaml`, run from the repository
root: the config's paths are relative to the recipe's folder, and are resolved there (or refused with where to run)."""

import os
import subprocess
import sys

import pytest
import yaml
from tiny_data import make_tiny_data, tiny_pretrain_config

from s3prl_plugins.config import ConfigError
from s3prl_plugins.data.config_paths import check_input_paths, relative_paths


@pytest.fixture
def repo(tmp_path):
    """A repository root with a recipe folder egs/mini holding its data, and a config in egs/mini/conf."""
    mini = tmp_path / "egs" / "mini"
    make_tiny_data(str(mini / "stuff"), n_utts=6)
    cfg = tiny_pretrain_config("unused", "stuff/data", "stuff/labels.km", max_steps=2, valid_every=2, save_every=2)
    cfg["trainer"]["exp_dir"] = "exp/hubert_tiny"
    (mini / "conf").mkdir()
    (mini / "conf" / "hubert_tiny.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def _pretrain(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "s3prl_plugins.bin.pretrain", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_pretrain_from_the_repository_root_as_readme_writes_it(repo):
    r = _pretrain("--config", "egs/mini/conf/hubert_tiny.yaml", cwd=repo)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (repo / "egs" / "mini" / "exp" / "hubert_tiny" / "model.pt").is_file()  # where the recipe's stages look
    assert not (repo / "exp").exists()
    assert "relative to" in r.stderr and "data.train ->" in r.stderr


def test_a_run_started_in_the_recipe_folder_resumes_from_the_repository_root(repo):
    """The stored config names its inputs relative to egs/mini; resumed from the root they resolve to absolute
    paths -- the same files, not a change that refuses the resume."""
    mini = repo / "egs" / "mini"
    cfg = yaml.safe_load((mini / "conf" / "hubert_tiny.yaml").read_text())
    cfg["trainer"]["max_steps"] = 4
    (mini / "conf" / "hubert_tiny.yaml").write_text(yaml.safe_dump(cfg))
    r = _pretrain("--config", "conf/hubert_tiny.yaml", "--set", "trainer.max_steps=2", cwd=mini)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _pretrain("--config", "egs/mini/conf/hubert_tiny.yaml", cwd=repo)
    assert r.returncode == 0 and "cannot resume" not in r.stderr, r.stderr[-3000:]
    assert "resuming from" in r.stderr.lower() or "resumed" in r.stderr.lower(), r.stderr[-3000:]


def test_missing_inputs_are_refused_with_where_to_run(repo):
    r = _pretrain("--config", "egs/mini/conf/hubert_tiny.yaml", "--set", "data.train_labels=stuff/gone.km", cwd=repo)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "data.train_labels = stuff/gone.km" in r.stderr and "cd egs/mini" in r.stderr
    assert "up to /." not in r.stderr and "To fix: run it from egs/mini" in r.stderr
    assert not (repo / "egs" / "mini" / "exp").exists() and not (repo / "exp").exists()


def test_which_values_are_paths_and_the_cwd_wins(repo, monkeypatch):
    config = {
        "teacher": {"source": "hubert_base"},
        "student": {"source": "exp/t/model.pt", "preset": "star_hubert"},
        "data": {"train": "data", "valid": None},
        "measure": {"probe": {"test": "data/test"}},
        "trainer": {"exp_dir": "exp/x"},
        "model": "https://host/m.pt",
    }
    inputs, outputs = relative_paths(config)
    assert [".".join(map(str, w)) for w, _ in inputs] == ["student.source", "data.train", "measure.probe.test"]
    assert outputs == [(("trainer", "exp_dir"), "exp/x")]
    monkeypatch.chdir(repo / "egs" / "mini")  # where the recipe runs: nothing is rewritten
    cfg = yaml.safe_load(open("conf/hubert_tiny.yaml"))
    assert check_input_paths(cfg, "conf/hubert_tiny.yaml", "x") is cfg
    with pytest.raises(ConfigError, match="/nonexistent.pt: no such file"):
        check_input_paths({"teacher": {"source": "/nonexistent.pt"}}, "c.yaml", "x")
