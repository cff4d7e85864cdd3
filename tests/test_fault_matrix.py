"""The lost-data cases, end to end through the CLIs a user runs: no command deletes or overwrites what it did
not write, and one experiment folder has one writer.

| case | before (2026-12-07) | now |
|---|---|---|
| ``export --format hf --out EXPERIMENT`` | the experiment deleted, exit 0 | refused, folder untouched |
| ``export --out EXISTING_DIR`` (ONNX) | ``[Errno 21] ... .tmp-export-...`` | "is a folder", names the file to give |
| a killed export | ``.tmp-export-*``, ``float32.onnx`` in /tmp, ``ort.quant.*`` | nothing (SIGKILL: the next export) |
| rerun with ``checkpoints/`` emptied | step 0, ``model.pt`` overwritten | refused naming ``--restart`` |
| ``--restart`` | checkpoints moved aside | checkpoints, logs, model moved aside |
| two trainings on one ``exp_dir`` | one dies on ``last.txt.tmp`` | the second refused at once (pid, host) |
| a dead holder's lock | -- | taken over with a message |
| Ctrl-C in training | a KeyboardInterrupt traceback | one line: where the last checkpoint is |
"""

import copy
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml
from tiny_data import make_tiny_data, tiny_pretrain_config

from s3prl_plugins.models import build_model
from s3prl_plugins.models.checkpoint import save_checkpoint
from s3prl_plugins.models.factories import hubert_config
from s3prl_plugins.train.pretrain import run_pretrain


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_data(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny):
    """A finished pre-training experiment: checkpoints, TensorBoard logs, model.pt."""
    root = tmp_path_factory.mktemp("finished")
    cfg = tiny_pretrain_config(str(root), *tiny, max_steps=4)
    run_pretrain(copy.deepcopy(cfg))
    return cfg


def _snapshot(folder):
    """Every file under ``folder`` with its content hash (what must stay untouched)."""
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _cli(module, *args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", f"s3prl_plugins.bin.{module}", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
    )


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    config = hubert_config(
        num_layers=2,
        num_heads=4,
        ffn_dim=64,
        conv_layers=[(16, 10, 5), (16, 3, 2), (16, 2, 2)],
        with_head=False,
        embed_dim=32,
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    save_checkpoint(str(path), build_model(config).eval())
    return path


# ---------------------------------------------------------------------------------------------------- export
def test_hf_export_into_an_experiment_is_refused_and_touches_nothing(finished, model_pt):
    exp = finished["trainer"]["exp_dir"]
    before, listing = _snapshot(exp), sorted(os.listdir(exp))
    r = _cli("export", model_pt, "--out", exp, "--format", "hf")
    assert r.returncode != 0 and "did not write" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "model.pt" in r.stderr and "checkpoints" in r.stderr  # it says what is there
    assert _snapshot(exp) == before and sorted(os.listdir(exp)) == listing


def test_hf_export_replaces_only_its_own_folder_with_the_umask_modes(tmp_path, model_pt):
    out = tmp_path / "hf"
    old = os.umask(0o022)
    try:
        r = _cli("export", model_pt, "--out", out, "--format", "hf")
        assert r.returncode == 0, r.stderr
        assert os.stat(out).st_mode & 0o777 == 0o755
        assert {os.stat(out / f).st_mode & 0o777 for f in os.listdir(out)} == {0o644}
        assert "s3prl_plugins_export.json" in os.listdir(out)
        (out / "config.json").write_text("{}")  # the earlier export is replaced as a whole
        r = _cli("export", model_pt, "--out", out, "--format", "hf")
        assert r.returncode == 0, r.stderr
        assert (out / "config.json").read_text() != "{}"
        (out / "README.md").write_text("my model card")  # a file the user added to the export: not replaced
        r = _cli("export", model_pt, "--out", out, "--format", "hf")
        assert r.returncode == 2 and "README.md" in r.stderr and (out / "README.md").read_text() == "my model card"
        (out / "README.md").unlink()
    finally:
        os.umask(old)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    # a file where the folder would go, and an empty folder
    (tmp_path / "file").write_text("mine")
    r = _cli("export", model_pt, "--out", tmp_path / "file", "--format", "hf")
    assert r.returncode != 0 and "not a folder" in r.stderr and (tmp_path / "file").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert _cli("export", model_pt, "--out", tmp_path / "empty", "--format", "hf").returncode == 0


def test_onnx_export_to_a_folder_says_so(tmp_path, model_pt):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    r = _cli("export", model_pt, "--out", tmp_path / "d")
    assert r.returncode == 2 and "is a folder" in r.stderr and "model.onnx" in r.stderr, r.stderr
    assert "Errno" not in r.stderr and os.listdir(tmp_path / "d") == ["keep.txt"]
    assert os.listdir(tmp_path) == ["d"]


def _wait_for(predicate, seconds=120):
    end = time.time() + seconds
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _as_from_a_terminal():
    """Ctrl-C reaches the child: a suite started in the background (nohup, a CI runner) passes SIGINT ignored to
    its children, and a Python started so never turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _export_until_its_work_folder(model_pt, out, env=None):
    """An int8 export into ``out``, returned once its work folder is there (the export is under way)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "s3prl_plugins.bin.export", str(model_pt), "--out", str(out / "m.onnx"), "--int8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_as_from_a_terminal,
    )
    assert _wait_for(lambda: any(f.startswith(".tmp-export-") for f in os.listdir(out)) or p.poll() is not None)
    return p


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_killed_export_leaves_nothing_behind(tmp_path, model_pt, sig):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    p = _export_until_its_work_folder(model_pt, out, env=dict(os.environ, TMPDIR=str(tmp)))
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0, "the export finished before the signal: nothing was tested"
    # `import onnxruntime` writes its own `.ses` into the temporary folder (any onnxruntime user does, once per
    # folder, reused after): not the export's
    left = [f for f in os.listdir(tmp) if f != ".ses"]
    assert os.listdir(out) == [] and left == [], (os.listdir(out), left)
    assert "Traceback" not in err, err


