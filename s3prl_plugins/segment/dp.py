"""Smoothed HuBERT codes: the duration-penalised dynamic programme of Kamper and van Niekerk (2021,
"Towards unsupervised phone and word segmentation using self-supervised vector-quantized neural
networks"), as Meng et al. (2022, §5.2.1) use it to guide CIF.

Given frames ``x_1..x_T`` of a teacher layer (layer 6 in the paper) and a k-means codebook ``e_1..e_K``,
choose segments ``s`` and one code ``c_s`` per segment minimising

    Σ_s [ Σ_{t ∈ s} ||x_t − e_{c_s}||²  +  λ (1 − |s|) ]

-- λ is a cost per segment (``Σ_s λ(1 − |s|) = λ·(number of segments) − λT``): larger λ gives longer
segments and a lower frame rate. The segment's code repeated over its frames gives the smoothed codes.

Implementation: prefix sums of the frame-to-code distances make every candidate segment's best code
one subtraction and a min over codes, so the programme is one pass over the end frame with the
candidate lengths (up to ``max_length``) and all codes vectorised. Ties go to the longest segment
(with λ = 0, runs of one code stay one segment -- the paper's DP λ = 0 row runs at 25 Hz, half the
frame rate). The paper notes no closed form links λ and the rate, so :func:`find_penalty` bisects λ for
a target average frame rate. Written here because no maintained library implements this programme
(Kamper's reference code is research code, not a package).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)


class PenaltySearchError(ValueError):
    """The target frame rate is out of what the programme can produce on these frames."""


def squared_distances(frames: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """(T, K) ``||x_t − e_k||²`` in float64."""
    x = np.asarray(frames, dtype=np.float64)
    e = np.asarray(codebook, dtype=np.float64)
    d = (x * x).sum(1)[:, None] - 2.0 * x @ e.T + (e * e).sum(1)[None, :]
    return np.maximum(d, 0.0)


def dp_segment(
    frames: np.ndarray, codebook: np.ndarray, penalty: float, max_length: int = 50
) -> Tuple[List[int], List[int]]:
    """Segment one utterance: ``(end frames, code of each segment)`` (ends exclusive, the last = T).

    Args:
        frames: (T, D) features.
        codebook: (K, D) k-means centroids of the same features.
        penalty: λ, the cost per segment (>= 0).
        max_length: the longest segment considered (frames).
    """
    if penalty < 0:
        raise ValueError(f"the penalty λ must be >= 0, got {penalty}")
    T = len(frames)
    if T == 0:
        raise ValueError("an utterance with no frames cannot be segmented")
    d = squared_distances(frames, codebook)
    P = np.vstack([np.zeros((1, d.shape[1])), np.cumsum(d, axis=0)])
    best = np.full(T + 1, np.inf)
    best[0] = 0.0
    back = np.zeros(T + 1, dtype=np.int64)
    code = np.zeros(T + 1, dtype=np.int64)
    L = max(1, int(max_length))
    for j in range(1, T + 1):
        ls = np.arange(min(L, j), 0, -1)  # longest first: np.argmin keeps the first of equal costs
        seg = P[j][None, :] - P[j - ls]
        k = seg.argmin(1)
        cost = seg[np.arange(len(ls)), k] + penalty * (1.0 - ls) + best[j - ls]
        i = int(cost.argmin())
        best[j], back[j], code[j] = cost[i], ls[i], k[i]
    ends, codes = [], []
    j = T
    while j > 0:
        ends.append(j)
        codes.append(int(code[j]))
        j -= int(back[j])
    return ends[::-1], codes[::-1]


def smoothed_codes(ends: Sequence[int], codes: Sequence[int]) -> List[int]:
    """Each segment's code repeated over its frames."""
    out: List[int] = []
    prev = 0
    for e, c in zip(ends, codes):
        out += [c] * (e - prev)
        prev = e
    return out


def segment_all(
    features: Mapping[str, np.ndarray], codebook: np.ndarray, penalty: float, max_length: int = 50
) -> Tuple[Dict[str, List[int]], Dict[str, List[int]]]:
    """``({utt: ends}, {utt: smoothed codes})`` for every utterance."""
    seg, codes = {}, {}
    for utt, x in features.items():
        try:
            e, c = dp_segment(x, codebook, penalty, max_length)
        except ValueError as err:
            raise ValueError(f"utterance {utt}: {err}") from err
        seg[utt], codes[utt] = e, smoothed_codes(e, c)
    return seg, codes


