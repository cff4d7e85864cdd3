"""Average frame rates of units (Meng et al. 2022 Fig. 2): counts against a hand count, BPE pieces
falling as the vocabulary grows, vocabularies the text cannot hold reported as skipped."""

import os

import pytest

from s3prl_plugins.data.kaldi import DataDir, write_data_dir
from s3prl_plugins.eval.probe.unit_rates import char_count, unit_rates

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex big jumbo frogs".split()


def _data(root, n=40):
    d = DataDir()
    audio = os.path.join(str(root), "a.wav")
    open(audio, "wb").close()  # only text and utt2dur are read
    phones = {}
    for i in range(n):
        utt = f"s-{i:03d}"
        words = [WORDS[(i + k) % len(WORDS)] for k in range(3 + i % 4)]
        d.wav[utt], d.utt2spk[utt], d.utt2dur[utt] = audio, "s", 2.0
        d.text[utt] = " ".join(w.upper() for w in words)
        phones[utt] = " | ".join(" ".join(w[:2]) for w in words)  # the first two letters as "phones"
    write_data_dir(d, os.path.join(str(root), "data"))
    root = os.path.join(str(root), "data")
    with open(os.path.join(root, "phones"), "w") as f:
        for u, p in phones.items():
            f.write(f"{u} {p}\n")
    return d, phones


def test_rates_against_a_hand_count(tmp_path):
    d, phones = _data(tmp_path)
    res = unit_rates(str(tmp_path / "data"), vocab_sizes=(40, 80, 100000))
    seconds = 2.0 * len(d.text)
    assert res["seconds"] == pytest.approx(seconds)
    n_phones = sum(len(w.split()) for p in phones.values() for w in p.split(" | "))
    assert res["rates"]["phone"] == pytest.approx(n_phones / seconds)
    assert res["rates"]["char"] == pytest.approx(sum(char_count(t) for t in d.text.values()) / seconds)
    assert char_count("AB CD") == 5  # letters + one word boundary
    assert res["rates"]["bpe40"] > res["rates"]["bpe80"]  # larger vocabularies, longer pieces
    assert res["skipped"] == ["bpe100000"]


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from s3prl_plugins.eval.probe.unit_rates import plot_unit_rates

    path = plot_unit_rates(
        {"data": "x", "seconds": 60.0, "rates": {"phone": 11.0, "char": 14.0, "bpe100": 9.0}}, str(tmp_path / "u.png")
    )
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 200  # a figure, not an empty file
    colours = {tuple(p) for p in image.reshape(-1, image.shape[2]).tolist()}
    assert len(colours) > 20  # axes, bars and labels drawn, not a blank canvas
