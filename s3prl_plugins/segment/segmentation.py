"""Segmentations as first-class data: boundaries per utterance at a model's frame rate.

File format (one per data dir, beside an ``info.json`` saying where it came from)::

    <utt> <num_frames> <end_1> <end_2> ... <end_K>

``end_k`` is the exclusive end frame of segment k (segment k covers frames ``[end_{k-1}, end_k)``,
``end_0 = 0``), strictly increasing, and ``end_K == num_frames``: a segmentation covers its utterance
with no gap and no zero-length segment. :func:`read_segmentation` checks exactly that and names the
utterance and line it refuses; :func:`check_against_audio` compares ``num_frames`` with the frames the
audio gives (``utt2dur``) at the file's frame rate.

Sources: TextGrids (MFA's or our CTC aligner's phone tier, :func:`from_textgrids`) and the smoothed
HuBERT codes of :mod:`s3prl_plugins.segment.dp`. For training, a segmentation becomes per-frame
segment labels (:func:`segment_labels`) that the data pipeline crops and pads like any frame labels.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Mapping, Optional, Sequence

from s3prl_plugins.segment.textgrid import AlignmentError, read_textgrid

logger = logging.getLogger(__name__)

Segmentation = Dict[str, List[int]]  # utt -> end frames (the last one is the utterance's frame count)


class SegmentationError(ValueError):
    """A segmentation that does not cover its utterance, or disagrees with its audio."""


def check_ends(utt: str, ends: Sequence[int], num_frames: Optional[int] = None, where: str = "") -> None:
    """Raise :class:`SegmentationError` unless ``ends`` cover ``[0, num_frames)`` with non-empty segments."""
    at = f"{where}: " if where else ""
    if not ends:
        raise SegmentationError(f"{at}utterance {utt}: no segments")
    prev = 0
    for k, e in enumerate(ends):
        if e <= prev:
            raise SegmentationError(
                f"{at}utterance {utt}: segment {k} ends at frame {e}, not after {prev} (zero-length or "
                "out-of-order boundaries); merge it into its neighbour"
            )
        prev = e
    if num_frames is not None and ends[-1] != num_frames:
        raise SegmentationError(
            f"{at}utterance {utt}: the segments end at frame {ends[-1]}, the utterance has {num_frames} frames "
            "(a segmentation must cover its utterance)"
        )


def write_segmentation(path: str, seg: Mapping[str, Sequence[int]], info: Optional[dict] = None) -> None:
    """Write atomically (and ``info`` as ``info.json`` beside it, merged per file name)."""
    for utt, ends in seg.items():
        check_ends(utt, ends, where=path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for utt in sorted(seg):
            ends = list(seg[utt])
            f.write(f"{utt} {ends[-1]} " + " ".join(str(int(e)) for e in ends) + "\n")
    os.replace(tmp, path)
    if info is not None:
        info_path = os.path.join(os.path.dirname(os.path.abspath(path)), "info.json")
        doc = {}
        if os.path.isfile(info_path):
            with open(info_path) as f:
                doc = json.load(f)
        doc[os.path.basename(path)] = info
        with open(info_path + ".tmp", "w") as f:
            json.dump(doc, f, indent=2)
        os.replace(info_path + ".tmp", info_path)


def read_segmentation(path: str) -> Segmentation:
    """``{utt: end frames}``; every line checked (see the module docstring)."""
    if not os.path.isfile(path):
        raise SegmentationError(f"{path}: no such segmentation file (python -m s3prl_plugins.bin.segment writes one)")
    out: Segmentation = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{path}:{lineno}"
            try:
                num_frames, ends = int(parts[1]), [int(x) for x in parts[2:]]
            except (IndexError, ValueError) as e:
                raise SegmentationError(f"{where}: expected '<utt> <num_frames> <end_1> ... <end_K>' (integers)") from e
            check_ends(parts[0], ends, num_frames, where)
            out[parts[0]] = ends
    return out


def segment_labels(ends: Sequence[int], num_frames: Optional[int] = None) -> List[int]:
    """Per-frame segment index (0..K-1). With ``num_frames`` the labels are fitted to that many frames
    (a model whose CNN gives a frame more or less than the file's rate): the last segment is extended
    or cut; a cut never removes a whole segment that is not the last."""
    labels: List[int] = []
    prev = 0
    for k, e in enumerate(ends):
        labels += [k] * (e - prev)
        prev = e
    if num_frames is not None:
        if num_frames > len(labels):
            labels += [labels[-1]] * (num_frames - len(labels))
        labels = labels[:num_frames]
    return labels


def expected_frames(num_samples: int, frame_shift: int = 320, window: int = 400) -> int:
    """Frames of a CNN with HuBERT's receptive field (400 samples) and stride (320) -- the rate of every
    segmentation file here."""
    return max(0, (num_samples - window) // frame_shift + 1)


def check_against_audio(
    seg: Mapping[str, Sequence[int]], data_dir: str, frame_shift: int = 320, tolerance: int = 2
) -> List[str]:
    """Utterances of ``data_dir`` without a segmentation (returned), and a :class:`SegmentationError`
    for any whose frame count differs from its audio's (``utt2dur``) by more than ``tolerance`` frames."""
    from s3prl_plugins.data.kaldi import read_data_dir

    d = read_data_dir(data_dir)
    missing = [u for u in d.utts if u not in seg]
    for utt in d.utts:
        if utt not in seg or utt not in d.utt2dur:
            continue
        want = expected_frames(int(round(d.utt2dur[utt] * 16000)), frame_shift)
        have = seg[utt][-1]
        if abs(have - want) > tolerance:
            raise SegmentationError(
                f"utterance {utt}: the segmentation covers {have} frames, its audio ({d.utt2dur[utt]:.2f} s in "
                f"{data_dir}/utt2dur) gives {want} at {frame_shift} samples per frame: the segmentation is of "
                "another recording or another frame rate; regenerate it"
            )
    return missing


def from_intervals(intervals: Sequence[tuple], num_frames: int, frame_shift: float = 0.02) -> List[int]:
    """End frames of the segments given by ``(start, end, label)`` intervals (seconds): each boundary
    rounded to the nearest frame; gaps between intervals (silences without a label) become segments of
    their own; segments that round to zero frames are merged into the next one."""
    times = sorted({0.0, *[float(s) for s, _, _ in intervals], *[float(e) for _, e, _ in intervals]})
    ends = []
    for t in times[1:]:
        e = min(num_frames, int(round(t / frame_shift)))
        if e > (ends[-1] if ends else 0):
            ends.append(e)
    if not ends or ends[-1] < num_frames:  # audio after the last interval: one more segment
        ends.append(num_frames)
    return ends


def from_textgrids(
    data_dir: str, textgrid_dir: str, tier: str = "phones", frame_shift: int = 320, max_mismatch_s: float = 0.1
) -> Dict[str, object]:
    """Phone (or word) boundaries of every utterance of ``data_dir`` from ``<textgrid_dir>/<utt>.TextGrid``.

    Returns ``{"segmentation": {utt: ends}, "missing": [utts without a TextGrid], "mismatch": [...]}``;
    a TextGrid whose last interval ends more than ``max_mismatch_s`` after the audio does is refused
    (:class:`SegmentationError`, naming the utterance): it belongs to other audio."""
    from s3prl_plugins.data.kaldi import read_data_dir

    d = read_data_dir(data_dir)
    seg: Segmentation = {}
    missing = []
    for utt in d.utts:
        path = os.path.join(textgrid_dir, f"{utt}.TextGrid")
        if not os.path.isfile(path):
            missing.append(utt)
            continue
        try:
            tiers = read_textgrid(path)
        except AlignmentError:
            missing.append(utt)
            continue
        if tier not in tiers:
            raise SegmentationError(f"{path}: no '{tier}' tier (tiers: {sorted(tiers)})")
        dur = d.utt2dur.get(utt)
        if dur is None:
            raise SegmentationError(f"{data_dir}: no utt2dur entry for {utt} (run data preparation)")
        intervals = tiers[tier]
        if intervals and intervals[-1][1] > dur + max_mismatch_s:
            raise SegmentationError(
                f"{path}: the alignment ends at {intervals[-1][1]:.2f} s, the audio of {utt} lasts {dur:.2f} s: "
                "the TextGrid belongs to other audio; re-run the alignment"
            )
        frames = expected_frames(int(round(dur * 16000)), frame_shift)
        if frames < 1:
            continue
        seg[utt] = from_intervals(intervals, frames, frame_shift / 16000)
    if missing:
        logger.warning(
            "%s: %d utterance(s) have no TextGrid in %s, e.g. %s", data_dir, len(missing), textgrid_dir, missing[:3]
        )
    return {"segmentation": seg, "missing": missing}


def average_rate(seg: Mapping[str, Sequence[int]], frame_shift: int = 320) -> float:
    """Segments per second over a segmentation (the average frame rate after pooling, Hz)."""
    segments = sum(len(e) for e in seg.values())
    frames = sum(e[-1] for e in seg.values())
    return segments / max(frames, 1) * 16000.0 / frame_shift


def labels_for(seg: Mapping[str, Sequence[int]]) -> Dict[str, List[int]]:
    """``{utt: per-frame segment labels}`` for the data pipeline (:class:`AudioDataset` ``labels``)."""
    return {u: segment_labels(e) for u, e in seg.items()}


__all__ = [
    "SegmentationError",
    "average_rate",
    "boundary_scores",
    "check_against_audio",
    "check_ends",
    "expected_frames",
    "from_intervals",
    "from_textgrids",
    "labels_for",
    "read_segmentation",
    "segment_labels",
    "write_segmentation",
]


def boundary_scores(
    hyp: Mapping[str, Sequence[int]], ref: Mapping[str, Sequence[int]], tolerance: int = 1
) -> Dict[str, float]:
    """Precision, recall and F1 of ``hyp``'s inner boundaries against ``ref``'s (each reference boundary
    matched at most once, within ``tolerance`` frames), over the utterances both have; the utterance
    end is not a boundary. The usual word/phone segmentation score (e.g. Kamper and van Niekerk 2021),
    written here because it is a few lines over our own format."""
    hits = n_hyp = n_ref = 0
    for utt in sorted(set(hyp) & set(ref)):
        h, r = list(hyp[utt][:-1]), list(ref[utt][:-1])
        n_hyp, n_ref = n_hyp + len(h), n_ref + len(r)
        used = [False] * len(r)
        j = 0
        for b in h:
            while j < len(r) and r[j] < b - tolerance:
                j += 1
            k = j
            while k < len(r) and r[k] <= b + tolerance:
                if not used[k]:
                    used[k] = True
                    hits += 1
                    break
                k += 1
    p = hits / n_hyp if n_hyp else 0.0
    rc = hits / n_ref if n_ref else 0.0
    return {
        "precision": p,
        "recall": rc,
        "f1": 2 * p * rc / (p + rc) if p + rc else 0.0,
        "hyp_boundaries": n_hyp,
        "ref_boundaries": n_ref,
    }
