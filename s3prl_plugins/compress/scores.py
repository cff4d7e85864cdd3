"""Importance scores of heads and FFN units, and which to remove (Lin et al. 2024 §II-C, §II-D, §IV-C).

* :func:`head_l1_scores` -- eq. 4, ``s_i = ||vec(W_i^Q)||_1 + ||vec(W_i^K)||_1 + ||vec(W_i^V)||_1``;
  higher layers have larger norms, so it is compared within a layer and a fixed number of heads goes
  from every layer (:func:`select_per_layer`).
* :func:`head_gradient_scores` -- eq. 5 (Michel et al. 2019), ``s_i = sum_k |<J_i(x_k), dL/dJ_i>|``,
  with ``J_i`` the head's output (its attention map times its values) and ``L`` the model's own
  training loss on a fraction of the training data; normalised within each layer (l2, as Michel et
  al.) and compared across layers, keeping at least one head per layer (:func:`select_global`).
* :func:`ffn_l1_scores` -- eq. 6, ``s_i = sum_k |U_ki| + |V_ik|`` over FC1's row and FC2's column of
  unit ``i``; the lowest ``n`` units of every layer go.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from s3prl_plugins.compress.structured import PruningError
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.nn.transformer import SelfAttention

logger = logging.getLogger(__name__)


def _attention(model: SSLModel) -> List[SelfAttention]:
    return [layer.attention for layer in model.encoder.layers]


def head_l1_scores(model: SSLModel) -> List[Tensor]:
    """Eq. 4 per layer: (attention heads,) -- the l1 norms of each head's query, key and value weights.
    Identity / convolution heads have no queries or keys and are not scored."""
    out = []
    for att in _attention(model):
        if att.num_heads == 0:
            out.append(torch.zeros(0))
            continue
        d, h = att.head_dim, att.num_heads
        s = torch.zeros(h)
        for w in (att.q_proj.weight, att.k_proj.weight, att.v_proj.weight[: h * d]):
            s += w.detach().abs().view(h, d, -1).sum(dim=(1, 2)).cpu()
        out.append(s)
    return out


def ffn_l1_scores(model: SSLModel) -> List[Tensor]:
    """Eq. 6 per layer: (FFN units,) -- ``sum_k |U_ki| + |V_ik|`` (FC1 row ``i`` plus FC2 column ``i``)."""
    out = []
    for layer in model.encoder.layers:
        ff = layer.feed_forward
        if ff.ffn_dim == 0:
            out.append(torch.zeros(0))
            continue
        out.append((ff.fc1.weight.detach().abs().sum(1) + ff.fc2.weight.detach().abs().sum(0)).cpu())
    return out


def head_gradient_scores(
    task: nn.Module,
    model: SSLModel,
    batches: Iterable[Dict[str, Tensor]],
    device: str = "cpu",
    progress: Optional[Callable[[Iterable], Iterable]] = None,
) -> List[Tensor]:
    """Eq. 5 per layer: (heads,) over every head of the layer (attention, identity and convolution heads
    alike), ``sum over utterances |<J_h(x), dL/dJ_h>|``.

    ``<J_h, dL/dJ_h>`` is the derivative of the loss by a gate multiplying the head's output (Michel et al.
    2019), one gate per utterance and head, so one backward pass gives every utterance's term. ``task``
    is the model's own objective (``task(batch) -> (loss, logs)``: masked prediction for MelHuBERT/HuBERT,
    distillation for students), run in eval mode (no dropout, validation masks); ``model`` is the
    network inside it whose heads are scored. The model's parameters get no gradient.
    """
    atts = _attention(model)
    totals = [torch.zeros(a.total_heads, dtype=torch.float64) for a in atts]
    gates: List[Optional[Tensor]] = [None] * len(atts)

    def make_hook(i: int):
        def hook(module: SelfAttention, args, kwargs):
            x = args[0] if args else kwargs["x"]
            g = torch.ones(x.size(0), module.total_heads, device=x.device, requires_grad=True)
            module.head_gate = g
            gates[i] = g

        return hook

    handles = [a.register_forward_pre_hook(make_hook(i), with_kwargs=True) for i, a in enumerate(atts)]
    modes = [(m, m.training) for m in task.modules()]  # restored module by module (an eval-mode model stays so)
    flags = [(p, p.requires_grad) for p in task.parameters()]
    task.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    n_utts = 0
    try:
        for batch in progress(batches) if progress else batches:
            batch = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}
            batch.pop("skipped", None)
            gates[:] = [None] * len(atts)
            with torch.enable_grad():
                loss, _ = task(batch)
                live = [g for g in gates if g is not None]
                grads = torch.autograd.grad(loss, live, allow_unused=True)
            it = iter(grads)
            for i, g in enumerate(gates):
                if g is None:
                    continue
                grad = next(it)
                if grad is not None:
                    totals[i] += grad.detach().abs().sum(0).double().cpu()
            n_utts += int(batch["wavs"].size(0)) if "wavs" in batch else 1
    finally:
        for h in handles:
            h.remove()
        for a in atts:
            a.head_gate = None
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode
    if n_utts == 0:
        raise PruningError("head_gradient_scores: no batches to score the heads on")
    logger.info("head importance (eq. 5) from %d utterances", n_utts)
    return [t.float() for t in totals]


def normalize_within_layers(scores: Sequence[Tensor]) -> List[Tensor]:
    """Each layer's scores divided by their l2 norm (Michel et al. 2019), so that layers compare."""
    return [s / s.norm().clamp(min=1e-12) if s.numel() else s for s in scores]


def select_per_layer(scores: Sequence[Tensor], n: int, min_keep: int = 0, what: str = "heads") -> Dict[int, List[int]]:
    """The ``n`` lowest-scoring entries of every layer (ties: the lower index). A layer with fewer than
    ``n + min_keep`` entries is refused by name."""
    out: Dict[int, List[int]] = {}
    for layer, s in enumerate(scores):
        if n == 0:
            continue
        if s.numel() < n + min_keep:
            raise PruningError(
                f"layer {layer} has {s.numel()} {what}: cannot remove {n}"
                + (f" and keep {min_keep}" if min_keep else "")
            )
        order = sorted(range(s.numel()), key=lambda j: (float(s[j]), j))
        out[layer] = sorted(order[:n])
    return out


def select_global(
    scores: Sequence[Tensor], n: int, min_keep_per_layer: int = 1, what: str = "heads"
) -> Dict[int, List[int]]:
    """The ``n`` lowest-scoring entries over all layers, never leaving a layer with fewer than
    ``min_keep_per_layer`` (skipped entries are replaced by the next lowest elsewhere)."""
    removable = sum(max(0, s.numel() - min_keep_per_layer) for s in scores)
    if n > removable:
        raise PruningError(
            f"cannot remove {n} {what}: keeping {min_keep_per_layer} per layer leaves {removable} removable "
            f"(the model has {sum(s.numel() for s in scores)})"
        )
    entries = sorted((float(s[j]), layer, j) for layer, s in enumerate(scores) for j in range(s.numel()))
    left = [s.numel() for s in scores]
    out: Dict[int, List[int]] = {}
    taken = 0
    for value, layer, j in entries:
        if taken >= n:
            break
        if left[layer] <= min_keep_per_layer or math.isnan(value):
            continue
        out.setdefault(layer, []).append(j)
        left[layer] -= 1
        taken += 1
    return {k: sorted(v) for k, v in sorted(out.items())}


def count_selected(plan: Mapping[int, Sequence[int]]) -> int:
    return sum(len(v) for v in plan.values())