def test_the_work_folder_of_a_sigkilled_export_is_removed_by_the_next(tmp_path, model_pt):
    out = tmp_path / "out"
    out.mkdir()
    p = _export_until_its_work_folder(model_pt, out)
    p.kill()
    p.communicate(timeout=60)
    left = [f for f in os.listdir(out) if f.startswith(".tmp-export-")]
    assert p.returncode == -9 and left, "the export finished before SIGKILL: nothing was tested"
    # another live process's work folder (this test's own pid) is not touched
    live = out / f".tmp-export-{socket.gethostname()}-{os.getpid()}-x"
    live.mkdir()
    r = _cli("export", model_pt, "--out", out / "m.onnx")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == sorted(["m.onnx", live.name])


# ---------------------------------------------------------------------------------------------------- training
def _write(cfg, path):
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_finished_experiment_without_checkpoints_is_refused_then_moved_aside(tmp_path, tiny):
    cfg = tiny_pretrain_config(str(tmp_path), *tiny, max_steps=4)
    conf = _write(cfg, tmp_path / "c.yaml")
    assert _cli("pretrain", "--config", conf).returncode == 0
    exp = cfg["trainer"]["exp_dir"]
    for name in os.listdir(os.path.join(exp, "checkpoints")):  # deleted by hand, last.txt too
        os.remove(os.path.join(exp, "checkpoints", name))
    before = _snapshot(exp)
    r = _cli("pretrain", "--config", conf)
    assert r.returncode == 2 and "--restart" in r.stderr and "model.pt" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and _snapshot(exp) == before  # model.pt and the logs untouched
    r = _cli("pretrain", "--config", conf, "--restart")
    assert r.returncode == 0, r.stderr
    aside = [d for d in os.listdir(exp) if d.startswith("before-restart-")]
    assert len(aside) == 1
    moved = _snapshot(os.path.join(exp, aside[0]))
    assert {k: v for k, v in before.items() if not k.startswith(".lock")} == moved  # everything, byte for byte
    assert os.path.isfile(os.path.join(exp, "model.pt")) and os.listdir(os.path.join(exp, "checkpoints"))


def test_two_trainings_on_one_experiment_one_runs_the_other_is_refused_at_once(tmp_path, tiny):
    cfg = tiny_pretrain_config(str(tmp_path), *tiny, max_steps=200, save_every=5, log_every=5, valid_every=1000)
    conf = _write(cfg, tmp_path / "c.yaml")
    cmd = [sys.executable, "-m", "s3prl_plugins.bin.pretrain", "--config", str(conf)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = os.path.join(cfg["trainer"]["exp_dir"], ".lock")
    assert _wait_for(lambda: os.path.exists(lock) and open(lock).read().strip() or first.poll() is not None)
    t0 = time.time()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    took = time.time() - t0
    assert second.returncode == 2, second.stderr
    assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr and "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert took < 30  # refused before any model or data is built
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert open(lock).read() == ""  # released: nobody's


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message(tmp_path, tiny):
    cfg = tiny_pretrain_config(str(tmp_path), *tiny, max_steps=2)
    exp = cfg["trainer"]["exp_dir"]
    os.makedirs(exp)
    with open(os.path.join(exp, ".lock"), "w") as f:  # written by a holder that was killed (no flock held)
        f.write("pid=4194000 host=node7 what=training\n")
    r = _cli("pretrain", "--config", _write(cfg, tmp_path / "c.yaml"))
    assert r.returncode == 0, r.stderr
    assert "taking over the lock of pid 4194000 on host node7" in r.stderr


def _start_pretrain(conf):
    return subprocess.Popen(
        [sys.executable, "-m", "s3prl_plugins.bin.pretrain", "--config", str(conf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_terminal,
    )


def test_ctrl_c_in_training_ends_with_one_line_naming_the_last_checkpoint(tmp_path, tiny):
    cfg = tiny_pretrain_config(str(tmp_path), *tiny, max_steps=100000, save_every=2, valid_every=10**6)
    conf = _write(cfg, tmp_path / "c.yaml")
    p = _start_pretrain(conf)
    last = os.path.join(cfg["trainer"]["exp_dir"], "checkpoints", "last.txt")
    assert _wait_for(lambda: os.path.exists(last) or p.poll() is not None)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert "interrupted at step" in line and "the last checkpoint is" in line and "step0" in line, line


def test_a_run_stopped_before_its_first_checkpoint_starts_over_with_its_logs_moved_aside(tmp_path, tiny):
    cfg = tiny_pretrain_config(str(tmp_path), *tiny, max_steps=100000, save_every=10**6, log_every=1)
    conf = _write(cfg, tmp_path / "c.yaml")
    p = _start_pretrain(conf)
    tb = os.path.join(cfg["trainer"]["exp_dir"], "tensorboard")
    assert _wait_for(lambda: os.path.isdir(tb) and os.listdir(tb) or p.poll() is not None)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "before the first checkpoint" in err.strip().splitlines()[-1], err[-2000:]
    cfg["trainer"]["max_steps"] = 2
    r = _cli("pretrain", "--config", _write(cfg, conf))
    assert r.returncode == 0, r.stderr
    exp = cfg["trainer"]["exp_dir"]
    aside = [d for d in os.listdir(exp) if d.startswith("before-restart-")]
    assert len(aside) == 1 and os.listdir(os.path.join(exp, aside[0])) == ["tensorboard"]
    assert os.path.isfile(os.path.join(exp, "model.pt"))
