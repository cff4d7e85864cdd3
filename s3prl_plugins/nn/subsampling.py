"""Sequence subsampling: Continuous Integrate-and-Fire (CIF) segment pooling.

Variable-length subsampling of Meng, Chen, Shi, Watanabe, Garcia, Lee and Tang, "On Compressing
Sequences for Self-Supervised Speech Models" (SLT 2022), §2.2 and §5.2, after Dong and Xu's CIF
(ICASSP 2020): a non-negative weight α_t per frame; a segment boundary fires wherever the running sum
Σ_{i<=t} α_i crosses an integer; each segment is the weighted sum of the frames it covers with weights
ε, α_t, ..., α_t' − ε' -- the first frame contributes the leftover ε of its α beyond the previous
integer, the last frame the part α_t' − ε' up to the next integer, and ε' is carried over into the next
segment (§5.2). Those weights sum to 1, so a complete segment is a weighted average of its frames.

In general (α may exceed 1, so one frame may cross several integers), frame t covers the interval
[c_{t-1}, c_t] of the cumulative sum c, and its weight in segment k is the length of the overlap of that
interval with [k, k + 1]:

    w_{k,t} = max(0, min(c_t, k + 1) − max(c_{t−1}, k)),     segment_k = Σ_t w_{k,t} x_t.

Why not the ``torch-cif`` package (0.2.0, PyPI): it computes the same weights (outputs agree to 8e-5 on
the benchmark's inputs) at the same speed (``bench/bench_cif.py``: 0.95-1.4x its time, forward +
backward, B = 8, D = 768, T = 500-1500, CPU), but its prefix sum is float32 -- over 20,000 frames that
puts frames on the wrong side of a boundary (``tests/test_cif.py``) -- it refuses α > 1 unless told, and
its tail rule is fixed. Ours integrates in float64, snaps sums within 1e-6 of an integer (so α = 1/F is
exact fixed-rate pooling), takes ``lengths`` and documents its tail rule; it is ~60 lines, so the
project does not take on the dependency.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

# Cumulative sums within this distance of an integer count as that integer: α = 1/3 summed 300 times
# is 99.99999999999997 in float64, and fixed-rate CIF (α = 1/F) must still give T / F segments.
SNAP = 1e-6


def _cumulative(alpha: Tensor, lengths: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """(α with padded frames zeroed, float64 cumulative sum snapped to integers within SNAP)."""
    if lengths is not None:
        valid = torch.arange(alpha.size(1), device=alpha.device)[None, :] < lengths[:, None]
        alpha = alpha * valid
    c = torch.cumsum(alpha.double(), dim=1)  # float32 prefix sums drift by ~1e-4 over 1,500 frames
    rounded = torch.round(c)
    c = torch.where((c - rounded).abs() < SNAP, rounded, c)
    return alpha, c


def cif(
    features: Tensor,
    alpha: Tensor,
    lengths: Optional[Tensor] = None,
    tail_threshold: Optional[float] = None,
) -> Tuple[Tensor, Tensor]:
    """Integrate ``features`` with weights ``alpha`` and fire a segment at every integer crossing.

    Fully vectorised: a float64 cumulative sum, floor, and one ``scatter_add`` per integer a single
    frame can cross (1 for α <= 1) -- no loop over frames. Differentiable in ``features`` and ``alpha``.

    Args:
        features: (batch, frames, dim).
        alpha: (batch, frames), non-negative (a sigmoid's output is in [0, 1]; larger values are allowed:
            such a frame fills several segments).
        lengths: (batch,) valid frames (None: all); α of padded frames is ignored.
        tail_threshold: what happens to the incomplete last segment (weight Σα − floor(Σα) < 1). ``None``
            (training, the default): dropped -- the number of segments of utterance b is
            ``floor(Σ_{t < lengths[b]} α[b, t])`` (sums within 1e-6 of an integer count as that integer).
            A number (inference, CIF's usual 0.5): the tail is kept, normalised by its weight into an
            average, when its weight is at least the threshold. An utterance whose α never fires
            (Σα < 1) gives no segment (or only its tail).

    Returns:
        ``(segments (batch, max segments, dim), segment_lengths (batch,))``; rows past an utterance's
        segment count are zero.
    """
    if features.dim() != 3 or alpha.shape != features.shape[:2]:
        raise ValueError(f"features must be (batch, frames, dim) and alpha (batch, frames): got {tuple(features.shape)} and {tuple(alpha.shape)}")
    if bool((alpha < 0).any()):
        raise ValueError("alpha must be non-negative")
    B, T, D = features.shape
    alpha, c = _cumulative(alpha, lengths)
    c_prev = torch.cat([c.new_zeros(B, 1), c[:, :-1]], dim=1)
    total = c[:, -1] if T else c.new_zeros(B)
    complete = torch.floor(total)
    tail = total - complete
    if tail_threshold is None:
        keep_tail = torch.zeros(B, dtype=torch.bool, device=alpha.device)
    else:
        keep_tail = tail >= max(tail_threshold, SNAP)
    seg_lengths = complete.long() + keep_tail.long()
    n = int(seg_lengths.max()) if B else 0
    # rows 0..n-1 are the output; row n collects what is dropped (an incomplete tail), so nothing
    # needs masking afterwards
    out = features.new_zeros(B, n + 1, D)
    # a kept tail is normalised by its weight: scale the weights of the frames that fall into it
    tail_scale = torch.where(keep_tail, tail.clamp(min=SNAP).reciprocal(), torch.ones_like(tail))
    k0 = torch.floor(c_prev)
    crossings = int((torch.floor(c) - k0).max()) if T else 0
    for j in range(crossings + 1):  # 1 pass for α <= 1; one more per extra integer a frame can cross
        k = k0 + j
        w = (torch.minimum(c, k + 1) - torch.maximum(c_prev, k)).clamp(min=0)
        in_tail = k == complete[:, None]
        w = torch.where(in_tail, w * tail_scale[:, None], w)
        index = torch.where(k < seg_lengths[:, None], k, torch.full_like(k, n)).long()
        out.scatter_add_(1, index.unsqueeze(-1).expand(B, T, D), w.to(features.dtype).unsqueeze(-1) * features)
    return out[:, :n], seg_lengths


def cif_reference(
    features: Tensor, alpha: Tensor, lengths: Optional[Tensor] = None, tail_threshold: Optional[float] = None
) -> Tuple[Tensor, Tensor]:
    """The straightforward per-frame loop of CIF (integrate; while the accumulator reaches 1, fire the
    part that completes the segment and carry the rest), in float64 -- the slow, obvious form that
    :func:`cif` is tested against. Same arguments, returns and tail rule."""
    B, T, D = features.shape
    outs, counts = [], []
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        acc = 0.0
        seg = torch.zeros(D, dtype=torch.float64)
        segs = []
        for t in range(n):
            a = float(alpha[b, t])
            x = features[b, t].double()
            while acc + a >= 1.0 - SNAP:
                take = 1.0 - acc
                segs.append(seg + take * x)
                seg = torch.zeros(D, dtype=torch.float64)
                a = max(0.0, a - take)
                acc = 0.0
            seg = seg + a * x
            acc += a
        if tail_threshold is not None and acc >= max(tail_threshold, SNAP):
            segs.append(seg / acc)
        outs.append(segs)
        counts.append(len(segs))
    S = max(counts) if counts else 0
    rows = [torch.stack(segs) if segs else torch.zeros(0, D, dtype=torch.float64) for segs in outs]
    rows = [torch.cat([r, r.new_zeros(S - r.size(0), D)]) for r in rows]  # no in-place writes: cheap backward
    out = torch.stack(rows) if rows else torch.zeros(0, 0, D, dtype=torch.float64)
    return out.to(features.dtype), torch.tensor(counts, dtype=torch.long)
