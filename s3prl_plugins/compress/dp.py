"""Distil and prune at once, to a compute budget: HardConcrete gates over the waveform CNN's channels, attention
heads, FFN units and whole sublayers, learned jointly with a distillation objective under a Lagrangian that drives
the model's expected MACs to a target (issue 31).

The method is DPHuBERT's (Peng, Sudo, Muhammad and Watanabe, Interspeech 2023; github pyf98/DPHuBERT): the gates
are Louizos, Welling and Kingma's hard concrete distribution (ICLR 2018, §4: a stretched, clipped binary concrete,
so that a gate is exactly 0 or 1 with non-zero probability and its probability of being non-zero is differentiable
in ``log_alpha``), and the budget is the Lagrangian of Wang, Wohlwend and Lei ("Structured pruning of large
language models", EMNLP 2020, §3): ``lambda1 (c - t) + lambda2 (c - t)^2``, minimised over the model and the gates,
maximised over the multipliers. Two departures, both said where they are made:

* the constraint counts **MACs**, not parameters (DPHuBERT counts parameters; the CNN is 4.2 M of HuBERT BASE's
  94.7 M parameters but about a third of its MACs, so a parameter budget gives little reason to prune it):
  :class:`ExpectedMacs` is the profiler's own count (:func:`s3prl_plugins.models.macs.ssl_macs`) written as a
  polynomial in the gates' keep probabilities, exact for any 0/1 gating (tests/compress/test_dp.py);
* in eval mode a gate is 0 or 1 (DPHuBERT keeps a soft value ``sigmoid(0.8 log_alpha / beta)`` on the units it
  keeps, folded into the weights when pruning): with 0/1 gates the pruned model equals the gated one exactly, and
  the final distillation that follows (DPHuBERT's second stage) trains whatever scale the gates carried.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from s3prl_plugins.compress.structured import PruningError, prune_conv_channels, prune_ffn, prune_heads
from s3prl_plugins.models.macs import ssl_macs, superb_like_lengths
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.nn.frontends import conv_output_lengths

logger = logging.getLogger(__name__)

UNITS = ("conv", "heads", "ffn", "layers")


class HardConcrete(nn.Module):
    """``n`` gates ``z`` in [0, 1] of the hard concrete distribution (Louizos, Welling and Kingma 2018, §4).

    Training (a sample per call): ``u ~ U(0, 1)``, ``s = sigmoid((log u - log(1 - u) + log_alpha) / beta)``,
    ``z = min(1, max(0, s (r - l) + l))`` with the stretch ``(l, r) = (-stretch, 1 + stretch)``.
    :meth:`keep_probability` is ``P(z > 0) = sigmoid(log_alpha - beta log(-l / r))``, differentiable in
    ``log_alpha`` -- the expected number of units kept, the L0 norm the budget counts.
    Eval: deterministic 0/1 -- the ``round(sum P(z > 0))`` units with the largest ``log_alpha`` kept (at least
    ``min_keep``).

    Args:
        n: gates.
        init_keep: each gate's initial probability of staying (DPHuBERT starts at 0.99: the model is whole).
        temperature: ``beta`` (2/3, as DPHuBERT and CoFi).
        stretch: ``-l`` and ``r - 1`` (0.1).
        min_keep: eval keeps at least this many (a CNN layer without channels would lose its stride).
    """

    def __init__(
        self, n: int, init_keep: float = 0.99, temperature: float = 2 / 3, stretch: float = 0.1, min_keep: int = 0
    ):
        super().__init__()
        self.n = int(n)
        self.beta = float(temperature)
        self.left, self.right = -float(stretch), 1.0 + float(stretch)
        self.min_keep = int(min_keep)
        mean = math.log(init_keep) - math.log(1.0 - init_keep)
        self.log_alpha = nn.Parameter(torch.empty(self.n).normal_(mean, 0.01))

    def keep_probability(self) -> Tensor:
        return torch.sigmoid(self.log_alpha - self.beta * math.log(-self.left / self.right))

    def deterministic(self) -> Tensor:
        """The eval gates (0/1): the expected number kept, by ``log_alpha``."""
        keep = max(self.min_keep, min(self.n, int(round(float(self.keep_probability().detach().sum())))))
        z = torch.zeros(self.n, device=self.log_alpha.device)
        z[torch.topk(self.log_alpha.detach(), keep).indices] = 1.0
        return z

    def forward(self) -> Tensor:
        if not self.training:
            return self.deterministic()
        eps = 1e-6
        u = torch.rand(self.n, device=self.log_alpha.device).clamp(eps, 1 - eps)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        return (s * (self.right - self.left) + self.left).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"n={self.n}, beta={self.beta:.3g}, stretch={self.right - 1:.3g}"


class Gates(nn.Module):
    """The gates of one model: ``conv.<i>`` (CNN layer ``i``'s output channels), ``heads.<l>`` (every head of
    layer ``l``, in its layout), ``ffn.<l>`` (FFN units), ``attention.<l>`` / ``feed_forward.<l>`` (one gate per
    sublayer: ``layers``). Which exist follows ``units`` and the model: no CNN gates on a log-Mel model; the CNN's
    last layer is gated only where its channels can be removed without adding work (the model projects its
    features and has no learned subsampler: :func:`prune_conv_channels` would otherwise add a projection)."""

    def __init__(self, model: SSLModel, units: Sequence[str], init_keep: float = 0.99):
        super().__init__()
        bad = sorted(set(units) - set(UNITS))
        if bad:
            raise PruningError(f"dp: unknown unit(s) {bad}; choose from {list(UNITS)}")
        c = model.config
        self.gates = nn.ModuleDict()
        if "conv" in units and c.frontend == "conv":
            n = len(c.conv_layers)
            for i, (ch, _, _) in enumerate(c.conv_layers):
                if i == n - 1 and not self.last_conv_prunable(model):
                    continue
                self.gates[f"conv_{i}"] = HardConcrete(ch, init_keep, min_keep=1)
        for layer in range(c.num_layers):
            if "heads" in units and c.heads_per_layer()[layer]:
                self.gates[f"heads_{layer}"] = HardConcrete(c.heads_per_layer()[layer], init_keep)
            if "ffn" in units and c.ffn_dims[layer]:
                self.gates[f"ffn_{layer}"] = HardConcrete(c.ffn_dims[layer], init_keep)
            if "layers" in units:
                self.gates[f"attention_{layer}"] = HardConcrete(1, init_keep)
                self.gates[f"feed_forward_{layer}"] = HardConcrete(1, init_keep)
        if not len(self.gates):
            raise PruningError(f"dp: this model has nothing to gate among {list(units)}")

    @staticmethod
    def last_conv_prunable(model: SSLModel) -> bool:
        c = model.config
        return c.has_projection and (c.subsampling or {}).get("type") not in ("conv", "cif")

    def set_on(self, model: SSLModel, values: Optional[Dict[str, Tensor]] = None) -> Dict[str, Tensor]:
        """Gate ``model`` (in place) with a sample of every gate (training), their 0/1 values (eval) or
        ``values``; returns what was set."""
        values = values if values is not None else {k: g() for k, g in self.gates.items()}
        layers = model.encoder.layers
        for key, z in values.items():
            kind, i = key.rsplit("_", 1)
            i = int(i)
            if kind == "conv":
                model.frontend.conv_layers[i].channel_mask = z
            elif kind == "heads":
                layers[i].attention.head_gate = z[None, :]
            elif kind == "ffn":
                layers[i].feed_forward.unit_gate = z
            elif kind == "attention":
                layers[i].attention.output_gate = z[0]
            else:
                layers[i].feed_forward.output_gate = z[0]
        return values

    @staticmethod
    def clear(model: SSLModel) -> None:
        """Remove every gate from ``model``."""
        if hasattr(model.frontend, "conv_layers"):
            for block in model.frontend.conv_layers:
                block.channel_mask = None
        for layer in model.encoder.layers:
            layer.attention.head_gate = layer.attention.output_gate = None
            layer.feed_forward.unit_gate = layer.feed_forward.output_gate = None

    def keep_probabilities(self) -> Dict[str, Tensor]:
        return {k: g.keep_probability() for k, g in self.gates.items()}

    def deterministic(self) -> Dict[str, Tensor]:
        return {k: g.deterministic() for k, g in self.gates.items()}


class ExpectedMacs:
    """The profiler's MACs of ``model`` (:func:`~s3prl_plugins.models.macs.ssl_macs` over ``durations``) as a
    function of its gates' keep probabilities: every term that gates change, written out (CNN layer ``i``:
    ``c_i c_{i-1} k_i T_i``; feature projection ``c_last D F``; per layer: queries and keys ``2 D d a F``,
    values and output ``2 D d H F``, the attention ``2 d a F^2``, convolution heads ``k d h_conv F``, FFN
    ``2 D u F`` -- ``a`` attention heads, ``H`` every head, ``u`` FFN units, ``F`` encoder frames, each sublayer's
    terms times its gate), plus what gates cannot change (positional convolution, CIF, ...) taken from the
    profiler's count of the whole model. With independent gates, expected counts multiply, so the expectation of
    each term is the product of the expectations; with 0/1 gates the value is the pruned model's count exactly.

    Args:
        model: the model the gates are built on (its shape now).
        durations: utterance lengths in seconds (default: the profiler's SUPERB-like 32).
    """

    def __init__(self, model: SSLModel, durations: Optional[Sequence[float]] = None):
        durations = list(durations) if durations else superb_like_lengths()
        c = model.config
        self.config = c
        self.seconds = float(sum(durations))
        samples = torch.tensor([int(round(d * 16000)) for d in durations])
        self.cnn_frames: List[float] = []
        if c.frontend == "conv":
            for i in range(len(c.conv_layers)):
                self.cnn_frames.append(float(conv_output_lengths(samples, c.conv_layers[: i + 1]).sum()))
        frames = self._encoder_frames(model, samples)
        self.frames, self.frames_sq = float(frames.sum()), float((frames.double() ** 2).sum())
        self.total = float(sum(ssl_macs(model, int(round(d * 16000)))["macs"] for d in durations))
        self.fixed = self.total - float(self.variable({}))  # what no gate changes: no gates given, every unit kept

    @staticmethod
    def _encoder_frames(model: SSLModel, samples: Tensor) -> Tensor:
        c = model.config
        if c.frontend == "conv":
            n = conv_output_lengths(samples, c.conv_layers)
        else:
            n = model.frontend.num_frames(samples)
        sub = model.subsampler
        if sub is None:
            return n
        stride = float(sub.stride) if sub.variable else int(c.subsampling_stride)
        return torch.ceil(n.double() / stride).clamp(min=1).long()

    def variable(self, keep: Dict[str, Tensor]) -> Tensor:
        """The gated terms for keep probabilities ``keep`` (a missing gate: every unit kept)."""
        c = self.config
        one = torch.ones((), dtype=torch.float64)

        def kept(key: str, n: int, idx: Optional[Sequence[int]] = None) -> Tensor:
            p = keep.get(key)
            if p is None:
                return one * (n if idx is None else len(idx))
            p = p.double()
            return p.sum() if idx is None else p[list(idx)].sum()

        total = torch.zeros((), dtype=torch.float64)
        if c.frontend == "conv":
            prev = one
            for i, (ch, k, _) in enumerate(c.conv_layers):
                cur = kept(f"conv_{i}", ch)
                total = total + cur * prev * k * self.cnn_frames[i]
                prev = cur
            if c.has_projection:
                total = total + prev * c.embed_dim * self.frames
        D, d, F, F2 = c.embed_dim, c.head_dim, self.frames, self.frames_sq
        for layer in range(c.num_layers):
            a_n, i_n, v_n = c.num_heads[layer], c.identity_heads[layer], c.conv_heads[layer]
            key = f"heads_{layer}"
            a = kept(key, a_n, range(a_n))
            conv = kept(key, v_n, range(a_n + i_n, a_n + i_n + v_n))
            every = kept(key, a_n + i_n + v_n)
            attention = 2 * D * d * a * F + 2 * D * d * every * F + 2 * d * a * F2 + c.head_conv_kernel * d * conv * F
            total = total + kept(f"attention_{layer}", 1) * attention
            total = total + kept(f"feed_forward_{layer}", 1) * 2 * D * kept(f"ffn_{layer}", c.ffn_dims[layer]) * F
        return total

    def __call__(self, keep: Dict[str, Tensor]) -> Tensor:
        """Expected MACs over the durations (float64, differentiable in ``keep``)."""
        return self.fixed + self.variable(keep)

    def smallest(self, gates: Gates) -> float:
        """The fewest MACs the gates can reach (every gate closed; a CNN layer keeps one channel)."""
        least = {k: torch.zeros(g.n, dtype=torch.float64) for k, g in gates.gates.items()}
        for k, g in gates.gates.items():
            least[k][: g.min_keep] = 1.0
        return float(self(least))


class _Reverse(torch.autograd.Function):
    """Identity forward, negated gradient: minimising the total loss maximises it in the multipliers."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return -grad


class Lagrangian(nn.Module):
    """``lambda1 (c - t) + lambda2 (c - t)^2`` (Wang, Wohlwend and Lei 2020, §3; DPHuBERT's ``loss_reg``): ``c`` the
    expected fraction of the MACs kept, ``t`` the target. The multipliers start at 0 and move by gradient
    *ascent* (a reversed gradient here; DPHuBERT gives their parameter group a negative learning rate)."""

    def __init__(self):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.zeros(()))

    def forward(self, kept: Tensor, target: float) -> Tensor:
        gap = kept - target
        return _Reverse.apply(self.lambda1) * gap + _Reverse.apply(self.lambda2) * gap**2


