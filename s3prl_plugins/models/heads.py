"""Prediction heads used during pre-training / distillation (removed from the upstream afterwards).

* ``hubert``: HuBERT's ``final_proj`` + ``label_embs_concat`` (Hsu et al. 2021, eq. 4: cosine
  similarity to the code embeddings over a temperature of 0.1).
* ``cluster``: MelHuBERT's linear projection to cluster logits (Lin et al., eq. 1).
* ``distil``: DistilHuBERT's prediction heads (Chang et al. 2022, §3.1): a shared
  ``Linear(D, inter*N)`` + GELU, then one ``Linear(inter, out)`` per predicted teacher layer.
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class HubertHead(nn.Module):
    def __init__(self, embed_dim: int, final_dim: int = 256, num_classes: List[int] = (504,), logit_temp: float = 0.1):
        super().__init__()
        self.num_classes = [int(n) for n in num_classes]
        self.final_dim = final_dim
        self.logit_temp = logit_temp
        self.final_proj = nn.Linear(embed_dim, final_dim * len(self.num_classes))
        self.label_embs_concat = nn.Parameter(torch.empty(sum(self.num_classes), final_dim).uniform_())

    def forward(self, x: Tensor) -> List[Tensor]:
        """(batch, frames, dim) -> per codebook (batch, frames, classes) logits."""
        projs = self.final_proj(x).chunk(len(self.num_classes), dim=-1)
        embs = self.label_embs_concat.split(self.num_classes, dim=0)
        return [F.cosine_similarity(p.unsqueeze(-2), e, dim=-1) / self.logit_temp for p, e in zip(projs, embs)]


class ClusterHead(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int = 512):
        super().__init__()
        self.final_proj = nn.Linear(embed_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, frames, dim) -> (batch, frames, classes) logits."""
        return self.final_proj(x)


class DistilHead(nn.Module):
    def __init__(self, embed_dim: int, layers: List[int] = (4, 8, 12), out_dim: int = 768, inter_dim: int = -1):
        super().__init__()
        self.layers = [int(i) for i in layers]
        n = len(self.layers)
        inter = inter_dim if inter_dim and inter_dim > 0 else embed_dim
        self.inter_dim, self.out_dim = inter, out_dim
        self.expand = nn.Linear(embed_dim, inter * n)
        self.weight = nn.Parameter(torch.empty(n, inter, out_dim).uniform_(-(inter**-0.5), inter**-0.5))
        self.bias = nn.Parameter(torch.empty(n, out_dim).uniform_(-(inter**-0.5), inter**-0.5))

    def forward(self, x: Tensor) -> Tensor:
        """(batch, frames, dim) -> (batch, heads, frames, out_dim)."""
        b, t, _ = x.shape
        h = F.gelu(self.expand(x)).view(b, t, len(self.layers), self.inter_dim)
        out = torch.einsum("btni,nio->bnto", h, self.weight)
        return out + self.bias[None, :, None, :]


def build_head(embed_dim: int, spec: Dict[str, Any]) -> nn.Module:
    kind = spec["type"]
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    if kind == "hubert":
        return HubertHead(embed_dim, **kwargs)
    if kind == "cluster":
        return ClusterHead(embed_dim, **kwargs)
    if kind == "distil":
        return DistilHead(embed_dim, **kwargs)
    raise ValueError(f"unknown head type {kind!r}")
