"""TextGrid I/O (praatio) and frame-level segmentations at any frame rate.

MFA writes one TextGrid per utterance with ``words`` and ``phones`` interval tiers; our CTC aligner
writes the same, so every later stage reads alignments one way.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Sequence, Tuple

Interval = Tuple[float, float, str]


class AlignmentError(ValueError):
    """A missing or malformed alignment."""


def write_textgrid(path: str, tiers: Dict[str, Sequence[Interval]], duration: float) -> None:
    """Write interval tiers (e.g. ``{"words": [...], "phones": [...]}``) atomically."""
    from praatio import textgrid

    tg = textgrid.Textgrid()
    for name, intervals in tiers.items():
        entries = [(round(s, 4), round(e, 4), lab) for s, e, lab in intervals if e > s]
        tg.addTier(textgrid.IntervalTier(name, entries, 0.0, max(duration, entries[-1][1] if entries else duration)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    tg.save(tmp, format="long_textgrid", includeBlankSpaces=True)
    os.replace(tmp, path)


def read_textgrid(path: str) -> Dict[str, List[Interval]]:
    """Interval tiers of a TextGrid (empty labels dropped): ``{tier: [(start, end, label), ...]}``."""
    from praatio import textgrid

    if not os.path.isfile(path):
        raise AlignmentError(f"{path}: no such TextGrid")
    try:
        tg = textgrid.openTextgrid(path, includeEmptyIntervals=False)
    except Exception as e:  # noqa: BLE001
        raise AlignmentError(f"{path}: cannot parse TextGrid ({e})") from e
    out: Dict[str, List[Interval]] = {}
    for name in tg.tierNames:
        tier = tg.getTier(name)
        out[name] = [(float(s), float(e), str(lab)) for s, e, lab in tier.entries if str(lab).strip()]
    return out


def frame_labels(
    intervals: Sequence[Interval], num_frames: int, frame_shift: float = 0.02, blank: str = ""
) -> List[str]:
    """Label of each frame (its centre ``(i + 0.5) * frame_shift``), ``blank`` where no interval covers it."""
    labels = [blank] * num_frames
    for start, end, lab in intervals:
        # frame i belongs to [start, end) when its centre (i + 0.5) * shift does
        a = max(0, math.ceil(start / frame_shift - 0.5 - 1e-9))
        b = min(num_frames, math.ceil(end / frame_shift - 0.5 - 1e-9))
        for i in range(a, b):
            labels[i] = lab
    return labels