class PruneTask(nn.Module):
    """DPHuBERT's first stage as a trainer task: ``task`` (a distillation objective) on the gated model, plus the
    :class:`Lagrangian` of the expected fraction of MACs kept against a target that falls linearly from 1 to
    ``target`` over ``warmup`` updates (DPHuBERT's ``sparsity_warmup_updates``). The gates and multipliers are
    parameters of this task and the update count a buffer, so the trainer's checkpoints hold them and a killed
    run resumes exactly. Gates and multipliers train at ``reg_lr`` without weight decay (``param_groups``).

    Args:
        task: ``task(batch) -> (loss, logs)`` training ``model``.
        model: the gated model (inside ``task``).
        gates: its :class:`Gates`.
        macs: its :class:`ExpectedMacs`.
        target: the fraction of the model's MACs to keep.
        warmup: updates over which the target falls from 1 to ``target``.
        reg_lr: the gates' and multipliers' learning rate (DPHuBERT: 0.02).
    """

    def __init__(
        self,
        task: nn.Module,
        model: SSLModel,
        gates: Gates,
        macs: ExpectedMacs,
        target: float,
        warmup: int,
        reg_lr: float,
    ):
        super().__init__()
        self.task = task
        self.gates = gates
        self.lagrangian = Lagrangian()
        self.macs = macs
        self.target = float(target)
        self.warmup = int(warmup)
        self.reg_lr = float(reg_lr)
        self._model = [model]  # not a submodule: it is already one of ``task``'s
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def target_now(self) -> float:
        done = 1.0 if self.warmup <= 0 else min(1.0, float(self.updates) / self.warmup)
        return 1.0 - (1.0 - self.target) * done

    def kept(self) -> Tensor:
        """The expected fraction of the MACs kept (differentiable in the gates)."""
        return self.macs(self.gates.keep_probabilities()) / self.macs.total

    def forward(self, batch: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tuple[float, float]]]:
        model = self._model[0]
        self.gates.set_on(model)  # a sample per batch in training, the 0/1 gates in eval
        try:
            loss, logs = self.task(batch)
        finally:
            Gates.clear(model)
        kept, target = self.kept(), self.target_now()
        reg = self.lagrangian(kept.to(loss.dtype), target)
        logs = dict(logs)
        logs.update(
            macs_kept=(float(kept.detach()), 1.0),
            macs_target=(target, 1.0),
            lagrangian=(float(reg.detach()), 1.0),
            lambda1=(float(self.lagrangian.lambda1.detach()), 1.0),
        )
        return loss + reg, logs

    def after_update(self, loss: float) -> bool:
        self.updates += 1
        return False

    def param_groups(self) -> List[Dict]:
        return [
            {"params": list(self.task.parameters())},
            {"params": list(self.gates.parameters()), "fixed_lr": self.reg_lr, "fixed_weight_decay": 0.0},
            {"params": list(self.lagrangian.parameters()), "fixed_lr": self.reg_lr, "fixed_weight_decay": 0.0},
        ]


