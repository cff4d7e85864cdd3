"""Unstructured weight pruning (Lin et al. 2024 §II-B, §IV-B).

One global magnitude threshold over the weights and biases of every linear layer of the transformer
(Q/K/V/out projections, FC1, FC2): ``m_i = 0 if |theta_i| < delta else 1`` (eq. 3), with ``delta``
set by the target density; the forward pass computes ``f(x; m * theta)``. Pruned weights are never
instantiated again: the masks are kept next to the training state (:class:`WeightMasks`, buffers that
checkpoints store) and re-applied after every optimiser update, so they stay zero through updates and
a resume. Pruning is iterative, to the paper's density schedule (:data:`PAPER_SCHEDULE`), each step
triggered when the loss has converged (:class:`LossPlateau`) or after a fixed number of updates.

``torch.nn.utils.prune`` is not used: it re-parametrises every weight as ``weight_orig * weight_mask``,
which renames the state-dict keys (a pruned model would no longer load into its own architecture),
and its ``global_unstructured`` re-ranks weights already at zero.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from s3prl_plugins.compress.structured import PruningError
from s3prl_plugins.models.ssl_model import TRANSFORMER_LINEARS, SSLModel, transformer_linears

#: (density reached, step) pairs, in density points: 20% steps until 80% density, 10% until 50%, 5% until
#: 35%, 2.5% until 30%, 1% until 10%, 0.5% until 5% (Lin et al. §IV-B)
PAPER_SCHEDULE: Tuple[Tuple[float, float], ...] = (
    (0.80, 0.20),
    (0.50, 0.10),
    (0.35, 0.05),
    (0.30, 0.025),
    (0.10, 0.01),
    (0.05, 0.005),
)

PRUNABLE = TRANSFORMER_LINEARS


def density_schedule(
    start: float = 1.0, stop: float = 0.05, schedule: Sequence[Tuple[float, float]] = PAPER_SCHEDULE
) -> List[float]:
    """The target densities after each pruning step, from ``start`` down to ``stop``.

    >>> density_schedule(1.0, 0.5)
    [0.8, 0.7, 0.6, 0.5]
    """
    out: List[float] = []
    d = float(start)
    for until, step in schedule:
        while d - step >= until - 1e-9 and d - step >= stop - 1e-9:
            d = round(d - step, 6)
            out.append(d)
        if d <= stop + 1e-9:
            break
    return out


def prunable_parameters(model: SSLModel, required: bool = True) -> Dict[str, nn.Parameter]:
    """Weights and biases of every linear layer of the transformer (``encoder.layers.*``: q/k/v/out, fc1, fc2);
    ``required``: a model without any is an error."""
    out = {}
    for name, module in transformer_linears(model).items():
        out[f"{name}.weight"] = module.weight
        if module.bias is not None:
            out[f"{name}.bias"] = module.bias
    if not out and required:
        raise PruningError("the model has no transformer linear layers to prune")
    return out


def _buffer_name(param: str) -> str:
    return param.replace(".", "__")


class WeightMasks(nn.Module):
    """The binary masks ``m`` of eq. 3 for one model, as buffers (so training checkpoints keep them).

    Args:
        model: the model the masks belong to (its prunable parameters; all ones to start).
    """

    def __init__(self, model: SSLModel):
        super().__init__()
        self.names = list(prunable_parameters(model))
        for name, p in prunable_parameters(model).items():
            self.register_buffer(_buffer_name(name), torch.ones_like(p, dtype=torch.bool))

    def mask(self, name: str) -> Tensor:
        return getattr(self, _buffer_name(name))

    def items(self):
        return [(n, self.mask(n)) for n in self.names]

    def density(self) -> float:
        kept = sum(int(m.sum()) for _, m in self.items())
        return kept / max(1, sum(m.numel() for _, m in self.items()))

    @torch.no_grad()
    def apply(self, model: SSLModel) -> None:
        """``theta <- m * theta`` for every masked parameter of ``model``."""
        params = prunable_parameters(model)
        for name, m in self.items():
            params[name].mul_(m.to(params[name].dtype))

    @torch.no_grad()
    def prune_to(self, model: SSLModel, density: float) -> float:
        """Lower the masks to ``density`` by eq. 3 over all masked parameters at once (weights already
        pruned stay pruned), apply them, and return the threshold ``delta``."""
        current = self.density()
        if not 0.0 < density <= 1.0:
            raise PruningError(f"weight pruning: target density {density} must be in (0, 1]")
        if density > current + 1e-9:
            raise PruningError(
                f"weight pruning: the model is at density {current:.4f} already, below the target {density:.4f}; "
                "a schedule must go down (start it below the current density)"
            )
        params = prunable_parameters(model)
        flat = torch.cat(
            [
                torch.where(m, params[n].detach().abs().float(), torch.full_like(params[n], -1.0, dtype=torch.float32))
                .flatten()
                .cpu()
                for n, m in self.items()
            ]
        )
        keep = int(round(density * flat.numel()))
        new = torch.zeros(flat.numel(), dtype=torch.bool)
        delta = float("inf")
        if keep > 0:
            values, idx = torch.topk(flat, keep, sorted=False)
            new[idx] = True
            delta = float(values.min())
        offset = 0
        for n, m in self.items():
            m.copy_(new[offset : offset + m.numel()].view_as(m).to(m.device))
            offset += m.numel()
        self.apply(model)
        return delta

    def per_matrix_density(self) -> Dict[str, float]:
        """Density of each weight matrix, by layer and kind (``"3.fc1"``; Fig. 8)."""
        out = {}
        for name, m in self.items():
            if name.endswith(".weight"):
                parts = name.split(".")  # encoder.layers.<i>.<attention|feed_forward>.<proj>.weight
                out[f"{parts[2]}.{parts[-2]}"] = float(m.float().mean())
        return out


def model_density(model: SSLModel) -> float:
    """Fraction of nonzero prunable parameters (1.0 for a dense model)."""
    params = prunable_parameters(model)
    return sum(int((p != 0).sum()) for p in params.values()) / sum(p.numel() for p in params.values())


def per_layer_density(model: SSLModel) -> List[float]:
    """Fraction of nonzero prunable parameters in each layer (Fig. 8a)."""
    out: Dict[int, List[int]] = {}
    for name, p in prunable_parameters(model).items():
        acc = out.setdefault(int(name.split(".")[2]), [0, 0])
        acc[0] += int((p != 0).sum())
        acc[1] += p.numel()
    return [out[i][0] / out[i][1] for i in sorted(out)]


class LossPlateau(nn.Module):
    """When to take the next pruning step: the loss's exponential moving average (decay 0.9998) is within
    ``tolerance`` (0.001) of its value ``window`` updates earlier (15,000 in the paper; Lin et al. §IV-B).

    State lives in buffers so a resumed run continues the same average.
    """

    def __init__(self, decay: float = 0.9998, window: int = 15000, tolerance: float = 1e-3, min_updates: int = 0):
        super().__init__()
        if not 0.0 < decay < 1.0 or window < 1:
            raise ValueError("LossPlateau needs 0 < decay < 1 and window >= 1")
        self.decay, self.window, self.tolerance, self.min_updates = (
            decay,
            int(window),
            float(tolerance),
            int(min_updates),
        )
        self.register_buffer("ema", torch.zeros((), dtype=torch.float64))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("history", torch.zeros(self.window + 1, dtype=torch.float64))

    def update(self, loss: float) -> bool:
        """Add one update's loss; True when converged."""
        n = int(self.updates)
        ema = float(loss) if n == 0 else self.decay * float(self.ema) + (1 - self.decay) * float(loss)
        self.ema.fill_(ema)
        self.history[n % (self.window + 1)] = ema
        self.updates += 1
        n += 1
        if n <= self.window or n < self.min_updates:
            return False
        before = float(self.history[(n - 1 - self.window) % (self.window + 1)])
        return abs(ema - before) < self.tolerance

    def reset(self) -> None:
        self.ema.zero_()
        self.updates.zero_()
        self.history.zero_()


def masks_from_model(model: SSLModel) -> WeightMasks:
    """Masks of a model whose pruned weights are the zeros it holds (a checkpoint written by weight
    pruning: the masks are not stored in the model, the zeros are)."""
    masks = WeightMasks(model)
    params = prunable_parameters(model)
    with torch.no_grad():
        for name, m in masks.items():
            m.copy_(params[name].detach() != 0)
    return masks


def check_density(value: Optional[float]) -> None:
    if value is not None and not 0.0 < value <= 1.0:
        raise PruningError(f"density {value} must be in (0, 1]")
