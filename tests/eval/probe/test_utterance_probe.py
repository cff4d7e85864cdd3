"""Utterance-classification probe (KS / SID): pooling, layer choice, a separable task solved, errors."""

import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_data import make_tiny_teacher

from s3prl_plugins.bin.probe_utt import main as probe_cli
from s3prl_plugins.data.kaldi import DataDir, write_data_dir
from s3prl_plugins.eval.probe.phone_ctc import FeatureExtractor
from s3prl_plugins.eval.probe.utterance_probe import pool, pooled_features, run_utterance_probe, select_layer


def _tones(root, name, n, seed):
    """Data dir of 0.5 s tones: label 'low' (300-500 Hz) or 'high' (2-3 kHz); speakers spk0/spk1
    differ in level and noise floor (a channel), which per-utterance normalisation would erase."""
    rng = np.random.default_rng(seed)
    d = DataDir()
    os.makedirs(os.path.join(root, "wav"), exist_ok=True)
    t = np.arange(8000) / 16000
    for i in range(n):
        label = ("low", "high")[i % 2]
        spk = f"spk{(i // 2) % 2}"
        f0 = rng.uniform(300, 500) if label == "low" else rng.uniform(2000, 3000)
        gain = 0.02 if spk == "spk0" else 0.5
        floor = 0.002 if spk == "spk0" else 0.02
        x = gain * np.sin(2 * np.pi * f0 * t) + floor * rng.standard_normal(t.size)
        utt = f"{spk}-{name}{i:03d}"
        path = os.path.join(root, "wav", f"{utt}.wav")
        sf.write(path, x.astype("float32"), 16000)
        d.wav[utt], d.text[utt], d.utt2spk[utt] = path, label, spk
    write_data_dir(d, os.path.join(root, name))
    return os.path.join(root, name)


def test_pool_and_layer_selection():
    states = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)  # 2 layers, 3 frames, 4 dims
    assert torch.equal(select_layer(states, "avg"), states.mean(0))
    assert torch.equal(select_layer(states, "last"), states[1]) and torch.equal(select_layer(states, 0), states[0])
    assert torch.equal(select_layer(states, "-1"), states[1])
    with pytest.raises(ValueError, match="has 2 layers|have 2 layers"):
        select_layer(states, 5)
    frames = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    np.testing.assert_allclose(pool(frames), [2.0, 4.0, 1.0, 2.0])


def test_fbank_features_keep_the_level_for_utterance_probes(tmp_path):
    d = _tones(str(tmp_path), "a", 4, 0)
    x, labels, utts = pooled_features("fbank", d, "speaker", progress=False)
    assert x.shape == (4, 80) and labels == ["spk0", "spk0", "spk1", "spk1"] and utts == sorted(utts)
    # the louder speaker's mean log-Mel energy is higher (no per-utterance CMVN here) ...
    # (the peak bin's mean log energy, 28 dB = 6.4 nats apart for the same kind of tone)
    assert x[2, :40].max() > x[0, :40].max() + 5 and x[3, :40].max() > x[1, :40].max() + 5
    # ... while the frame-level probe's extractor normalises it away
    normalised = FeatureExtractor("fbank")(torch.zeros(8000).normal_(0, 0.1))
    assert normalised[0].mean(0).abs().max() < 1e-4


def test_separable_tasks_are_solved_and_results_written(tmp_path):
    train, test = _tones(str(tmp_path), "train", 16, 0), _tones(str(tmp_path), "test", 8, 1)
    for label in ("text", "speaker"):
        out = str(tmp_path / f"probe_{label}")
        r = run_utterance_probe("fbank", train, test, out, label, progress=False)
        assert r["accuracy"] == 1.0 and r["majority_baseline"] == 0.5 and r["classes"] == 2
        assert json.load(open(os.path.join(out, "result.json")))["accuracy"] == 1.0
        lines = open(os.path.join(out, "predictions.txt")).read().split("\n")[:-1]
        assert len(lines) == 8 and all(line.split()[1] == line.split()[2] for line in lines)
    # labels scrambled in training: nothing to learn, and the probe does not pretend to
    scrambled = str(tmp_path / "scrambled")
    os.makedirs(scrambled)
    for f in ("wav.scp", "utt2spk", "spk2utt"):
        os.link(os.path.join(train, f), os.path.join(scrambled, f))
    with open(os.path.join(train, "text")) as f, open(os.path.join(scrambled, "text"), "w") as g:
        rows = [line.split() for line in f]
        for i, (utt, _) in enumerate(rows):
            g.write(f"{utt} {('low', 'high')[(i // 2) % 2]}\n")  # the speaker pattern, not the tone
    r = run_utterance_probe("fbank", scrambled, test, str(tmp_path / "probe_scrambled"), "text", progress=False)
    assert r["accuracy"] <= 0.5


