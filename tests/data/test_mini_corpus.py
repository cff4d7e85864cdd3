"""The synthetic mini corpus: LibriSpeech layout, exact word boundaries, determinism, options."""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from s3prl_plugins.data.mini_corpus import CorpusError, MiniCorpusConfig, clean_phones, make_mini_corpus
from s3prl_plugins.data.text import sentence

SMALL = dict(utts_per_speaker=2, split_speakers={"train": 2, "dev": 1, "test": 1})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("c") / "mini")
    summary = make_mini_corpus(out, MiniCorpusConfig(**SMALL), progress=False)
    return out, summary


def _refs(out, split):
    with open(os.path.join(out, "reference", f"{split}.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_layout_and_transcripts(corpus):
    out, summary = corpus
    assert summary["utterances"] == {"train": 4, "dev": 2, "test": 2}
    for split in ("train", "dev", "test"):
        for ref in _refs(out, split):
            spk, ch, _ = ref["utt"].split("-")
            folder = os.path.join(out, "LibriSpeech", split, spk, ch)
            info = sf.info(os.path.join(folder, ref["utt"] + ".flac"))
            assert info.samplerate == 16000 and info.channels == 1
            with open(os.path.join(folder, f"{spk}-{ch}.trans.txt")) as f:
                trans = dict(line.strip().split(" ", 1) for line in f)
            assert trans[ref["utt"]] == " ".join(w["word"] for w in ref["words"]).upper()
    assert not os.path.exists(out + ".tmp")


def test_word_boundaries_are_exact(corpus):
    """Between words the signal is digital silence; each word starts and ends on a non-zero sample."""
    out, _ = corpus
    for ref in _refs(out, "train"):
        spk, ch, _ = ref["utt"].split("-")
        wav, sr = sf.read(os.path.join(out, "LibriSpeech", "train", spk, ch, ref["utt"] + ".flac"), dtype="int16")
        edges = [0] + [x for w in ref["words"] for x in (round(w["start"] * sr), round(w["end"] * sr))] + [len(wav)]
        for i in range(0, len(edges), 2):  # silences
            assert not wav[edges[i] : edges[i + 1]].any()
        for w in ref["words"]:
            a, b = round(w["start"] * sr), round(w["end"] * sr)
            assert b > a and wav[a] != 0 and wav[b - 1] != 0
            assert w["phones"], w


def test_deterministic_for_a_seed(corpus, tmp_path):
    out, _ = corpus
    again = str(tmp_path / "again")
    make_mini_corpus(again, MiniCorpusConfig(**SMALL), progress=False)
    ref = _refs(out, "dev")[0]
    spk, ch, _ = ref["utt"].split("-")
    rel = os.path.join("LibriSpeech", "dev", spk, ch, ref["utt"] + ".flac")
    a, _ = sf.read(os.path.join(out, rel))
    b, _ = sf.read(os.path.join(again, rel))
    assert np.array_equal(a, b) and _refs(out, "dev") == _refs(again, "dev")


def test_existing_corpus_kept_and_conflicts_refused(corpus, tmp_path):
    out, summary = corpus
    assert make_mini_corpus(out, MiniCorpusConfig(**SMALL), progress=False) == summary
    with pytest.raises(CorpusError, match="another config"):
        make_mini_corpus(out, MiniCorpusConfig(seed=1, **SMALL), progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(CorpusError, match="not an unfinished"):
        make_mini_corpus(str(tmp_path / "busy"), MiniCorpusConfig(**SMALL), progress=False)


def test_noise_and_reverb_options(tmp_path):
    out = str(tmp_path / "noisy")
    make_mini_corpus(
        out,
        MiniCorpusConfig(noise_snr_db=(10, 10), reverb_prob=1.0, utts_per_speaker=1, split_speakers={"train": 1}),
        progress=False,
    )
    ref = _refs(out, "train")[0]
    spk, ch, _ = ref["utt"].split("-")
    wav, sr = sf.read(os.path.join(out, "LibriSpeech", "train", spk, ch, ref["utt"] + ".flac"))
    lead = wav[: round(ref["words"][0]["start"] * sr)]
    # the noise is white at 10 dB under the utterance's power, so the silence before the first word holds
    # 1 / (1 + 10) of the noisy utterance's power (both scaled alike by the peak normalisation)
    assert lead.size > 1000
    ratio = float(np.mean(lead**2)) / (float(np.mean(wav**2)) / (1 + 10 ** (10 / 10)))
    assert 0.75 < ratio < 1.33, ratio


def test_clean_phones_and_sentences():
    assert clean_phones("h_@_l_'oU\n") == ["h", "@", "l", "oU"]
    assert clean_phones("T_'O:_t T_r_'u:") == ["T", "O:", "t", "T", "r", "u:"]
    import random

    rng = random.Random(3)
    for _ in range(50):
        words = sentence(rng)
        assert 5 <= len(words) <= 16 and all(w.isalpha() for w in words)
