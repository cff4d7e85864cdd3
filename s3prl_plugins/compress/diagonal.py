"""Diagonality of attention heads (Lin et al. 2024 §VI-D, eq. 9; after Zhang et al. 2021).

For one head's map ``a`` over ``T`` frames::

    diag(a) = 1 - (1/T) sum_i  (sum_j a_ij |i - j|) / max(|i - 1|, ..., |i - T|)       (eq. 9)

1 for an identity map, lower the farther from the diagonal the weight sits. A one-frame utterance has no
off-diagonal position and counts as 1. Measured per head, averaged over utterances (100 in the paper),
and over heads for the model's figure (Fig. 9 left). The heads that score highest are the ones to replace
by the identity or a 1-D convolution (:func:`s3prl_plugins.compress.structured.replace_heads`).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import torch
from torch import Tensor

from s3prl_plugins.models.ssl_model import SSLModel


def diagonality(probs: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
    """Eq. 9 of each map: probs (batch, frames, frames) rows summing to 1 over the valid keys,
    lengths (batch,) valid frames -> (batch,)."""
    b, t, _ = probs.shape
    if lengths is None:
        lengths = torch.full((b,), t, dtype=torch.long, device=probs.device)
    pos = torch.arange(t, device=probs.device)
    dist = (pos[:, None] - pos[None, :]).abs().to(probs.dtype)  # |i - j|
    num = (probs * dist).sum(-1)  # (B, T)
    n = lengths.to(probs.device)
    denom = torch.maximum(pos[None, :], n[:, None] - 1 - pos[None, :]).to(probs.dtype)  # max_j |i - j|
    ratio = torch.where(denom > 0, num / denom.clamp(min=1), torch.zeros_like(num))
    valid = pos[None, :] < n[:, None]
    return 1.0 - (ratio * valid).sum(1) / n.clamp(min=1).to(probs.dtype)


@torch.no_grad()
def head_diagonality(
    model: SSLModel, batches: Iterable[Dict[str, Tensor]], device: str = "cpu", max_utterances: int = 100
) -> List[Tensor]:
    """Eq. 9 of every attention head, averaged over up to ``max_utterances`` utterances: one (attention
    heads,) tensor per layer (empty for a layer without attention heads). ``batches`` are the data
    pipeline's (``wavs``, ``lengths``)."""
    atts = [layer.attention for layer in model.encoder.layers]
    sums = [torch.zeros(a.num_heads, dtype=torch.float64) for a in atts]
    counted = [0]
    budget = [0]

    def make_hook(i: int):
        def hook(module, args, output):
            x, kpm, pos_bias = args[0], args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else None
            keep = budget[0]
            if module.num_heads == 0 or keep <= 0:
                return
            x = x[:keep]
            kpm = None if kpm is None else kpm[:keep]
            lengths = None if kpm is None else (~kpm).sum(1)
            for h, probs in enumerate(module.head_attention(x, kpm, pos_bias)):
                sums[i][h] += diagonality(probs.float(), lengths).double().sum().cpu()

        return hook

    handles = [a.register_forward_hook(make_hook(i)) for i, a in enumerate(atts)]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            if counted[0] >= max_utterances:
                break
            wavs, lengths = batch["wavs"].to(device), batch["lengths"].to(device)
            budget[0] = min(wavs.size(0), max_utterances - counted[0])
            model(wavs[: budget[0]], lengths[: budget[0]])
            counted[0] += budget[0]
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if counted[0] == 0:
        raise ValueError("head_diagonality: no utterances given")
    return [(s / counted[0]).float() for s in sums]


def mean_diagonality(per_layer: List[Tensor]) -> float:
    """The mean over every attention head of the model (Fig. 9 left)."""
    flat = torch.cat([t for t in per_layer if t.numel()]) if any(t.numel() for t in per_layer) else torch.zeros(0)
    return float(flat.mean()) if flat.numel() else float("nan")