def test_checkpoint_features_cli_and_errors(tmp_path, capsys):
    train, test = _tones(str(tmp_path), "train", 8, 0), _tones(str(tmp_path), "test", 4, 1)
    teacher = make_tiny_teacher(str(tmp_path / "teacher.pt"), num_layers=2)
    x_avg, _, _ = pooled_features(teacher, test, "text", "avg", progress=False)
    x_0, _, _ = pooled_features(teacher, test, "text", 0, progress=False)
    assert x_avg.shape == x_0.shape == (4, 64) and not np.allclose(x_avg, x_0)
    out = str(tmp_path / "cli")
    assert (
        probe_cli(
            [
                "--features",
                teacher,
                "--train",
                train,
                "--test",
                test,
                "--label",
                "speaker",
                "--layer",
                "last",
                "--out",
                out,
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["test_utts"] == 4 and 0 <= printed["accuracy"] <= 1
    assert json.load(open(os.path.join(out, "result.json")))["layer"] == "last"
    # a data dir that does not exist, a layer the model lacks, a single-class training set
    assert probe_cli(["--train", str(tmp_path / "nope"), "--test", test, "--label", "text", "--out", out]) == 2
    assert "no such data directory" in capsys.readouterr().err
    assert (
        probe_cli(
            ["--features", teacher, "--train", train, "--test", test, "--label", "text", "--layer", "7", "--out", out]
        )
        == 2
    )
    assert "layer 7 does not exist" in capsys.readouterr().err
    one = str(tmp_path / "one")
    os.makedirs(one)
    for f in ("wav.scp", "utt2spk", "spk2utt"):
        os.link(os.path.join(train, f), os.path.join(one, f))
    with open(os.path.join(one, "text"), "w") as g:
        g.writelines(f"{line.split()[0]} yes\n" for line in open(os.path.join(train, "wav.scp")))
    assert probe_cli(["--train", one, "--test", test, "--label", "text", "--out", out]) == 2
    assert "only one class" in capsys.readouterr().err


def test_progress_bars_name_what_they_process(tmp_path, capsys):
    """Bars read '<features> features of <data dir>', never an object's repr."""
    from tiny_data import make_tiny_data

    from s3prl_plugins.eval.probe.phone_ctc import extract_features
    from s3prl_plugins.eval.probe.utterance_probe import pooled_features
    from s3prl_plugins.models import build_model, star_hubert_config
    from s3prl_plugins.models.checkpoint import save_checkpoint

    data, _ = make_tiny_data(str(tmp_path), n_utts=3)
    ex = FeatureExtractor("fbank")
    extract_features(ex, data, progress=True)
    err = capsys.readouterr().err
    assert f"log-Mel features of {data}" in err and "object at 0x" not in err
    ckpt = tmp_path / "exp" / "star_tiny" / "model.pt"
    cfg = star_hubert_config(
        embed_dim=16,
        num_layers=1,
        num_heads=2,
        ffn_dim=16,
        conv_layers=[(8, 10, 5)] + [(16, 2, 2)] * 6,
        pos_conv_kernel=4,
        pos_conv_groups=2,
    )
    save_checkpoint(str(ckpt), build_model(cfg))
    model_ex = FeatureExtractor(str(ckpt), cmvn=False)
    assert model_ex.name == "star_tiny" and "model.pt" in repr(model_ex)
    pooled_features(model_ex, data, "speaker", progress=True)
    err = capsys.readouterr().err
    assert f"star_tiny features of {data}" in err and "object at 0x" not in err