def plan_from_gates(model: SSLModel, values: Dict[str, Tensor]) -> Tuple[Dict, Dict, Dict, List[int], List[int]]:
    """0/1 gate values -> (conv channels, heads, FFN units to remove; layers whose attention / FFN sublayer is
    gated off)."""
    conv: Dict[int, List[int]] = {}
    heads: Dict[int, List[int]] = {}
    ffn: Dict[int, List[int]] = {}
    attention_off: List[int] = []
    ffn_off: List[int] = []
    for key, z in values.items():
        kind, i = key.rsplit("_", 1)
        i = int(i)
        off = (z == 0).nonzero().flatten().tolist()
        if kind == "conv" and off:
            conv[i] = off
        elif kind == "heads" and off:
            heads[i] = off
        elif kind == "ffn" and off:
            ffn[i] = off
        elif kind == "attention" and off:
            attention_off.append(i)
        elif kind == "feed_forward" and off:
            ffn_off.append(i)
    c = model.config
    for i in attention_off:  # a sublayer gated off: all of it goes, its bias too (the gate multiplied it)
        heads[i] = list(range(c.heads_per_layer()[i]))
    for i in ffn_off:
        ffn[i] = list(range(c.ffn_dims[i]))
    return conv, heads, ffn, attention_off, ffn_off


