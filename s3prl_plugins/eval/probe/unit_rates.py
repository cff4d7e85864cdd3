"""Average frame rates of linguistic units on a corpus (Meng et al. 2022, Fig. 2): how many phones,
characters and BPE pieces a second of speech holds -- the lowest frame rate a CTC downstream over those
units can work at (CTC emits at most one label per frame), and so what sequence subsampling can afford.

* phones: the data dir's ``phones`` file (``utt p p | p ...``; the word separators are not counted);
* characters: the letters and apostrophes of ``text`` plus one word boundary per gap between words
  (SUPERB ASR's character vocabulary has a word-boundary symbol ``|``);
* BPE pieces: sentencepiece BPE models (``vocab_sizes``: the paper's 100 / 200 / 500 / 1k / 5k / 16k) trained
  on the ``train`` dir's transcripts, applied to the measured dir. A vocabulary larger than the training
  text supports is reported as skipped (sentencepiece cannot make it), not approximated.

Durations are ``utt2dur`` (with the silences the recordings hold, as the paper's dev-clean rates do).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Dict, List, Optional, Sequence

from s3prl_plugins.data.kaldi import read_table

logger = logging.getLogger(__name__)

PAPER_VOCABS = (100, 200, 500, 1000, 5000, 16000)


def char_count(text: str) -> int:
    words = text.split()
    return sum(len(w) for w in words) + max(0, len(words) - 1)


def train_bpe(texts: Sequence[str], vocab_size: int, model_prefix: str) -> Optional[str]:
    """A sentencepiece BPE model, or None when the text cannot hold ``vocab_size`` pieces."""
    import sentencepiece as spm

    with open(model_prefix + ".txt", "w", encoding="utf-8") as f:
        for t in texts:
            f.write(t.lower() + "\n")
    try:
        spm.SentencePieceTrainer.train(
            input=model_prefix + ".txt",
            model_prefix=model_prefix,
            vocab_size=vocab_size,
            model_type="bpe",
            character_coverage=1.0,
            input_sentence_size=10_000_000,
            shuffle_input_sentence=True,
            minloglevel=2,
        )
    except RuntimeError as e:  # "Vocabulary size is too high" for a small text
        logger.warning("BPE %d: %s", vocab_size, str(e).splitlines()[-1] if str(e) else e)
        return None
    return model_prefix + ".model"


def unit_rates(
    data_dir: str, train_dir: Optional[str] = None, vocab_sizes: Sequence[int] = PAPER_VOCABS
) -> Dict[str, object]:
    """``{"seconds", "utterances", "rates": {unit: Hz}, "skipped": [...]}`` for the utterances of
    ``data_dir`` that have text (and, for phones, phones)."""
    import sentencepiece as spm

    from s3prl_plugins.data.kaldi import read_data_dir

    d = read_data_dir(data_dir)
    text = read_table(os.path.join(data_dir, "text"))
    utts = [u for u in d.utts if u in text and u in d.utt2dur]
    if not utts:
        raise ValueError(f"{data_dir}: no utterance has both text and utt2dur")
    seconds = sum(d.utt2dur[u] for u in utts)
    rates: Dict[str, float] = {}
    phones_path = os.path.join(data_dir, "phones")
    if os.path.isfile(phones_path):
        ph = read_table(phones_path)
        have = [u for u in utts if u in ph]
        if have:
            rates["phone"] = sum(len([p for p in ph[u].split() if p != "|"]) for u in have) / sum(
                d.utt2dur[u] for u in have
            )
    rates["char"] = sum(char_count(text[u]) for u in utts) / seconds
    train_text = read_table(os.path.join(train_dir or data_dir, "text"))
    skipped: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in vocab_sizes:
            model = train_bpe(list(train_text.values()), int(v), os.path.join(tmp, f"bpe{v}"))
            if model is None:
                skipped.append(f"bpe{v}")
                continue
            sp = spm.SentencePieceProcessor(model_file=model)
            pieces = sum(len(sp.encode(text[u].lower())) for u in utts)
            rates[f"bpe{v}"] = pieces / seconds
    return {
        "data": data_dir,
        "train": train_dir or data_dir,
        "seconds": seconds,
        "utterances": len(utts),
        "rates": rates,
        "skipped": skipped,
    }


def plot_unit_rates(result: Dict[str, object], path: str, reference: Optional[Dict[str, float]] = None) -> str:
    """Fig. 2 as a bar chart (PNG), with the common encoder frame rates marked (50 / 25 / 12.5 / 6.25 Hz)."""
    from s3prl_plugins.eval.plots import pyplot, save_png

    plt = pyplot()

    rates: Dict[str, float] = result["rates"]  # type: ignore[assignment]
    names = list(rates)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.bar(names, [rates[n] for n in names], color="#4c72b0")
    for hz in (50, 25, 12.5, 6.25):
        ax.axhline(hz, color="grey", lw=0.8, ls="--")
        ax.text(len(names) - 0.5, hz, f" {hz:g} Hz", va="bottom", ha="right", fontsize=8, color="grey")
    for i, n in enumerate(names):
        ax.text(i, rates[n], f"{rates[n]:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("units per second")
    ax.set_title(f"average frame rate of units: {result['data']} ({result['seconds'] / 60:.1f} min)")
    fig.tight_layout()
    return save_png(fig, path)
