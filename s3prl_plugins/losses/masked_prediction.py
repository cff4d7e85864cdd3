"""Masked prediction of cluster labels (HuBERT; MelHuBERT, Lin et al. eq. 1-2).

``L = - sum_{t in M} log p(c_t | x)`` with ``p(c_t | x) = softmax(W o_t)[c_t]`` (eq. 2), summed over
the masked frames ``M`` (eq. 1 restricted to masked frames, as HuBERT's ``alpha = 1``).
"""

from __future__ import annotations

from typing import Tuple

import torch.nn.functional as F
from torch import Tensor


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Cross-entropy of ``logits`` against ``targets`` on the frames where ``mask`` is True.

    Args:
        logits: (batch, frames, classes).
        targets: (batch, frames) class indices (-100 on padded frames).
        mask: (batch, frames) frames that count (masked and not padded).

    Returns:
        ``(loss_sum, correct, count)``: summed negative log-likelihood (eq. 1), number of frames whose
        argmax is the target, number of frames counted.
    """
    sel = mask & (targets >= 0)
    count = sel.sum()
    if count == 0:
        zero = logits.sum() * 0.0
        return zero, zero.detach(), count
    lg = logits[sel]
    tg = targets[sel]
    loss = F.cross_entropy(lg.float(), tg, reduction="sum")
    correct = (lg.argmax(-1) == tg).sum()
    return loss, correct, count
