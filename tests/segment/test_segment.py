"""Alignments: TextGrid I/O, frame labels, CTC forced alignment on a known path, boundary errors,
the phone CTC model learning, and MFA detection with its explicit fallback."""

import json
import os
import stat

import pytest
import torch

from s3prl_plugins.eval.probe.phone_ctc import (
    FeatureDataset,
    PhoneVocab,
    phone_error_rate,
    read_phones,
    train_phone_ctc,
)
from s3prl_plugins.segment.aligner import align_corpus, align_utterance, boundary_errors
from s3prl_plugins.segment.mfa import mfa_align_command, mfa_status
from s3prl_plugins.segment.textgrid import AlignmentError, frame_labels, read_textgrid, write_textgrid


def test_textgrid_round_trip_and_frame_labels(tmp_path):
    path = str(tmp_path / "a.TextGrid")
    words = [(0.1, 0.35, "hello"), (0.5, 0.9, "world")]
    write_textgrid(path, {"words": words, "phones": [(0.1, 0.2, "h"), (0.2, 0.35, "@")]}, 1.0)
    tiers = read_textgrid(path)
    assert tiers["words"] == words
    labels = frame_labels(tiers["words"], 50, 0.02)
    assert (
        labels[4] == ""
        and labels[5] == "hello"
        and labels[16] == "hello"
        and labels[17] == ""
        and labels[25] == "world"
    )
    assert frame_labels(words, 100, 0.01)[10] == "hello"
    with pytest.raises(AlignmentError, match="no such"):
        read_textgrid(str(tmp_path / "missing.TextGrid"))
    (tmp_path / "bad.TextGrid").write_text("not a textgrid")
    with pytest.raises(AlignmentError, match="cannot parse"):
        read_textgrid(str(tmp_path / "bad.TextGrid"))


class _Oracle(torch.nn.Module):
    """Returns fixed log-probabilities (the 'model' of a known path)."""

    def __init__(self, lp):
        super().__init__()
        self.lp = lp

    def forward(self, feats, lengths):
        return self.lp[None]


def test_forced_alignment_recovers_a_known_path():
    # phones 1,2 | 3 over 10 frames: 1 1 2 0 0 3 3 3 0 0
    path = [1, 1, 2, 0, 0, 3, 3, 3, 0, 0]
    lp = torch.full((10, 4), -10.0)
    for t, k in enumerate(path):
        lp[t, k] = 0.0
    words, phones = align_utterance(_Oracle(lp.log_softmax(-1)), torch.zeros(1, 10, 1), [[1, 2], [3]], 0.01)
    assert words == [(0.0, 0.03), (0.05, 0.08)]
    assert [p[2] for p in phones] == [1, 2, 3]
    with pytest.raises(ValueError, match="cannot hold"):
        align_utterance(_Oracle(lp[:2]), torch.zeros(1, 2, 1), [[1, 2], [3]], 0.01)


def test_boundary_errors(tmp_path):
    write_textgrid(str(tmp_path / "u1.TextGrid"), {"words": [(0.10, 0.30, "a"), (0.40, 0.60, "b")]}, 1.0)
    ref = {"utt": "u1", "words": [{"word": "a", "start": 0.12, "end": 0.30}, {"word": "b", "start": 0.40, "end": 0.64}]}
    (tmp_path / "ref.jsonl").write_text(json.dumps(ref) + "\n")
    e = boundary_errors(str(tmp_path), str(tmp_path / "ref.jsonl"))
    assert (
        e["words"] == 2
        and e["mean_abs_start_ms"] == pytest.approx(10.0)
        and e["mean_abs_end_ms"] == pytest.approx(20.0)
    )
    assert e["mean_abs_boundary_ms"] == pytest.approx(15.0)


def _toy_corpus(n=40, seed=0):
    """Features that show the phone identity (one-hot + noise), 4-7 frames a phone, silences between words."""
    g = torch.Generator().manual_seed(seed)
    feats, phones, times = {}, {}, {}
    for i in range(n):
        words, frames, t = [], [], 0
        wtimes = []
        for _ in range(int(torch.randint(2, 4, (1,), generator=g))):
            w = [int(x) for x in torch.randint(1, 6, (3,), generator=g)]
            frames += [0] * 3
            t += 3
            start = t
            for p in w:
                d = int(torch.randint(4, 8, (1,), generator=g))
                frames += [p] * d
                t += d
            wtimes.append((start, t))
            words.append(w)
        frames += [0] * 3
        x = torch.nn.functional.one_hot(torch.tensor(frames), 6).float() + 0.3 * torch.randn(
            len(frames), 6, generator=g
        )
        feats[f"u{i:02d}"] = x[None]
        phones[f"u{i:02d}"] = [[f"p{p}" for p in w] for w in words]
        times[f"u{i:02d}"] = wtimes
    return feats, phones, times


