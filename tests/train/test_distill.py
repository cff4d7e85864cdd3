"""Distillation through the shared trainer: STaR / attention / DistilHuBERT objectives, frozen teacher,
export loadable by s3prl, exact resume, DDP with two gloo processes, configuration errors."""

import copy
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from tiny_data import make_tiny_data, make_tiny_teacher, tiny_distill_config

from s3prl_plugins.models.checkpoint import load_checkpoint
from s3prl_plugins.models.loading import load_pretrained
from s3prl_plugins.tasks.distillation import DistillationTask
from s3prl_plugins.train.distill import build_student, build_task, run_distill


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    data, _ = make_tiny_data(str(root))
    teacher = make_tiny_teacher(str(root / "teacher.pt"))
    return data, teacher


def _batch(seconds=(1.0, 0.7)):
    g = torch.Generator().manual_seed(0)
    n = [int(s * 16000) for s in seconds]
    wavs = torch.zeros(len(n), max(n))
    for i, k in enumerate(n):
        wavs[i, :k] = torch.randn(k, generator=g) * 0.1
    return {"wavs": wavs, "lengths": torch.tensor(n)}


def _data_batch(data_dir, n=3):
    from s3prl_plugins.data.audio import load_audio
    from s3prl_plugins.data.kaldi import read_data_dir
    from s3prl_plugins.models.ssl_model import pad_waveforms

    d = read_data_dir(data_dir)
    wavs, lengths = pad_waveforms([load_audio(d.wav[u]) for u in d.utts[:n]])
    return {"wavs": wavs, "lengths": lengths}


