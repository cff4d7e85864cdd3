"""The phone recogniser on frozen features: a CTC head over a softmax-weighted sum of layers -- SUPERB
PR's linear probe, or residual dilated convolutions (the probes of eval/phone_ctc and the aligner of
segment/ both train it)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _ConvBlock(nn.Module):
    def __init__(self, dim: int, dilation: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, 3, padding=dilation, dilation=dilation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = self.conv(self.norm(x).transpose(1, 2)).transpose(1, 2)
        return (x + self.dropout(F.gelu(y))).masked_fill(mask, 0.0)


class PhoneCTC(nn.Module):
    """Args:
    in_dim: feature width.
    vocab: phones + blank.
    num_layers_in: feature layers combined by softmax weights (1: none).
    hidden: channels.
    dilations: one residual dilated-convolution block (kernel 3) per entry; the default sees
        +-31 frames (0.3 s at 100 Hz). Convolutions rather than an LSTM: ~20x faster on a CPU.
        Empty: a linear probe (layer norm + one linear layer, SUPERB PR's design).
    layer_norm: normalise the weighted sum first (the linear probe's default).
    project_dim: a linear probe's projection before its output layer (0: none; s3prl's ctc
        downstream for SUPERB PR: 256, no layer norm -- the ``superb`` probe).
    """

    def __init__(
        self,
        in_dim: int,
        vocab: int,
        num_layers_in: int = 1,
        hidden: int = 256,
        dilations: Sequence[int] = (1, 2, 4, 8, 16, 1),
        dropout: float = 0.1,
        layer_norm: bool = True,
        project_dim: int = 0,
    ):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(num_layers_in))
        self.norm = nn.LayerNorm(in_dim) if layer_norm or dilations else nn.Identity()
        self.linear = not dilations
        if self.linear:  # SUPERB PR's probe: one linear layer on the (normalised) weighted sum
            self.out = (
                nn.Sequential(nn.Linear(in_dim, project_dim), nn.Linear(project_dim, vocab))
                if project_dim
                else nn.Linear(in_dim, vocab)
            )
            return
        self.proj = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(_ConvBlock(hidden, d, dropout) for d in dilations)
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        """feats (batch, layers, frames, dim) -> log-probabilities (batch, frames, vocab)."""
        w = torch.softmax(self.layer_weights, 0)
        x = (feats.float() * w[None, :, None, None]).sum(1)
        if self.linear:
            return torch.log_softmax(self.out(self.norm(x)), dim=-1)
        mask = (torch.arange(x.size(1), device=x.device)[None] >= lengths.to(x.device)[:, None]).unsqueeze(-1)
        x = self.proj(self.norm(x)).masked_fill(mask, 0.0)
        for block in self.blocks:
            x = block(x, mask)
        return torch.log_softmax(self.out(self.out_norm(x)), dim=-1)