def test_phone_ctc_learns_and_aligns(tmp_path):
    feats, phones, times = _toy_corpus()
    vocab = PhoneVocab([p for ws in phones.values() for w in ws for p in w])
    targets = {u: vocab.encode([p for w in ws for p in w]) for u, ws in phones.items()}
    model = train_phone_ctc(
        (feats, targets), None, len(vocab), str(tmp_path / "m"), max_steps=150, batch_frames=400, hidden=64
    )
    per = phone_error_rate(model, FeatureDataset(feats, targets))
    assert per < 0.15, per
    texts = {u: " ".join(f"w{j}" for j in range(len(ws))) for u, ws in phones.items()}
    res = align_corpus(model, vocab, feats, phones, texts, {}, 0.01, str(tmp_path / "tg"))
    assert res.aligned == len(feats) and not res.failed
    errs = []
    for u, wt in times.items():
        hyp = read_textgrid(str(tmp_path / "tg" / f"{u}.TextGrid"))["words"]
        errs += [abs(h[0] - s * 0.01) for h, (s, _) in zip(hyp, wt)]
    assert sum(errs) / len(errs) < 0.03  # word starts within 3 frames on average


def test_align_failures_are_listed(tmp_path):
    feats, phones, _ = _toy_corpus(n=3)
    vocab = PhoneVocab(["p1", "p2", "p3", "p4", "p5"])
    model = train_phone_ctc(
        (feats, {u: vocab.encode([p for w in ws for p in w]) for u, ws in phones.items()}),
        None,
        len(vocab),
        str(tmp_path / "m"),
        max_steps=2,
        batch_frames=400,
        hidden=16,
    )
    texts = {u: " ".join(f"w{j}" for j in range(len(ws))) for u, ws in phones.items()}
    u0, u1, u2 = sorted(feats)
    texts[u0] = "one"  # word count mismatch (toy utterances have 2-3 words)
    phones[u1] = [["zz"]] * len(phones[u1])  # unknown phone
    del phones[u2]
    res = align_corpus(model, vocab, feats, phones, texts, {}, 0.01, str(tmp_path / "tg"))
    reasons = dict(res.failed)
    assert (
        res.aligned == 0
        and "words in the transcript" in reasons[u0]
        and "not in the inventory" in reasons[u1]
        and "no phone" in reasons[u2]
    )
    assert len((tmp_path / "tg" / "failed.txt").read_text().splitlines()) == 3


def test_mfa_detection_and_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    ok, reason = mfa_status()
    assert not ok and "conda" in reason
    fake = tmp_path / "mfa"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named '_kalpy'\" >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    ok, reason = mfa_status()
    assert not ok and "_kalpy" in reason
    fake.write_text("#!/bin/sh\necho 3.4.3\n")
    assert mfa_status() == (True, "3.4.3")
    cmd = mfa_align_command("corpus", "dict.txt", "english_us_arpa", "out", jobs=4)
    assert cmd[:6] == ["mfa", "align", "corpus", "dict.txt", "english_us_arpa", "out"] and "4" in cmd


def test_read_phones(tmp_path):
    (tmp_path / "phones").write_text("u1 h @ | w 3: l d\nu2 a\n")
    assert read_phones(str(tmp_path / "phones")) == {"u1": [["h", "@"], ["w", "3:", "l", "d"]], "u2": [["a"]]}


def test_silence_tokens_and_blank_penalty_on_a_known_path():
    # tokens: 0 blank, 1 sil, 2..4 phones; frames: sil sil p2 p3 (blank) sil sil p4 p4 sil
    from s3prl_plugins.segment.aligner import with_silences

    assert with_silences([[2, 3], [4]], 1) == [1, 2, 3, 1, 4, 1]
    assert with_silences([[2, 3], [4]], None) == [2, 3, 4]
    path = [1, 1, 2, 3, 0, 1, 1, 4, 4, 1]
    lp = torch.full((10, 5), -8.0)
    for t, k in enumerate(path):
        lp[t, k] = 0.0
    lp[4, 3] = -1.0  # frame 4: blank best, phone 3 second (a CTC peak's tail)
    lp = lp.log_softmax(-1)
    plain, _ = align_utterance(_Oracle(lp), torch.zeros(1, 10, 1), [[2, 3], [4]], 0.01, silence=1)
    assert plain == [(0.02, 0.04), (0.07, 0.09)]
    # with the blank penalised, frame 4 joins phone 3: the word ends where the phone really does
    pen, _ = align_utterance(_Oracle(lp), torch.zeros(1, 10, 1), [[2, 3], [4]], 0.01, silence=1, blank_penalty=5.0)
    assert pen == [(0.02, 0.05), (0.07, 0.09)]


