"""HuBERT / MelHuBERT masked prediction as a trainer task."""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from s3prl_plugins.losses.masked_prediction import masked_cross_entropy
from s3prl_plugins.models.ssl_model import SSLModel


def compute_span_mask(lengths: Tensor, max_len: int, mask_prob: float, mask_length: int, generator=None) -> Tensor:
    """HuBERT-style span masking.

    Each utterance of ``T`` valid frames gets ``floor(mask_prob * T + u)`` span starts (``u ~ U[0, 1)``),
    drawn without replacement among the ``T - mask_length + 1`` possible starts; each masks
    ``mask_length`` frames (spans may overlap). ``mask_prob`` is the fraction of frames that start a
    span, as in the papers (HuBERT: 8% x 10 frames; MelHuBERT-10ms: 7% x 10, -20ms: 14% x 5), i.e.
    fairseq's ``mask_prob = mask_prob * mask_length``.

    Returns:
        (batch, max_len) bool mask; padded frames are never masked.
    """
    batch = lengths.numel()
    mask = torch.zeros(batch, max_len, dtype=torch.bool)
    for i, n in enumerate(lengths.tolist()):
        starts_avail = n - mask_length + 1
        if starts_avail <= 0:
            continue
        u = float(torch.rand((), generator=generator))
        num = min(starts_avail, int(mask_prob * n + u))
        if num == 0:
            continue
        starts = torch.randperm(starts_avail, generator=generator)[:num]
        idx = (starts[:, None] + torch.arange(mask_length)[None, :]).flatten()
        mask[i, idx] = True
    return mask


class MaskedPredictionTask(nn.Module):
    """Masked prediction of frame labels with a model's cluster (or HuBERT) head.

    Args:
        model: an :class:`SSLModel` with ``mask_embedding`` and a ``cluster`` or ``hubert`` head.
        mask_prob, mask_length: span masking (see :func:`compute_span_mask`).
        max_label_mismatch: frames by which labels and model output may differ (edge effects).
        unmasked_weight: weight of the unmasked frames' cross-entropy. HuBERT's ``L = a L_m + (1-a) L_u``
            with ``a = 1`` is 0 (masked frames only, the default); 1 gives MelHuBERT's eq. 1 as written
            (the sum over every frame ``t = 1..T``). The loss is normalised by the masked-frame count.
    """

    # the legal values of the keyword arguments (what configs are checked against)
    RANGES = {
        "mask_prob": {"gt": 0, "max": 1},  # 0 masks nothing: a loss of 0 and nothing learnt
        "mask_length": {"min": 1},
        "max_label_mismatch": {"min": 0},
        "unmasked_weight": {"min": 0},
    }

    def __init__(
        self,
        model: SSLModel,
        mask_prob: float = 0.08,
        mask_length: int = 10,
        max_label_mismatch: int = 2,
        unmasked_weight: float = 0.0,
    ):
        super().__init__()
        if model.head is None or model.mask_emb is None:
            raise ValueError("masked prediction needs a model with a prediction head and a mask embedding")
        self.model = model
        self.mask_prob = mask_prob
        self.mask_length = mask_length
        self.max_label_mismatch = max_label_mismatch
        self.unmasked_weight = float(unmasked_weight)

    def forward(self, batch: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tuple[float, float]]]:
        feats, frames = self.model.extract_features(batch["wavs"], batch["lengths"])
        labels = batch["labels"]
        T = feats.size(1)
        if abs(labels.size(1) - T) > self.max_label_mismatch:
            raise ValueError(
                f"labels have {labels.size(1)} frames for {T} model frames (utterances {batch.get('utts', [])[:3]}): "
                "were they made at this model's frame rate?"
            )
        if labels.size(1) < T:
            labels = torch.nn.functional.pad(labels, (0, T - labels.size(1)), value=-100)
        labels = labels[:, :T]
        frames = torch.minimum(frames, (labels >= 0).sum(1))
        # training draws from the global RNG (restored on resume); validation masks the same way every time
        g = None if self.training else torch.Generator().manual_seed(int(frames.sum()))
        mask = compute_span_mask(frames.cpu(), T, self.mask_prob, self.mask_length, g).to(feats.device)
        out = self.model.encode(feats, frames, frame_mask=mask)
        logits = self.model.head(out.hidden_states[-1])
        if isinstance(logits, list):  # HuBERT head: one codebook
            logits = logits[0]
        loss_sum, correct, count = masked_cross_entropy(logits, labels, mask)
        valid = ~out.padding_mask & (labels >= 0)
        if self.unmasked_weight:
            loss_u, correct_u, count_u = masked_cross_entropy(logits, labels, valid & ~mask)
        else:
            _, correct_u, count_u = masked_cross_entropy(logits.detach(), labels, valid & ~mask)
        n = max(int(count), 1)
        logs = {
            "loss": (float(loss_sum.detach()), float(n)),
            "acc": (float(correct), float(n)),
            "acc_unmasked": (float(correct_u), float(max(int(count_u), 1))),
        }
        total = loss_sum
        if self.unmasked_weight:
            total = total + self.unmasked_weight * loss_u
            logs["loss_unmasked"] = (float(loss_u.detach()), float(max(int(count_u), 1)))
        return total / n, logs
