"""Frame-matching distillation loss of DistilHuBERT (Chang et al. 2022, eq. 1)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from s3prl_plugins.losses.star import match_time, valid_mask


def l1_cos_loss(
    targets: Sequence[Tensor],
    predictions: Sequence[Tensor],
    lengths: Tensor,
    cos_weight: float = 1.0,
    max_mismatch: int = 2,
) -> Tensor:
    """DistilHuBERT's loss (Chang et al. 2022, eq. 1), summed over the predicted layers ``l``:

    ``L^(l) = sum_t [ (1/D) ||h_t - h^_t||_1 - lambda log sigmoid(cos(h_t, h^_t)) ]``

    with teacher frames ``h`` (``targets``, lists of (B, T, D)) and predictions ``h^`` of the same width.
    Reduction: the sum over valid frames is divided by the number of valid frames of the batch (the
    frame mean, as the reference implementation averages over non-padded frames), then summed over layers.
    ``cos_weight`` is ``lambda`` (1 in the paper).
    """
    with torch.autocast(device_type=lengths.device.type, enabled=False):
        targets, predictions, lengths = match_time(targets, predictions, lengths, max_mismatch)
        mask = valid_mask(lengths, targets[0].size(1))
        n = mask.sum().clamp(min=1)
        total = 0.0
        for h, p in zip(targets, predictions):
            if h.size(-1) != p.size(-1):
                raise ValueError(
                    f"prediction width {p.size(-1)} != teacher width {h.size(-1)}: give the head out_dim={h.size(-1)}"
                )
            h, p = h.float(), p.float()
            l1 = (h - p).abs().mean(-1)
            cos = F.cosine_similarity(h, p, dim=-1)
            per_frame = l1 - cos_weight * F.logsigmoid(cos)
            total = total + per_frame.masked_fill(~mask, 0.0).sum() / n
        return total
