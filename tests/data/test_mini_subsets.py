"""Keyword-spotting and speaker-identification subsets of the mini corpus."""

import collections
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from s3prl_plugins.bin.make_mini_corpus import main as make_corpus_cli
from s3prl_plugins.data.kaldi import read_data_dir
from s3prl_plugins.data.mini_corpus import CorpusError, MiniCorpusConfig, make_mini_corpus
from s3prl_plugins.data.mini_subsets import (
    CLASSES,
    KEYWORDS,
    SILENCE,
    UNKNOWN,
    SubsetConfig,
    make_subsets,
    noise,
    speaker_hash,
    speech_commands_split,
)

CORPUS = dict(utts_per_speaker=3, split_speakers={"train": 2, "dev": 1, "test": 1})
SUB = SubsetConfig(takes=1, unknown=2, silence=1, sid_heldout=(0.2, 0.2))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("c") / "mini")
    make_mini_corpus(out, MiniCorpusConfig(**CORPUS), progress=False)
    return out, make_subsets(out, SUB, progress=False)


def test_speech_commands_split_rule_and_speaker_hashes():
    # Speech Commands' README: a speaker's files all land in one split, ~10 % / 10 % / 80 %.
    names = [f"{i:08x}_nohash_0.wav" for i in range(3000)]
    counts = collections.Counter(speech_commands_split(n) for n in names)
    assert 0.08 < counts["validation"] / 3000 < 0.12 and 0.08 < counts["testing"] / 3000 < 0.12
    assert speech_commands_split("abc_nohash_0.wav") == speech_commands_split("abc_nohash_7.wav")
    for split, want in (("train", "training"), ("dev", "validation"), ("test", "testing")):
        h = speaker_hash(0, "1001", split)
        assert len(h) == 8 and speech_commands_split(f"{h}_nohash_3.wav") == want
        assert h == speaker_hash(0, "1001", split) != speaker_hash(1, "1001", split)


def test_noise_colours():
    rng = np.random.default_rng(0)
    slopes = {}
    for kind in ("white", "pink", "brown"):
        x = noise(kind, 16000, rng)
        assert x.dtype == np.float32 and np.sqrt(np.mean(x**2)) == pytest.approx(1.0, rel=1e-3)
        p = np.abs(np.fft.rfft(x)) ** 2
        f = np.arange(p.size)
        lo, hi = p[(f > 50) & (f < 200)].mean(), p[(f > 2000) & (f < 8000)].mean()
        slopes[kind] = np.log10(lo / hi)
    assert abs(slopes["white"]) < 0.3 and 0.7 < slopes["pink"] < 1.7 and slopes["brown"] > slopes["pink"] + 0.7