def rate_of(seg: Mapping[str, Sequence[int]], frame_rate: float) -> float:
    """Average segments per second."""
    return sum(len(e) for e in seg.values()) / max(1, sum(e[-1] for e in seg.values())) * frame_rate


def find_penalty(
    features: Mapping[str, np.ndarray],
    codebook: np.ndarray,
    target_rate: float,
    frame_rate: float = 50.0,
    max_length: int = 50,
    rel_tol: float = 0.02,
    max_iter: int = 40,
) -> Dict[str, float]:
    """λ whose segmentation of ``features`` averages ``target_rate`` segments per second (within
    ``rel_tol``), by bisection (the rate falls as λ grows). Returns ``{"penalty", "rate", "iterations",
    "within_tolerance"}``: a target inside the reachable range that no λ hits within ``rel_tol`` (the rate
    of a few utterances moves in jumps) gives the closest λ, with a warning.

    Raises :class:`PenaltySearchError` when the target is above the rate at λ = 0 (no smoothing at all)
    or below ``frame_rate / max_length`` (every segment at the longest length)."""

    def rate(lam: float) -> float:
        return rate_of(segment_all(features, codebook, lam, max_length)[0], frame_rate)

    r0 = rate(0.0)
    if target_rate > r0 * (1 + rel_tol):
        raise PenaltySearchError(
            f"a target of {target_rate:g} Hz is above what the programme gives at λ = 0 ({r0:.2f} Hz: the codes "
            "change no more often than that); choose a lower target rate"
        )
    floor = frame_rate / max_length
    if target_rate < floor * (1 - rel_tol):
        raise PenaltySearchError(
            f"a target of {target_rate:g} Hz is below {floor:.2f} Hz, the rate when every segment has the longest "
            f"length (max_length={max_length} frames); raise max_length"
        )
    if abs(r0 - target_rate) <= rel_tol * target_rate:
        return {"penalty": 0.0, "rate": r0, "iterations": 0, "within_tolerance": True}
    lo, hi = 0.0, 1.0
    r_hi = rate(hi)
    it = 1
    while r_hi > target_rate and it < max_iter:
        lo, hi = hi, hi * 2.0
        r_hi = rate(hi)
        it += 1
    best = (abs(r_hi - target_rate), hi, r_hi)
    while it < max_iter:
        mid = 0.5 * (lo + hi)
        r = rate(mid)
        it += 1
        if abs(r - target_rate) < best[0]:
            best = (abs(r - target_rate), mid, r)
        if abs(r - target_rate) <= rel_tol * target_rate:
            break
        if r > target_rate:
            lo = mid
        else:
            hi = mid
    within = best[0] <= rel_tol * target_rate
    if not within:  # inside the reachable range, but the rate jumps over the target on these few frames
        logger.warning(
            "no λ gives %.4g Hz within %.0f%% after %d tries: taking the closest, λ = %.4g at %.2f Hz (more "
            "utterances in the sweep make the rate a finer function of λ)",
            target_rate,
            100 * rel_tol,
            it,
            best[1],
            best[2],
        )
    return {"penalty": float(best[1]), "rate": float(best[2]), "iterations": it, "within_tolerance": within}


def hidden_features(
    data_dir: str, ckpt: str, layer: int, utts: Optional[Sequence[str]] = None, progress: bool = True
) -> Dict[str, np.ndarray]:
    """A teacher layer's frames of each utterance (our :class:`~s3prl_plugins.data.targets.FeatureReader`)."""
    from tqdm import tqdm

    from s3prl_plugins.data.audio import load_audio
    from s3prl_plugins.data.kaldi import read_data_dir
    from s3prl_plugins.data.targets import FeatureReader

    reader = FeatureReader("hidden", 1, ckpt, layer)
    d = read_data_dir(data_dir)
    keep = list(utts) if utts is not None else d.utts
    return {
        u: reader(load_audio(d.wav[u]))
        for u in tqdm(
            keep, desc=f"layer-{layer} features of {data_dir}", unit="utt", disable=not progress, mininterval=10
        )
    }