def prune_gated(model: SSLModel, values: Dict[str, Tensor]) -> SSLModel:
    """The model with what 0/1 gates ``values`` switch off physically removed: equal to ``model`` gated with them
    (:meth:`Gates.set_on`). A layer whose every head goes keeps its output bias (as ``prune_heads``), unless the
    sublayer's own gate is off (then the bias goes with it); the same for FFN units."""
    bad = {k: v for k, v in values.items() if not bool(((v == 0) | (v == 1)).all())}
    if bad:
        raise PruningError(f"prune_gated takes 0/1 gates (eval mode); {sorted(bad)} are not")
    conv, heads, ffn, attention_off, ffn_off = plan_from_gates(model, values)
    out = model
    if conv:
        out = prune_conv_channels(out, conv)
    if heads:
        out = prune_heads(out, heads)
    if ffn:
        out = prune_ffn(out, ffn)
    if attention_off or ffn_off:
        with torch.no_grad():
            for i in attention_off:
                out.encoder.layers[i].attention.out_bias.zero_()
            for i in ffn_off:
                out.encoder.layers[i].feed_forward.out_bias.zero_()
    if out is model:  # nothing removed: still a new model, the input untouched
        out = prune_heads(model, {})
    return out


def backbone(model: SSLModel) -> SSLModel:
    """A copy of ``model`` without its pre-training head and mask embedding (what a distilled student has no use
    for: the distillation task refuses a mask embedding it would never train)."""
    if model.head is None and model.mask_emb is None:
        return model
    out = SSLModel(model.config.replace(head=None, mask_embedding=False))
    state = {k: v for k, v in model.state_dict().items() if not (k.startswith("head.") or k == "mask_emb")}
    out.load_state_dict(state, strict=True)
    return out.train(model.training)


def describe(model: SSLModel) -> str:
    """One line: the shape a pruning left (CNN channels, heads and FFN units per layer)."""
    c = model.config
    parts = []
    if c.frontend == "conv":
        parts.append("CNN " + "/".join(str(ch) for ch, _, _ in c.conv_layers))
    parts.append("heads " + "/".join(str(h) for h in c.heads_per_layer()))
    parts.append("FFN " + "/".join(str(u) for u in c.ffn_dims))
    return ", ".join(parts)


__all__ = [
    "UNITS",
    "backbone",
    "ExpectedMacs",
    "Gates",
    "HardConcrete",
    "Lagrangian",
    "PruneTask",
    "describe",
    "plan_from_gates",
    "prune_gated",
]
