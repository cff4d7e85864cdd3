"""Forced alignment with a CTC phone model trained on the corpus (runs where MFA cannot).

``torchaudio.functional.forced_align`` gives the frame of every phone in the known sequence; a word
spans from its first phone's first frame to its last phone's last frame. Output: one TextGrid per
utterance with ``words`` and ``phones`` tiers (MFA's layout), plus ``failed.txt`` listing utterances
that could not be aligned and why.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from s3prl_plugins.data.lexicon import PhoneVocab
from s3prl_plugins.nn.phone_ctc import PhoneCTC
from s3prl_plugins.segment.textgrid import read_textgrid, write_textgrid

logger = logging.getLogger(__name__)


@dataclass
class AlignResult:
    aligned: int
    failed: List[Tuple[str, str]]


def with_silences(words: List[List[int]], silence: Optional[int]) -> List[int]:
    """The token sequence of an utterance: phones, with the silence token around every word if given."""
    ids: List[int] = []
    for w in words:
        if silence is not None:
            ids.append(silence)
        ids.extend(w)
    if silence is not None:
        ids.append(silence)
    return ids


@torch.no_grad()
def align_utterance(
    model: PhoneCTC,
    feats: torch.Tensor,
    words: List[List[int]],
    frame_shift: float,
    silence: Optional[int] = None,
    blank_penalty: float = 0.0,
):
    """Word and phone intervals (seconds) of one utterance; raises ValueError with the reason.

    Args:
        silence: token id of silence, expected before, between and after words (corpora with pauses).
        blank_penalty: subtracted from the blank's log-probability before Viterbi, so frames go to the
            phones and silences around them instead of CTC's blank: spans then cover whole phones
            rather than their peaks.
    """
    import torchaudio.functional as AF

    ids = with_silences(words, silence)
    T = feats.size(1)
    repeats = sum(1 for a, b in zip(ids, ids[1:]) if a == b)
    if T < len(ids) + repeats:
        raise ValueError(f"{T} frames cannot hold {len(ids)} phones")
    lp = model(feats[None], torch.tensor([T]))
    if not torch.isfinite(lp).all():
        raise ValueError("non-finite log-probabilities")
    if blank_penalty:
        lp = lp.clone()
        lp[..., 0] -= blank_penalty
    labels, scores = AF.forced_align(lp, torch.tensor([ids], dtype=torch.int32), blank=0)
    spans = AF.merge_tokens(labels[0], scores[0].exp())
    if len(spans) != len(ids):
        raise ValueError(f"alignment produced {len(spans)} spans for {len(ids)} phones")
    if silence is not None:
        spans = [s for s, i in zip(spans, ids) if i != silence]
    word_iv, phone_iv = [], []
    k = 0
    for w in words:
        first, last = spans[k], spans[k + len(w) - 1]
        word_iv.append((first.start * frame_shift, last.end * frame_shift))
        for s in spans[k : k + len(w)]:
            phone_iv.append((s.start * frame_shift, s.end * frame_shift, s.token))
        k += len(w)
    return word_iv, phone_iv


def frame_energies(wav: torch.Tensor, num_frames: int, frame_shift: float, window: float = 0.025) -> torch.Tensor:
    """Log energy (dB) of each frame (hop ``frame_shift``, ``window`` long), for silence trimming."""
    hop, win = int(round(frame_shift * 16000)), int(round(window * 16000))
    padded = torch.nn.functional.pad(wav, (0, max(0, (num_frames - 1) * hop + win - wav.numel())))
    frames = padded.unfold(0, win, hop)[:num_frames]
    return 10 * torch.log10(frames.pow(2).mean(-1) + 1e-10)


def trim_silence(
    intervals: List[Tuple[float, float]], energy_db: torch.Tensor, frame_shift: float, floor_db: float = 50.0
):
    """Move word edges inward past frames more than ``floor_db`` below the utterance's loudest frame
    (never emptying a word): CTC spans under a blank penalty may run into the pauses around words."""
    silent = energy_db < energy_db.max() - floor_db
    out = []
    for start, end in intervals:
        a, b = int(round(start / frame_shift)), int(round(end / frame_shift))
        while a < b - 1 and a < len(silent) and silent[a]:
            a += 1
        while b - 1 > a and b - 1 < len(silent) and silent[b - 1]:
            b -= 1
        out.append((a * frame_shift, b * frame_shift))
    return out


def align_corpus(
    model: PhoneCTC,
    vocab: PhoneVocab,
    feats: Dict[str, torch.Tensor],
    phones: Dict[str, List[List[str]]],
    texts: Dict[str, str],
    durations: Dict[str, float],
    frame_shift: float,
    out_dir: str,
    silence: Optional[str] = None,
    blank_penalty: float = 0.0,
    energies: Optional[Dict[str, torch.Tensor]] = None,
) -> AlignResult:
    """Align every utterance; TextGrids to ``out_dir/<utt>.TextGrid``, failures to ``out_dir/failed.txt``."""
    os.makedirs(out_dir, exist_ok=True)
    failed: List[Tuple[str, str]] = []
    n = 0
    for utt in sorted(feats):
        try:
            if utt not in phones:
                raise ValueError("no phone transcription")
            words = texts[utt].split()
            if len(words) != len(phones[utt]):
                raise ValueError(
                    f"{len(words)} words in the transcript but {len(phones[utt])} in the phone transcription"
                )
            ids = [vocab.encode(w) for w in phones[utt]]
            sil = vocab.index[silence] if silence else None
            word_iv, phone_iv = align_utterance(model, feats[utt], ids, frame_shift, sil, blank_penalty)
            if energies is not None and utt in energies:
                word_iv = trim_silence(word_iv, energies[utt], frame_shift)
        except (ValueError, KeyError) as e:
            failed.append((utt, str(e)))
            continue
        write_textgrid(
            os.path.join(out_dir, f"{utt}.TextGrid"),
            {
                "words": [(s, e, w.lower()) for (s, e), w in zip(word_iv, words)],
                "phones": [(s, e, vocab.symbols[t]) for s, e, t in phone_iv],
            },
            durations.get(utt, max(e for _, e in word_iv)),
        )
        n += 1
    with open(os.path.join(out_dir, "failed.txt"), "w") as f:
        for utt, reason in failed:
            f.write(f"{utt} {reason}\n")
    if failed:
        logger.warning("%d utterance(s) could not be aligned: listed in %s/failed.txt", len(failed), out_dir)
    return AlignResult(n, failed)


def boundary_errors(textgrid_dir: str, reference_jsonl: str) -> Dict[str, float]:
    """Mean absolute word-boundary error (ms) of TextGrids against exact reference word times."""
    starts, ends = [], []
    with open(reference_jsonl) as f:
        for line in f:
            ref = json.loads(line)
            path = os.path.join(textgrid_dir, f"{ref['utt']}.TextGrid")
            if not os.path.isfile(path):
                continue
            hyp = read_textgrid(path).get("words", [])
            if len(hyp) != len(ref["words"]):
                continue
            for (s, e, _), w in zip(hyp, ref["words"]):
                starts.append(abs(s - w["start"]) * 1000)
                ends.append(abs(e - w["end"]) * 1000)
    if not starts:
        raise ValueError(f"no aligned utterance of {reference_jsonl} found in {textgrid_dir}")
    n = len(starts)
    both = sorted(starts + ends)
    return {
        "words": n,
        "mean_abs_start_ms": sum(starts) / n,
        "mean_abs_end_ms": sum(ends) / n,
        "mean_abs_boundary_ms": (sum(starts) + sum(ends)) / (2 * n),
        "median_abs_boundary_ms": both[len(both) // 2],
        "within_20ms": sum(1 for x in both if x <= 20) / len(both),
    }


__all__ = [
    "AlignResult",
    "align_corpus",
    "align_utterance",
    "boundary_errors",
    "with_silences",
    "frame_energies",
    "trim_silence",
]