def test_trim_silence_moves_edges_past_quiet_frames():
    from s3prl_plugins.segment.aligner import frame_energies, trim_silence

    wav = torch.zeros(16000)
    wav[3200:6400] = torch.sin(torch.arange(3200) * 0.3)  # sound from 0.2 to 0.4 s
    en = frame_energies(wav, 100, 0.01)
    assert en.shape == (100,) and en[30] > en[10] + 50
    # a word aligned from 0.15 to 0.50 s is pulled in to the audible 0.18-0.40 s (25 ms windows)
    ((s, e),) = trim_silence([(0.15, 0.50)], en, 0.01)
    assert 0.17 <= s <= 0.20 and 0.39 <= e <= 0.41
    # a fully silent span is never emptied
    ((s, e),) = trim_silence([(0.60, 0.70)], en, 0.01)
    assert e > s


def test_mfa_path_with_a_stand_in_binary(tmp_path, monkeypatch):
    """The real MFA code path (corpus layout, command, TextGrid collection, failure list) driven by a
    stand-in `mfa` that writes one TextGrid per .lab file it finds, except for one utterance."""
    import sys

    import numpy as np
    import soundfile as sf

    from s3prl_plugins.data.kaldi import DataDir, write_data_dir
    from s3prl_plugins.segment.mfa import run_mfa

    d = DataDir()
    for utt in ("s1-a", "s1-b", "s2-c"):
        path = tmp_path / f"{utt}.wav"
        sf.write(path, np.zeros(16000, dtype="float32"), 16000)
        d.wav[utt], d.text[utt], d.utt2spk[utt] = str(path), "HELLO WORLD", utt.split("-")[0]
    write_data_dir(d, str(tmp_path / "data"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "mfa"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "if sys.argv[1] == 'version':\n    print('3.4.3'); sys.exit(0)\n"
        "assert sys.argv[1] == 'align'\n"
        "corpus, out = sys.argv[2], sys.argv[5]\n"
        "from s3prl_plugins.segment.textgrid import write_textgrid\n"
        "for spk in os.listdir(corpus):\n"
        "    for f in os.listdir(os.path.join(corpus, spk)):\n"
        "        if f.endswith('.lab') and not f.startswith('s2-c'):\n"
        "            write_textgrid(os.path.join(out, spk, f[:-4] + '.TextGrid'), "
        "{'words': [(0.1, 0.4, 'hello'), (0.5, 0.9, 'world')]}, 1.0)\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    aligned = run_mfa(str(tmp_path / "data"), "dict.txt", "english_us_arpa", str(tmp_path / "align"))
    assert aligned == ["s1-a", "s1-b"]
    assert read_textgrid(str(tmp_path / "align" / "s1-a.TextGrid"))["words"][1] == (0.5, 0.9, "world")
    assert (tmp_path / "align.mfa" / "corpus" / "s1" / "s1-a.lab").read_text() == "HELLO WORLD\n"
    assert (tmp_path / "align" / "failed.txt").read_text().startswith("s2-c not aligned by MFA")


def test_linear_probe_reads_tones_from_log_mel(tmp_path):
    """The probe CLI's default (SUPERB PR's linear probe) learns a phone sequence that log-Mel carries
    linearly: each 3-frame tone segment of the tiny data is one 'phone'."""
    import json

    from tiny_data import make_tiny_data

    from s3prl_plugins.bin.probe import main as probe_main
    from s3prl_plugins.data.dataset import read_labels
    from s3prl_plugins.eval.probe.phone_ctc import PhoneCTC

    data, labels = make_tiny_data(str(tmp_path), n_utts=24)
    with open(os.path.join(data, "phones"), "w") as f:
        for utt, lab in sorted(read_labels(labels).items()):
            segs = [lab[0]] + [b for a, b in zip(lab, lab[1:]) if b != a]
            f.write(utt + " " + " ".join(f"t{c}" for c in segs) + "\n")
    assert (
        probe_main(
            ["--features", "fbank", "--train", data, "--test", data, "--out", str(tmp_path / "p"), "--max-steps", "400"]
        )
        == 0
    )
    result = json.load(open(tmp_path / "p" / "result.json"))
    assert result["probe"] == "linear" and result["per"] < 0.5 and result["seed"] == 0, result
    # another seed: another probe (initialisation, batch order) on the same features; the same seed: the same probe
    args = ["--features", "fbank", "--train", data, "--test", data, "--max-steps", "40"]
    runs = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert probe_main([*args, "--out", str(tmp_path / name), "--seed", seed]) == 0
        runs[name] = json.load(open(tmp_path / name / "result.json"))
    assert runs["a"] == {**runs["b"], "seed": 1} and runs["a"]["seed"] == 1
    assert runs["c"]["layer_weights"] != runs["a"]["layer_weights"] or runs["c"]["per"] != runs["a"]["per"]
    linear = PhoneCTC(40, 9, num_layers_in=3, dilations=())
    assert sum(p.numel() for p in linear.parameters()) == 3 + 2 * 40 + 40 * 9 + 9  # weights, LN, one linear layer
