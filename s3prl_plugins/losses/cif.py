"""Boundary guidance for the CIF module (Meng, Chen, Shi, Watanabe, Garcia, Lee and Tang, "On
Compressing Sequences for Self-Supervised Speech Models", SLT 2022, §2.2, eq. 3-5).

Each loss is computed per utterance exactly as the paper writes it (a squared normalised difference,
a sum over boundaries, an L1 norm over frames) and averaged over the batch's utterances; padded
frames never count. The paper's weights -- 0.5 for cardinality, 0.005 for the segment-based and 0.25
for the frame-based loss -- were tuned with these per-utterance forms. The guidance is used in
training only; at test time α is used as the CIF module produces it.

Segmentations arrive as per-frame segment labels at the front-end's frame rate (any labels that change
exactly at boundaries; negative values are padding), as the data pipeline crops and pads frame labels.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from s3prl_plugins.nn.subsampling import alpha_from_segments


def _valid(lengths: Tensor, T: int) -> Tensor:
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def cardinality_loss(alpha: Tensor, lengths: Tensor, frames_per_segment: float) -> Tensor:
    """Eq. 3: ``L_card(α) = ((Σ_{i=1}^T α_i − K) / T)²`` with ``K = T / frames_per_segment`` the desired
    number of segments (K = T/4 for 12.5 Hz from 50 Hz frames, §5.2) and ``T`` the utterance's valid
    frames; the mean over utterances."""
    T = lengths.to(torch.float64).clamp(min=1)
    total = (alpha.double() * _valid(lengths, alpha.size(1))).sum(1)
    K = T / float(frames_per_segment)
    return (((total - K) / T) ** 2).mean().to(alpha.dtype)


def boundary_ends(segment_ids: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
    """(B, T) bool: True on the last frame of each segment (the boundaries t_1..t_K of eq. 4, 1-based
    ``t_k`` is that frame's index + 1), including the utterance's last valid frame."""
    B, T = segment_ids.shape
    valid = segment_ids >= 0
    if lengths is not None:
        valid &= _valid(lengths, T)
    nxt = torch.cat([segment_ids[:, 1:], segment_ids.new_full((B, 1), -1)], dim=1)
    nxt_valid = torch.cat([valid[:, 1:], valid.new_zeros(B, 1)], dim=1)
    return valid & ((nxt != segment_ids) | ~nxt_valid)


def segment_loss(alpha: Tensor, segment_ids: Tensor, lengths: Tensor) -> Tensor:
    """Eq. 4: ``L_seg(α) = Σ_{k=1}^K | Σ_{j=1}^{t_k} α_j − k |`` over the K given boundaries of each
    utterance (the running sum of α should reach k at the end of segment k); the mean over utterances."""
    T = min(alpha.size(1), segment_ids.size(1))
    alpha, segment_ids = alpha[:, :T], segment_ids[:, :T]
    lengths = lengths.clamp(max=T)
    ends = boundary_ends(segment_ids, lengths)
    c = torch.cumsum((alpha * _valid(lengths, T)).double(), dim=1)
    k = torch.cumsum(ends.double(), dim=1)  # at an end frame: the number of that segment
    per_utt = ((c - k).abs() * ends).sum(1)
    return per_utt.mean().to(alpha.dtype)


def frame_loss(alpha: Tensor, segment_ids: Tensor, lengths: Tensor) -> Tensor:
    """Eq. 5: ``L_frame(α, α^sup) = ||α − α^sup||_1`` with ``α^sup_i = 1 / (t_{k+1} − t_k)`` for the
    frames of segment k (:func:`s3prl_plugins.nn.subsampling.alpha_from_segments`), over each
    utterance's valid frames; the mean over utterances."""
    T = min(alpha.size(1), segment_ids.size(1))
    alpha, segment_ids = alpha[:, :T], segment_ids[:, :T]
    lengths = lengths.clamp(max=T)
    target = alpha_from_segments(segment_ids, lengths).to(alpha.dtype)
    valid = _valid(lengths, T) & (segment_ids >= 0)
    return ((alpha - target).abs() * valid).sum(1).mean()
