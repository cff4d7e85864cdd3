"""The one trainer: exact resume (also after SIGKILL), NaN guard, schedules, DDP with gloo, export."""

import copy
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from paths import REPO
from tiny_data import make_tiny_data, tiny_pretrain_config
from torch import nn

from s3prl_plugins.models.checkpoint import load_checkpoint
from s3prl_plugins.train.pretrain import run_pretrain
from s3prl_plugins.train.trainer import Trainer, TrainerConfig, TrainingError, lr_lambda

ROOT = REPO


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return make_tiny_data(str(root))


def _weights(path):
    return torch.load(path, weights_only=True)["model_weight"]


def test_pretrain_learns_and_exports(tmp_path, tiny):
    cfg = tiny_pretrain_config(str(tmp_path), *tiny, max_steps=60, valid_every=60, save_every=30, lr=3e-3)
    result = run_pretrain(json.loads(json.dumps(cfg)))
    assert result["acc"] > 2 / 8 and result["acc_unmasked"] > 2 / 8, result  # chance: 1/8
    exp = cfg["trainer"]["exp_dir"]
    model, ckpt = load_checkpoint(os.path.join(exp, "model.pt"))
    assert ckpt["kind"] == "masked_prediction"
    assert os.listdir(os.path.join(exp, "tensorboard"))
    # the stock s3prl hubert_local entry loads the exported copy, with identical hidden states
    import s3prl.hub as hub

    expert = hub.hubert_local(ckpt=os.path.join(exp, "hubert_local.pt")).eval()
    wav = torch.randn(8000) * 0.1
    with torch.no_grad():
        ref = expert([wav])["hidden_states"]
        ours = model(wav[None]).hidden_states
    for a, b in zip(ref, ours):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_resume_is_exact(tmp_path, tiny):
    straight = tiny_pretrain_config(str(tmp_path / "a"), *tiny, max_steps=6)
    run_pretrain(straight)
    split = tiny_pretrain_config(str(tmp_path / "b"), *tiny, max_steps=6)
    run_pretrain(split, stop_at=3)
    assert not os.path.exists(os.path.join(split["trainer"]["exp_dir"], "model.pt"))
    # a checkpoint in the one-process format written before per-rank streams ("rng") still resumes exactly
    ckpt_dir = os.path.join(split["trainer"]["exp_dir"], "checkpoints")
    last = os.path.join(ckpt_dir, open(os.path.join(ckpt_dir, "last.txt")).read().strip())
    state = torch.load(last, weights_only=True)
    state["rng"] = state.pop("rng_per_rank")[0]
    torch.save(state, last)
    run_pretrain(split)
    a = _weights(os.path.join(straight["trainer"]["exp_dir"], "model.pt"))
    b = _weights(os.path.join(split["trainer"]["exp_dir"], "model.pt"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _killed_and_reference_runs(tmp_path, tiny, **trainer):
    """Configs of a run to kill and of its uninterrupted reference (already run); the CLI and its env."""
    cfg = tiny_pretrain_config(str(tmp_path / "killed"), *tiny, **trainer)
    ref = tiny_pretrain_config(str(tmp_path / "ref"), *tiny, **trainer)
    for c, name in ((cfg, "killed.yaml"), (ref, "ref.yaml")):
        with open(tmp_path / name, "w") as f:
            yaml.safe_dump(c, f)
    cmd = [sys.executable, "-m", "s3prl_plugins.bin.pretrain", "--config"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd + [str(tmp_path / "ref.yaml")], check=True, capture_output=True, env=env, timeout=600)
    return cfg, ref, cmd, env


def test_resume_after_sigkill_is_exact(tmp_path, tiny):
    """Kill -9 a training process after its first checkpoint; the restarted run ends where an
    uninterrupted one does."""
    cfg, ref, cmd, env = _killed_and_reference_runs(tmp_path, tiny, max_steps=12, save_every=2)
    proc = subprocess.Popen(
        cmd + [str(tmp_path / "killed.yaml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    marker = os.path.join(cfg["trainer"]["exp_dir"], "checkpoints", "last.txt")
    deadline = time.time() + 300
    while not os.path.exists(marker) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(cfg["trainer"]["exp_dir"], "model.pt")), "killed too late"
    subprocess.run(cmd + [str(tmp_path / "killed.yaml")], check=True, capture_output=True, env=env, timeout=600)
    a = _weights(os.path.join(ref["trainer"]["exp_dir"], "model.pt"))
    b = _weights(os.path.join(cfg["trainer"]["exp_dir"], "model.pt"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_twenty_kills_at_random_points_end_where_an_uninterrupted_run_does(tmp_path, tiny):
    """kill -9 at 20 random moments (a save every update, so many land inside a checkpoint write); each
    rerun resumes, and the last one ends with the weights of the uninterrupted run."""
    import random

    cfg, ref, cmd, env = _killed_and_reference_runs(tmp_path, tiny, max_steps=60, save_every=1, log_every=1)
    rng = random.Random(0)
    model = os.path.join(cfg["trainer"]["exp_dir"], "model.pt")
    ckpt_dir = os.path.join(cfg["trainer"]["exp_dir"], "checkpoints")
    kills = 0
    while kills < 20 and not os.path.exists(model):
        proc = subprocess.Popen(
            cmd + [str(tmp_path / "killed.yaml")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        # wait for the first checkpoint written by this process, then a random moment inside the next saves
        start = set(os.listdir(ckpt_dir)) if os.path.isdir(ckpt_dir) else set()
        deadline = time.time() + 120
        while (
            proc.poll() is None
            and time.time() < deadline
            and (set(os.listdir(ckpt_dir)) if os.path.isdir(ckpt_dir) else set()) <= start
        ):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate()
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    subprocess.run(cmd + [str(tmp_path / "killed.yaml")], check=True, capture_output=True, env=env, timeout=600)
    assert kills >= 10, kills
    a = _weights(os.path.join(ref["trainer"]["exp_dir"], "model.pt"))
    b = _weights(model)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not [p for p in os.listdir(ckpt_dir) if p.startswith(".tmp-")]


class _NaNTask(nn.Module):
    def __init__(self, bad_from=0):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.calls = 0
        self.bad_from = bad_from

    def forward(self, batch):
        self.calls += 1
        loss = (self.w * batch["x"]).sum()
        if self.calls > self.bad_from:
            loss = loss * float("nan")
        return loss, {"loss": (float(loss.detach()), 1.0)}


class _ListData(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"x": torch.ones(3)}


def _list_data():
    return (_ListData(), [[0], [1], [2], [3]], lambda items: {"x": torch.stack([it["x"] for it in items])})


def test_nan_guard_skips_then_stops(tmp_path):
    task = _NaNTask(bad_from=2)
    trainer = Trainer(
        TrainerConfig(exp_dir=str(tmp_path), max_steps=50, max_bad_steps=3, save_every=1, log_every=1),
        task,
        _list_data(),
    )
    with pytest.raises(TrainingError, match="NaN/Inf for 3 updates in a row"):
        trainer.train()
    assert trainer.step == 2 and trainer.bad_steps == 3
    assert torch.isfinite(task.w).all()  # no NaN update was applied


def test_skipped_utterances_are_counted_not_passed_on(tmp_path):
    """collate lists unreadable utterances in batch["skipped"]: the trainer counts them (logged, kept in
    checkpoints) and the task never sees the key."""
    seen = []

    class Task(_NaNTask):
        def forward(self, batch):
            seen.append(sorted(batch))
            return super().forward(batch)

    def collate(items):
        return {"x": torch.stack([it["x"] for it in items]), "skipped": [("u1", "truncated")] if len(seen) % 2 else []}

    trainer = Trainer(
        TrainerConfig(exp_dir=str(tmp_path), max_steps=4, save_every=4, log_every=1),
        Task(bad_from=100),
        (_ListData(), [[0], [1], [2], [3]], collate),
    )
    trainer.train()
    assert trainer.skipped_utterances == 2 and all(keys == ["x"] for keys in seen)
    state = torch.load(trainer.latest_checkpoint(), weights_only=True)
    assert state["trainer"]["skipped_utterances"] == 2


def test_unexpected_keys_in_training_checkpoint_raise(tmp_path):
    task = _NaNTask(bad_from=10**9)
    trainer = Trainer(TrainerConfig(exp_dir=str(tmp_path), max_steps=1, save_every=1), task, _list_data())
    trainer.train()
    path = trainer.latest_checkpoint()
    state = torch.load(path, weights_only=True)
    state["task_state"]["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(TrainingError, match="unexpected"):
        Trainer(TrainerConfig(exp_dir=str(tmp_path), max_steps=2), _NaNTask(), _list_data()).load(path)


def test_lr_schedules():
    f = lr_lambda("linear", 10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == 0.0
    g = lr_lambda("cosine", 0, 100)
    assert g(0) == pytest.approx(1.0) and g(50) == pytest.approx(0.5) and g(100) == pytest.approx(0.0, abs=1e-12)
    assert lr_lambda("constant", 5, 100)(80) == 1.0


def test_grad_accumulation_equals_big_batch(tmp_path):
    """Two micro-batches of 1 with accum 2 give the same update as one batch of 2."""

    class Lin(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.Linear(3, 1)

        def forward(self, batch):
            loss = (self.lin(batch["x"]) ** 2).mean()
            return loss, {"loss": (float(loss), 1.0)}

    data = [{"x": torch.tensor([1.0, 2.0, 3.0])}, {"x": torch.tensor([-1.0, 0.5, 2.0])}]

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return data[i]

    coll = lambda items: {"x": torch.stack([it["x"] for it in items])}  # noqa: E731
    a, b = Lin(), Lin()
    Trainer(
        TrainerConfig(exp_dir=str(tmp_path / "a"), max_steps=1, grad_accum=2, optimizer="adam", lr=0.1, clip_norm=0),
        a,
        (DS(), [[0], [1]], coll),
    ).train(resume=False)
    Trainer(
        TrainerConfig(exp_dir=str(tmp_path / "b"), max_steps=1, grad_accum=1, optimizer="adam", lr=0.1, clip_norm=0),
        b,
        (DS(), [[0, 1]], coll),
    ).train(resume=False)
    torch.testing.assert_close(a.lin.weight, b.lin.weight)


def _torchrun_pretrain(config_path, timeout=300):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    proc = subprocess.Popen(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "s3prl_plugins.bin.pretrain",
            "--config",
            str(config_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        start_new_session=True,  # so a hang can be killed with its workers
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, err[-3000:]
    return err


def test_ddp_two_gloo_processes_resume_exactly(tmp_path, tiny, caplog):
    """Two gloo ranks; a run resumed from its step-2 checkpoint ends with the uninterrupted run's
    weights: each rank's random streams (masks, dropout) are saved and restored per rank."""
    final = {}
    for name in ("straight", "resumed"):
        cfg = tiny_pretrain_config(str(tmp_path / name), *tiny, max_steps=4, save_every=2, keep_last=3)
        with open(tmp_path / f"{name}.yaml", "w") as f:
            yaml.safe_dump(cfg, f)
        _torchrun_pretrain(tmp_path / f"{name}.yaml")
        exp = cfg["trainer"]["exp_dir"]
        assert os.path.isfile(os.path.join(exp, "model.pt"))
        if name == "resumed":  # as if killed right after the step-2 checkpoint
            os.remove(os.path.join(exp, "checkpoints", "step00000004.pt"))
            os.remove(os.path.join(exp, "model.pt"))
            with open(os.path.join(exp, "checkpoints", "last.txt"), "w") as f:
                f.write("step00000002.pt\n")
            err = _torchrun_pretrain(tmp_path / f"{name}.yaml")
            assert "resumed from" in err and "at step 2" in err
        state = torch.load(os.path.join(exp, "checkpoints", "step00000004.pt"), weights_only=True)
        assert state["trainer"]["step"] == 4 and len(state["rng_per_rank"]) == 2
        final[name] = state["task_state"]
    assert final["straight"].keys() == final["resumed"].keys()
    for k in final["straight"]:
        assert torch.equal(final["straight"][k], final["resumed"][k]), k
    # resuming that 2-process run in one process: allowed, and says its random streams are new
    cfg = tiny_pretrain_config(str(tmp_path / "straight"), *tiny, max_steps=5, save_every=2, keep_last=3)
    with caplog.at_level(logging.WARNING, logger="s3prl_plugins.train.trainer"):
        run_pretrain(cfg)
    assert "written by 2 process(es), resuming with 1" in caplog.text


def test_targets_from_acoustic_features_and_hidden_layers(tmp_path, tiny):
    """Iteration 1 (MFCC k-means at 50 Hz) and iteration 2 (k-means of a model's hidden layer)."""
    from s3prl_plugins.data.dataset import read_labels
    from s3prl_plugins.data.kaldi import read_data_dir
    from s3prl_plugins.data.targets import make_targets

    data_dir, _ = tiny
    info = make_targets(data_dir, str(tmp_path / "it1"), "mfcc", num_clusters=8, frame_step=2, progress=False)
    labels = read_labels(str(tmp_path / "it1" / "data.km"))
    d = read_data_dir(data_dir)
    for utt in d.utts:
        n = round(d.utt2dur[utt] * 16000)
        assert abs(len(labels[utt]) - ((n - 400) // 320 + 1)) <= 1  # HuBERT's 50 Hz frames
    assert info["perplexity_data"] > 1
    cfg = tiny_pretrain_config(str(tmp_path / "m"), *tiny, max_steps=2)
    run_pretrain(cfg)
    ckpt = os.path.join(cfg["trainer"]["exp_dir"], "model.pt")
    make_targets(
        data_dir, str(tmp_path / "it2"), "hidden", num_clusters=4, frame_step=1, ckpt=ckpt, layer=1, progress=False
    )
    labels2 = read_labels(str(tmp_path / "it2" / "data.km"))
    assert all(abs(len(labels2[u]) - len(labels[u])) <= 1 for u in d.utts)
    assert max(max(v) for v in labels2.values()) <= 3


_AFTER_UPDATE_SCRIPT = r'''
import json, os, sys
import torch
import torch.distributed as dist
from torch import nn
from s3prl_plugins.train.trainer import Trainer, TrainerConfig

rank = int(os.environ["RANK"])

class Task(nn.Module):
    """Each rank sees its own loss; rank 1 alone asks to stop after update 2."""
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.seen = []
    def forward(self, batch):
        loss = (self.w * batch["x"]).sum() * (rank + 1)
        return loss, {"loss": (float(loss.detach()), 1.0)}
    def after_update(self, loss):
        self.seen.append(loss)
        return rank == 1 and len(self.seen) == 2

class DS(torch.utils.data.Dataset):
    def __len__(self): return 4
    def __getitem__(self, i): return {"x": torch.ones(3)}

task = Task()
Trainer(
    TrainerConfig(
        exp_dir=sys.argv[1], max_steps=10, save_every=100, log_every=1, device="cpu", optimizer="adam", lr=0.0
    ),
    task,
    (DS(), [[0], [1], [2], [3]], lambda items: {"x": torch.stack([it["x"] for it in items])}),
).train(resume=False)
with open(os.path.join(sys.argv[1], f"seen{rank}.json"), "w") as f:
    json.dump(task.seen, f)
dist.destroy_process_group()
'''


def test_ddp_ranks_stop_together_and_see_one_update_loss(tmp_path):
    """A task's after_update (weight pruning's plateau test) gets the loss over every rank, and one rank's
    stop ends training on all of them -- not a rank left waiting in the next all-reduce."""
    script = tmp_path / "after_update.py"
    script.write_text(_AFTER_UPDATE_SCRIPT)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    r = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", str(script), str(tmp_path / "exp")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    seen = [json.loads((tmp_path / "exp" / f"seen{k}.json").read_text()) for k in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 2  # both stopped after update 2
    assert seen[0] == seen[1] == [pytest.approx(4.5)] * 2  # (3 x 1 + 3 x 2) / 2: the mean over the ranks


def test_after_update_sees_the_mean_loss_of_every_accumulated_batch(tmp_path):
    """With gradient accumulation, ``after_update`` gets the loss of the whole update (every micro-batch
    weighted by its count), not of its last micro-batch."""

    class Task(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))
            self.seen = []

        def forward(self, batch):
            x = batch["x"]
            loss = (self.w * x).sum()
            return loss, {"loss": (float(x.sum()), float(len(x)))}

        def after_update(self, loss):
            self.seen.append(loss)
            return False

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return {"x": torch.tensor([float(i)])}

    task = Task()
    batches = [[0], [1, 2], [3], [4, 5]]  # updates of (0 | 1, 2) and (3 | 4, 5) with grad_accum 2
    cfg = TrainerConfig(
        exp_dir=str(tmp_path / "exp"),
        max_steps=2,
        save_every=100,
        log_every=1,
        device="cpu",
        optimizer="adam",
        lr=0.0,
        grad_accum=2,
    )
    Trainer(cfg, task, (DS(), batches, lambda items: {"x": torch.cat([it["x"] for it in items])})).train(resume=False)
    assert task.seen == [pytest.approx(1.0), pytest.approx(4.0)]  # (0 + 1 + 2) / 3, (3 + 4 + 5) / 3


def _ckpts(exp):
    return sorted(p for p in os.listdir(os.path.join(exp, "checkpoints")) if p.startswith("step"))


def test_a_corrupt_latest_checkpoint_is_skipped_for_the_older_one(tmp_path, tiny, caplog):
    straight = tiny_pretrain_config(str(tmp_path / "a"), *tiny, max_steps=6)
    run_pretrain(straight)
    split = tiny_pretrain_config(str(tmp_path / "b"), *tiny, max_steps=6)
    run_pretrain(copy.deepcopy(split), stop_at=4)
    exp = split["trainer"]["exp_dir"]
    assert _ckpts(exp) == ["step00000002.pt", "step00000004.pt"]
    latest = os.path.join(exp, "checkpoints", "step00000004.pt")
    with open(latest, "r+b") as f:  # a save cut short by a full disk or a dying node
        f.truncate(os.path.getsize(latest) // 2)
    with caplog.at_level(logging.INFO):
        run_pretrain(copy.deepcopy(split))
    assert "skipping" in caplog.text and "step00000004.pt" in caplog.text
    assert "resumed from" in caplog.text and "step00000002.pt at step 2" in caplog.text
    a = _weights(os.path.join(straight["trainer"]["exp_dir"], "model.pt"))
    b = _weights(os.path.join(exp, "model.pt"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_an_experiment_whose_checkpoints_are_lost_refuses_to_start_over(tmp_path, tiny):
    cfg = tiny_pretrain_config(str(tmp_path), *tiny, max_steps=6)
    run_pretrain(copy.deepcopy(cfg), stop_at=2)
    exp = cfg["trainer"]["exp_dir"]
    ckpt_dir = os.path.join(exp, "checkpoints")
    for name in _ckpts(exp):  # deleted by hand (last.txt still names one) ...
        os.remove(os.path.join(ckpt_dir, name))
    with pytest.raises(TrainingError, match="--restart"):
        run_pretrain(copy.deepcopy(cfg))
    # ... or garbage where the checkpoint was: refused as well, naming the file
    with open(os.path.join(ckpt_dir, "step00000002.pt"), "w") as f:
        f.write("<html>not a checkpoint</html>")
    with pytest.raises(TrainingError, match=r"step00000002\.pt.*--restart"):
        run_pretrain(copy.deepcopy(cfg))
    # and through the CLI: a message, not a traceback, and nothing overwritten
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "s3prl_plugins.bin.pretrain", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "--restart" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert open(os.path.join(ckpt_dir, "step00000002.pt")).read().startswith("<html>")
    # --restart starts over; the old checkpoints are kept aside
    out = subprocess.run(
        [sys.executable, "-m", "s3prl_plugins.bin.pretrain", "--config", str(path), "--restart"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    aside = [d for d in os.listdir(exp) if d.startswith("before-restart-")]
    assert len(aside) == 1 and "checkpoints" in os.listdir(os.path.join(exp, aside[0]))
    assert sorted(os.listdir(os.path.join(exp, aside[0], "checkpoints"))) == ["last.txt", "step00000002.pt"]
    assert os.path.isfile(os.path.join(exp, "model.pt"))


def test_orphans_of_an_interrupted_save_are_removed(tmp_path, tiny):
    cfg = tiny_pretrain_config(str(tmp_path), *tiny, max_steps=4)
    run_pretrain(copy.deepcopy(cfg), stop_at=2)
    ckpt_dir = os.path.join(cfg["trainer"]["exp_dir"], "checkpoints")
    for name in (".tmp-abc123.pt", "last.txt.tmp"):
        open(os.path.join(ckpt_dir, name), "w").close()
    run_pretrain(copy.deepcopy(cfg))
    assert not [p for p in os.listdir(ckpt_dir) if "tmp" in p]


def test_changed_settings_on_resume_are_applied_or_refused_by_name(tmp_path, tiny, caplog):
    cfg = tiny_pretrain_config(str(tmp_path), *tiny, max_steps=8, schedule="constant", warmup_steps=0)
    run_pretrain(copy.deepcopy(cfg), stop_at=2)
    # the model's shape and the objective cannot change under a checkpoint
    wider = copy.deepcopy(cfg)
    wider["model"]["args"]["ffn_dim"] = 48
    with pytest.raises(TrainingError, match="ffn_dims"):
        run_pretrain(wider)
    masked = copy.deepcopy(cfg)
    masked["task"]["mask_prob"] = 0.3
    with pytest.raises(TrainingError, match="task.mask_prob: 0.1 -> 0.3"):
        run_pretrain(masked)
    # a new learning rate and length are applied, and said
    faster = copy.deepcopy(cfg)
    faster["trainer"].update(lr=0.5, max_steps=6)
    seen = []
    orig = Trainer._apply_trainer_settings

    def spy(self):
        orig(self)
        seen.append([g["lr"] for g in self.optimizer.param_groups])

    Trainer._apply_trainer_settings = spy
    try:
        with caplog.at_level(logging.INFO):
            run_pretrain(faster, stop_at=3)
    finally:
        Trainer._apply_trainer_settings = orig
    assert seen == [[0.5]], seen
    assert "trainer.lr changed: 0.001 -> 0.5 (applied)" in caplog.text
    assert "trainer.max_steps changed: 8 -> 6 (applied)" in caplog.text
    state = torch.load(os.path.join(cfg["trainer"]["exp_dir"], "checkpoints", "step00000003.pt"), weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.5 and state["config"]["lr"] == 0.5


def test_degenerate_training_is_refused(tmp_path, tiny):
    """Masking nothing is refused up front; a run whose loss is exactly 0 with a zero gradient (here: a
    mask_prob so small that no frame is masked) stops with a message instead of exporting its initial weights;
    a NaN setting names its key."""
    from s3prl_plugins.config import ConfigError

    cfg = tiny_pretrain_config(str(tmp_path / "a"), *tiny, max_steps=60, save_every=1000, valid_every=1000)
    cfg["task"]["mask_prob"] = 0
    with pytest.raises(ConfigError, match=r"task\.mask_prob: must be > 0"):
        run_pretrain(copy.deepcopy(cfg))
    cfg["task"]["mask_prob"] = 1e-9
    with pytest.raises(TrainingError, match="exactly 0 with a zero gradient for 20 updates"):
        run_pretrain(copy.deepcopy(cfg))
    assert not os.path.exists(os.path.join(cfg["trainer"]["exp_dir"], "model.pt"))
    cfg = tiny_pretrain_config(str(tmp_path / "b"), *tiny, lr=float("nan"))
    with pytest.raises(ConfigError, match=r"trainer\.lr: must be a number, not NaN"):
        run_pretrain(copy.deepcopy(cfg))
    assert not os.path.exists(cfg["trainer"]["exp_dir"])  # refused before anything was written


def test_a_relative_input_and_its_resolution_are_one_path_only_against_the_runs_own_folder():
    """Resuming from another directory: the stored `exp/...` and its resolution under the recipe folder are the
    same input; the same relative path under another folder is a change (another recipe's teacher)."""
    from s3prl_plugins.train.trainer import resolved_base, same_path

    base = resolved_base("exp/t", "/r/egs/mini/exp/t")
    assert base == "/r/egs/mini" and resolved_base("exp/t", "exp/t") is None
    assert same_path("exp/m.pt", "/r/egs/mini/exp/m.pt", base)
    assert same_path("/r/egs/mini/data/train", "data/train", base)
    assert not same_path("exp/m.pt", "/r/egs/other/exp/m.pt", base)
    assert not same_path("exp/m.pt", "/r/egs/mini/exp/m.pt", None)