@pytest.mark.parametrize(
    "objectives",
    [
        {"layer_wise": 1.0, "intra_layer": 1.0},
        {"avg_attn": 1.0},
        {"last_attn": 1.0, "layer_wise": 0.5},
    ],
)
def test_task_trains_student_only(tmp_path, tiny, objectives):
    cfg = tiny_distill_config(str(tmp_path), tiny[0], tiny[1], objectives)
    task = build_task(cfg)
    task.train()
    assert not task.teacher.training and task.student.training
    assert all(not p.requires_grad for p in task.teacher.parameters())
    loss, logs = task(_batch())
    assert torch.isfinite(loss) and float(loss) > 0
    assert set(logs) == set(objectives) | {"loss"}
    loss.backward()
    grads = [p.grad for p in task.student.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    assert all(p.grad is None for p in task.teacher.parameters())


def test_teacher_outputs_are_those_of_the_loaded_model(tiny):
    teacher = load_pretrained(tiny[1])
    task = DistillationTask(
        load_pretrained(tiny[1]), build_student(tiny_distill_config("x", *tiny)["student"]), {"layer_wise": 1}
    )
    b = _batch()
    states, _, _ = task.teacher_outputs(b["wavs"], b["lengths"])
    with torch.no_grad():
        ref = teacher(b["wavs"], b["lengths"]).hidden_states
    assert len(states) == 3
    for a, r in zip(states, ref):
        assert torch.equal(a, r) and not a.is_inference()


def test_teacher_targets_stay_float32_where_bf16_would_run(tiny, monkeypatch):
    """cpu_bf16 runs a wide model's layers in bf16 in CPU inference; a teacher's targets stay float32."""
    from s3prl_plugins.nn import transformer

    monkeypatch.setattr(transformer, "cpu_bf16_supported", lambda: True)
    reference = load_pretrained(tiny[1]).set_speed_options(cpu_bf16="off")
    teacher = load_pretrained(tiny[1]).set_speed_options(cpu_bf16="on")
    task = DistillationTask(teacher, build_student(tiny_distill_config("x", *tiny)["student"]), {"layer_wise": 1})
    b = _batch()
    states, _, _ = task.teacher_outputs(b["wavs"], b["lengths"])
    with torch.inference_mode():
        ref = reference(b["wavs"], b["lengths"]).hidden_states
    assert all(torch.equal(a, r) for a, r in zip(states, ref))


def test_configuration_errors(tmp_path, tiny):
    base = tiny_distill_config(str(tmp_path), *tiny)
    bad_rate = copy.deepcopy(base)
    bad_rate["student"]["args"]["conv_layers"] = [[16, 10, 5], [16, 8, 4], [16, 4, 4]]
    with pytest.raises(ValueError, match="stride"):
        build_task(bad_rate)
    deeper = tiny_distill_config(str(tmp_path), *tiny, student_layers=1)
    with pytest.raises(ValueError, match="layer_map"):
        build_task(deeper)
    deeper["loss"] = {"layer_map": "uniform"}
    assert build_task(deeper).layer_map == [0, 2]
    with pytest.raises(ValueError, match=r"objectives.layerwise: unknown key \(did you mean 'layer_wise'\?\)"):
        build_task(dict(base, objectives={"layerwise": 1.0}))
    with pytest.raises(ValueError, match="distil"):
        build_task(dict(base, objectives={"l1_cos": 1.0}))
    with pytest.raises(ValueError, match="non-zero"):
        build_task(dict(base, objectives={"layer_wise": 0}))
    with pytest.raises(ValueError, match=r"loss.normalise: unknown key \(did you mean 'normalize'\?\)"):
        build_task(dict(base, loss={"normalise": "l2"}))


def test_distillation_lowers_loss_and_exports_an_s3prl_upstream(tmp_path, tiny):
    cfg = tiny_distill_config(
        str(tmp_path), *tiny, max_steps=30, valid_every=15, save_every=15, lr=3e-3, warmup_steps=3
    )
    task0 = build_task(copy.deepcopy(cfg))
    task0.eval()
    b = _data_batch(tiny[0])
    with torch.no_grad():
        before = float(task0(b)[0])
    result = run_distill(copy.deepcopy(cfg))
    model, ckpt = load_checkpoint(os.path.join(cfg["trainer"]["exp_dir"], "model.pt"))
    assert ckpt["kind"] == "distillation" and ckpt["objectives"] == {"layer_wise": 1.0, "intra_layer": 1.0}
    task0.student.load_state_dict(model.state_dict())
    with torch.no_grad():
        after = float(task0(b)[0])
    assert after < 0.7 * before, (before, after, result)
    # the checkpoint loads through s3prl's hub entry and S3PRLUpstream with all hidden states
    import s3prl.hub as hub
    from s3prl.nn import S3PRLUpstream

    path = os.path.join(cfg["trainer"]["exp_dir"], "model.pt")
    wav = b["wavs"][0, : int(b["lengths"][0])]
    with torch.no_grad():
        ours = model(wav[None]).hidden_states
        expert = hub.star_hubert_local(ckpt=path).eval()
        hs = expert([wav])["hidden_states"]
        up = S3PRLUpstream("star_hubert_local", path_or_url=path).eval()
        up_hs, _ = up(wav[None], torch.tensor([wav.numel()]))
    assert len(hs) == len(up_hs) == 3
    for a, c, d in zip(ours, hs, up_hs):
        torch.testing.assert_close(a, c)
        # S3PRLUpstream pads the waveform and keeps up to its length tolerance of extra frames
        assert d.size(1) - a.size(1) in (0, 1)
        torch.testing.assert_close(a, d[:, : a.size(1)], atol=1e-4, rtol=1e-4)


def test_distilhubert_objective_trains_heads_and_exports_without_them(tmp_path, tiny):
    cfg = tiny_distill_config(str(tmp_path), *tiny, objectives={"l1_cos": 1.0}, max_steps=4)
    cfg["student"]["args"]["head"] = {"type": "distil", "layers": [1, 2], "out_dim": 32}
    run_distill(cfg)
    model, _ = load_checkpoint(os.path.join(cfg["trainer"]["exp_dir"], "model.pt"))
    assert model.head is None
    state = torch.load(os.path.join(cfg["trainer"]["exp_dir"], "checkpoints", "step00000004.pt"), weights_only=True)
    keys = list(state["task_state"])
    assert any(k.startswith("student.head.") for k in keys), keys[:5]
    assert not any(k.startswith("teacher.") for k in keys)


def test_resume_is_exact(tmp_path, tiny):
    straight = tiny_distill_config(str(tmp_path / "a"), *tiny, max_steps=6)
    run_distill(copy.deepcopy(straight))
    split = tiny_distill_config(str(tmp_path / "b"), *tiny, max_steps=6)
    run_distill(copy.deepcopy(split), stop_at=3)
    assert not os.path.exists(os.path.join(split["trainer"]["exp_dir"], "model.pt"))
    run_distill(copy.deepcopy(split))
    a = torch.load(os.path.join(straight["trainer"]["exp_dir"], "model.pt"), weights_only=True)["model_weight"]
    b = torch.load(os.path.join(split["trainer"]["exp_dir"], "model.pt"), weights_only=True)["model_weight"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_cli_and_ddp_two_gloo_processes(tmp_path, tiny):
    cfg = tiny_distill_config(str(tmp_path), *tiny, max_steps=4, save_every=2)
    with open(tmp_path / "c.yaml", "w") as f:
        yaml.safe_dump(cfg, f)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    proc = subprocess.Popen(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "s3prl_plugins.bin.distill",
            "--config",
            str(tmp_path / "c.yaml"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, err[-3000:]
    assert "layer_wise" in json.loads(out.strip().splitlines()[-1])
    state = torch.load(os.path.join(cfg["trainer"]["exp_dir"], "checkpoints", "step00000004.pt"), weights_only=True)
    assert state["trainer"]["step"] == 4
    # a bad config is one clear line, exit code 2
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3prl_plugins.bin.distill",
            "--config",
            str(tmp_path / "c.yaml"),
            "--set",
            "teacher.source=/nonexistent.pt",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "error:" in bad.stderr and "nonexistent" in bad.stderr


def test_wavlm_teacher_with_attention_maps(tmp_path, tiny):
    """A WavLM-style teacher (gated relative position bias) gives attention maps for eq. 1."""
    from tiny_data import TINY_CONV

    from s3prl_plugins.models.checkpoint import save_checkpoint
    from s3prl_plugins.models.factories import hubert_config
    from s3prl_plugins.models.ssl_model import SSLModel

    torch.manual_seed(0)
    cfg = hubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=64,
        with_head=False,
        conv_layers=[tuple(c) for c in TINY_CONV],
        pos_conv_kernel=8,
        pos_conv_groups=4,
        gated_relative_position=True,
        num_buckets=16,
        max_distance=32,
        name="wavlm_tiny",
    )
    save_checkpoint(str(tmp_path / "wavlm.pt"), SSLModel(cfg))
    task = build_task(
        tiny_distill_config(str(tmp_path), tiny[0], str(tmp_path / "wavlm.pt"), {"avg_attn": 1.0, "layer_wise": 1.0})
    )
    b = _data_batch(tiny[0])
    _, attns, lengths = task.teacher_outputs(b["wavs"], b["lengths"])
    assert len(attns) == 2
    for a in attns:  # valid rows are distributions over the valid keys
        for i, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(a[i, :n, :n].sum(-1), torch.ones(n), atol=1e-5, rtol=0)
            assert float(a[i, :n, n:].abs().sum()) == 0
    loss, _ = task(b)
    loss.backward()


def test_star_hubert_preset_gives_13_states_through_s3prl(tmp_path):
    import s3prl.hub as hub

    from s3prl_plugins.models import build_model, preset_config
    from s3prl_plugins.models.checkpoint import save_checkpoint

    save_checkpoint(str(tmp_path / "star.pt"), build_model(preset_config("star_hubert")))
    with torch.no_grad():
        hs = hub.star_hubert_local(ckpt=str(tmp_path / "star.pt")).eval()([torch.randn(16000) * 0.1])["hidden_states"]
    assert len(hs) == 13 and all(h.shape == (1, 49, 432) for h in hs)


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2", "wavlm"])
def test_teachers_from_s3prl_checkpoints_of_each_family(tmp_path, tiny, kind):
    """HuBERT, wav2vec 2.0 and WavLM teachers in s3prl's own checkpoint formats (tiny, random) distil
    through the CLI path; the objectives that need attention maps get them from each."""
    from refs import SMALL_CONV_LIST, s3prl_hubert_ckpt, s3prl_wav2vec2_ckpt, s3prl_wavlm_ckpt

    ckpt = {"hubert": s3prl_hubert_ckpt, "wav2vec2": s3prl_wav2vec2_ckpt, "wavlm": s3prl_wavlm_ckpt}[kind]()
    path = str(tmp_path / f"{kind}.pt")
    torch.save(ckpt, path)
    cfg = tiny_distill_config(
        str(tmp_path), tiny[0], path, {"layer_wise": 1.0, "intra_layer": 1.0, "avg_attn": 0.5}, max_steps=3
    )
    cfg["student"]["args"]["conv_layers"] = [[16, k, s] for _, k, s in SMALL_CONV_LIST]  # the teacher's stride, 40
    stats = run_distill(cfg)
    assert all(math.isfinite(v) for v in stats.values()) and stats["avg_attn"] > 0
    model, _ = load_checkpoint(os.path.join(cfg["trainer"]["exp_dir"], "model.pt"))
    assert model.config.num_layers == 2 and model.downsample_rate == 40