def test_keyword_subset(corpus):
    out, summary = corpus
    per_spk = len(KEYWORDS) * SUB.takes + SUB.unknown + SUB.silence
    assert summary["ks_clips"] == {"train": 2 * per_spk, "dev": per_spk, "test": per_spk}
    dirs = {s: read_data_dir(os.path.join(out, "subsets", "data", f"ks_{s}")) for s in ("train", "dev", "test")}
    spk = {s: set(d.utt2spk.values()) for s, d in dirs.items()}
    assert not (spk["train"] & spk["dev"]) and not (spk["train"] & spk["test"]) and not (spk["dev"] & spk["test"])
    for d in dirs.values():
        labels = collections.Counter(d.text.values())
        assert set(labels) == set(CLASSES) and labels[SILENCE] == SUB.silence * len(d.spk2utt)
    # Every clip is one second of 16 kHz mono; a word stands out of its background, silence does not.
    for utt in dirs["test"].utts:
        x, sr = sf.read(dirs["test"].wav[utt], dtype="float32")
        assert sr == 16000 and x.shape == (16000,) and np.abs(x).max() <= 1.0
        frames = np.sqrt(np.mean(x[: 16000 // 160 * 160].reshape(-1, 160) ** 2, axis=1)) + 1e-9
        dyn = 20 * np.log10(frames.max() / np.median(frames))
        # peak-to-median frame level, measured on the default subsets' 648 training clips: words
        # 8.9-34.3 dB (median 21.4; SNR 5-25 dB), noise-only clips 1.0-12.5 dB (brown noise wanders)
        if dirs["test"].text[utt] == SILENCE:
            assert 0 < dyn < 14, utt
        else:
            assert dyn > 8, utt


def test_keyword_subset_reads_like_speech_commands_in_s3prl(corpus):
    """s3prl's SUPERB KS: the train root split by the speaker-hash rule (s3prl's ``split_dataset``),
    silence from _background_noise_, other word folders -> _unknown_; the test root's 12 class folders."""
    out, _ = corpus
    root = Path(out, "subsets", "speech_commands_v0.01")
    train, valid = [], []
    for entry in root.iterdir():
        if not entry.is_dir() or entry.name == "_background_noise_":
            continue
        for p in entry.glob("*.wav"):
            split = speech_commands_split(p.name)
            label = entry.name if entry.name in CLASSES else UNKNOWN
            {"validation": valid, "training": train}.get(split, []).append((label, str(p)))
    ours = {s: read_data_dir(os.path.join(out, "subsets", "data", f"ks_{s}")) for s in ("train", "dev", "test")}
    pairs = lambda d: sorted((d.text[u], d.wav[u]) for u in d.utts)  # noqa: E731
    assert sorted(train) == pairs(ours["train"]) and sorted(valid) == pairs(ours["dev"])
    listed = (root / "validation_list.txt").read_text().split()
    assert sorted(str(root / r) for r in listed) == sorted(p for _, p in valid)
    assert sorted(p.name for p in (root / "_background_noise_").glob("*.wav")) == [
        "brown_noise.wav",
        "pink_noise.wav",
        "white_noise.wav",
    ]
    test_root = Path(out, "subsets", "speech_commands_test_set_v0.01")
    assert sorted(d.name for d in test_root.iterdir()) == sorted(CLASSES)
    test = sorted((d.name, str(p)) for d in test_root.iterdir() for p in d.glob("*.wav"))
    assert test == pairs(ours["test"])


def test_speaker_subset(corpus):
    out, summary = corpus
    dirs = {s: read_data_dir(os.path.join(out, "subsets", "data", f"sid_{s}")) for s in ("train", "dev", "test")}
    assert summary["sid_speakers"] == 4 and summary["sid_utterances"] == {"train": 4, "dev": 4, "test": 4}
    assert set(dirs["train"].spk2utt) == set(dirs["dev"].spk2utt) == set(dirs["test"].spk2utt)  # closed set
    utts = [set(d.utts) for d in dirs.values()]
    assert not (utts[0] & utts[1]) and not (utts[0] & utts[2]) and not (utts[1] & utts[2])
    assert sum(map(len, utts)) == 12  # every corpus utterance, once
    with open(os.path.join(out, "reference", "train.jsonl")) as f:
        ref = {r["utt"]: r for r in map(json.loads, f)}
    u = next(x for x in dirs["dev"].utts if x in ref)
    assert dirs["dev"].utt2dur[u] == pytest.approx(ref[u]["duration"], abs=1e-4)
    assert dirs["dev"].text[u] == " ".join(w["word"] for w in ref[u]["words"]).upper()


def test_kept_remade_and_errors(corpus, tmp_path):
    out, summary = corpus
    stamp = os.path.getmtime(os.path.join(out, "subsets", ".done"))
    assert make_subsets(out, SUB, progress=False) == summary
    assert os.path.getmtime(os.path.join(out, "subsets", ".done")) == stamp
    with pytest.raises(CorpusError, match="not a finished mini corpus"):
        make_subsets(str(tmp_path), SUB, progress=False)
    with pytest.raises(ValueError, match="kinds"):
        make_subsets(out, SUB, kinds=("asr",), progress=False)
    # Too few utterances per speaker for a closed-set SID split: the error names the way out.
    small = str(tmp_path / "small")
    make_mini_corpus(small, MiniCorpusConfig(utts_per_speaker=2, split_speakers={"train": 1}), progress=False)
    with pytest.raises(CorpusError, match="--subsets ks"):
        make_subsets(small, SUB, kinds=("sid",), progress=False)
    assert not os.path.exists(os.path.join(small, "subsets"))
    # another config: made again, in place of the old one (the last use of this module's corpus)
    other = make_subsets(out, SubsetConfig(takes=1, unknown=1, silence=1, sid_heldout=(0.2, 0.2)), progress=False)
    assert other["ks_clips"]["dev"] == summary["ks_clips"]["dev"] - 1
    assert json.load(open(os.path.join(out, "subsets", ".done"))) == other
    assert len(read_data_dir(os.path.join(out, "subsets", "data", "ks_dev")).utts) == other["ks_clips"]["dev"]


def test_cli_makes_the_corpus_and_the_subsets_asked_for(tmp_path, capsys):
    out = str(tmp_path / "c")
    assert (
        make_corpus_cli(["--out", out, "--utts-per-speaker", "1", "--speakers", "1", "1", "0", "--subsets", "ks"]) == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["subsets"]["ks_clips"]["train"] == printed["subsets"]["ks_clips"]["dev"] == 4 * 10 + 10 + 4
    assert os.path.isdir(os.path.join(out, "subsets", "data", "ks_dev")) and not os.path.exists(
        os.path.join(out, "subsets", "data", "sid_train")
    )
    # SID asked of a corpus with one utterance per speaker: a clear error, exit status 2
    assert (
        make_corpus_cli(["--out", out, "--utts-per-speaker", "1", "--speakers", "1", "1", "0", "--subsets", "sid"]) == 2
    )
    assert "at least 3 per speaker" in capsys.readouterr().err
    assert os.path.isdir(os.path.join(out, "subsets", "data", "ks_dev"))  # the finished KS subset is untouched
    assert not os.path.exists(os.path.join(out, "subsets.tmp"))
