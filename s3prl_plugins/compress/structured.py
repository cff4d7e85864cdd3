"""Structured compression that changes a model's shape: heads, FFN units, layers and the waveform CNN's
channels physically removed, attention heads replaced by the identity or a 1-D convolution.

Every function takes an :class:`SSLModel` and returns a new one whose :class:`SSLModelConfig` describes
the new shape (per-layer ``num_heads``, ``identity_heads``, ``conv_heads``, ``ffn_dims``, ``num_layers``,
the CNN's per-layer channels in ``conv_layers``),
so the result saves with :func:`s3prl_plugins.models.checkpoint.save_checkpoint` and loads through
every hub entry like any other model. Weights are copied, never re-initialised (new convolution heads
start at the identity). Works for every model of the zoo (MelHuBERT, HuBERT, DistilHuBERT and STaR
students); WavLM's gated relative position ties its gates to the head count and is refused.

Head indices of a layer follow its layout: attention heads ``0 .. num_heads-1``, then its identity
heads, then its convolution heads (:class:`s3prl_plugins.nn.transformer.SelfAttention`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from s3prl_plugins.models.ssl_model import SSLModel


class PruningError(ValueError):
    """A compression step that cannot be applied to this model (named, nothing changed)."""


ATTN, IDENTITY, CONV = "attention", "identity", "conv"


@dataclasses.dataclass(frozen=True)
class _Head:
    old: int  # index in the old layer's layout
    kind: str  # its kind in the new layer


def head_kinds(model: SSLModel, layer: int) -> List[str]:
    """The kind of every head of ``layer`` in layout order."""
    c = model.config
    return [ATTN] * c.num_heads[layer] + [IDENTITY] * c.identity_heads[layer] + [CONV] * c.conv_heads[layer]


def _check_layers(model: SSLModel, plan: Mapping[int, Sequence[int]], what: str) -> None:
    n = model.config.num_layers
    for layer in plan:
        if not 0 <= int(layer) < n:
            raise PruningError(f"{what}: layer {layer} does not exist (the model has layers 0..{n - 1})")


def _rebuild(model: SSLModel, heads: List[List[_Head]], ffn_keep: List[List[int]]) -> SSLModel:
    """A model with, per layer, the heads ``heads[i]`` (in that order, grouped by kind) and the FFN units
    ``ffn_keep[i]`` of the old layer ``i``; the first ``len(heads)`` layers are kept."""
    old_cfg = model.config
    if old_cfg.gated_relative_position:
        raise PruningError(
            "WavLM's gated relative position ties its gates and buckets to every head: structured pruning is not "
            "supported for it"
        )
    n_layers = len(heads)
    order = {ATTN: 0, IDENTITY: 1, CONV: 2}
    heads = [sorted(hs, key=lambda h: order[h.kind]) for hs in heads]  # stable: keeps the old order in a kind
    cfg = dataclasses.replace(
        old_cfg,
        num_layers=n_layers,
        num_heads=[sum(h.kind == ATTN for h in hs) for hs in heads],
        identity_heads=[sum(h.kind == IDENTITY for h in hs) for hs in heads],
        conv_heads=[sum(h.kind == CONV for h in hs) for hs in heads],
        ffn_dims=[len(k) for k in ffn_keep],
    )
    cfg = type(old_cfg).from_dict(cfg.to_dict())  # re-validated
    old = model.state_dict()
    new_model = SSLModel(cfg)
    new_state = new_model.state_dict()
    d = old_cfg.head_dim
    out: Dict[str, Tensor] = {}
    for key, value in new_state.items():
        if not key.startswith("encoder.layers."):
            out[key] = old[key].clone()
    for i in range(n_layers):
        p = f"encoder.layers.{i}."
        kinds = head_kinds(model, i)
        n_attn_old = old_cfg.num_heads[i]

        def rows(ws: Tensor, idx: List[int]) -> Tensor:
            return torch.cat([ws[j * d : (j + 1) * d] for j in idx]) if idx else ws[:0]

        attn_new = [h.old for h in heads[i] if h.kind == ATTN]
        all_new = [h.old for h in heads[i]]
        if attn_new:
            for proj in ("q_proj", "k_proj"):
                out[p + f"attention.{proj}.weight"] = rows(old[p + f"attention.{proj}.weight"], attn_new).clone()
                out[p + f"attention.{proj}.bias"] = rows(old[p + f"attention.{proj}.bias"], attn_new).clone()
        old_bias = old.get(p + "attention.out_proj.bias", old.get(p + "attention.out_bias"))
        if all_new:
            out[p + "attention.v_proj.weight"] = rows(old[p + "attention.v_proj.weight"], all_new).clone()
            out[p + "attention.v_proj.bias"] = rows(old[p + "attention.v_proj.bias"], all_new).clone()
            w = old[p + "attention.out_proj.weight"]
            out[p + "attention.out_proj.weight"] = torch.cat(
                [w[:, j * d : (j + 1) * d] for j in all_new], dim=1
            ).clone()
            out[p + "attention.out_proj.bias"] = old_bias.clone()
        else:
            out[p + "attention.out_bias"] = old_bias.clone()
        conv_new = [h.old for h in heads[i] if h.kind == CONV]
        if conv_new:
            k = cfg.head_conv_kernel
            weight = torch.zeros(len(conv_new), 1, k)
            weight[:, 0, k // 2] = 1.0  # the identity: a replacement starts where skip-ahead does
            old_conv = old.get(p + "attention.head_conv.weight")
            first_conv_old = n_attn_old + old_cfg.identity_heads[i]
            for slot, j in enumerate(conv_new):
                if kinds[j] == CONV:
                    weight[slot] = old_conv[j - first_conv_old]
            out[p + "attention.head_conv.weight"] = weight
        keep = ffn_keep[i]
        old_fc2_bias = old.get(p + "feed_forward.fc2.bias", old.get(p + "feed_forward.out_bias"))
        if keep:
            idx = torch.tensor(keep, dtype=torch.long)
            out[p + "feed_forward.fc1.weight"] = old[p + "feed_forward.fc1.weight"][idx].clone()
            out[p + "feed_forward.fc1.bias"] = old[p + "feed_forward.fc1.bias"][idx].clone()
            out[p + "feed_forward.fc2.weight"] = old[p + "feed_forward.fc2.weight"][:, idx].clone()
            out[p + "feed_forward.fc2.bias"] = old_fc2_bias.clone()
        else:
            out[p + "feed_forward.out_bias"] = old_fc2_bias.clone()
        for ln in ("attention_layer_norm", "final_layer_norm"):
            for t in ("weight", "bias"):
                out[p + f"{ln}.{t}"] = old[p + f"{ln}.{t}"].clone()
    missing = sorted(set(new_state) - set(out))
    if missing:  # a parameter this function does not know how to carry over: a bug, not a user error
        raise RuntimeError(f"structured pruning left {missing[:5]} unset")
    new_model.load_state_dict(out, strict=True)
    new_model.train(model.training)
    return new_model.to(next(model.parameters()).device)


def _identity_plan(model: SSLModel) -> Tuple[List[List[_Head]], List[List[int]]]:
    c = model.config
    heads = [[_Head(j, kind) for j, kind in enumerate(head_kinds(model, i))] for i in range(c.num_layers)]
    ffn = [list(range(c.ffn_dims[i])) for i in range(c.num_layers)]
    return heads, ffn


def _indices(layer: int, idx: Sequence[int], size: int, what: str) -> List[int]:
    idx = [int(j) for j in idx]
    if len(set(idx)) != len(idx):
        raise PruningError(f"layer {layer}: {what} {idx} lists an index twice")
    bad = [j for j in idx if not 0 <= j < size]
    if bad:
        raise PruningError(f"layer {layer}: {what} {bad} do not exist (the layer has {size})")
    return idx


def prune_heads(model: SSLModel, heads: Mapping[int, Sequence[int]], allow_empty_layer: bool = True) -> SSLModel:
    """Remove heads (Lin et al. 2024 §II-C): ``{layer_index: [head indices]}``.

    Their rows of Q/K/V and columns of the output projection go; the output projection's bias stays.
    The result equals the original model wherever the removed heads' output-projection columns were
    zero. ``allow_empty_layer=False`` refuses a plan that would leave a layer without any head.
    """
    _check_layers(model, heads, "prune_heads")
    plan, ffn = _identity_plan(model)
    for layer, idx in heads.items():
        layer = int(layer)
        current = plan[layer]
        idx = _indices(layer, idx, len(current), "heads")
        if not allow_empty_layer and len(idx) == len(current) and idx:
            raise PruningError(
                f"layer {layer}: removing heads {sorted(idx)} would leave it without heads (at least one must stay)"
            )
        drop = set(idx)
        plan[layer] = [h for j, h in enumerate(current) if j not in drop]
    return _rebuild(model, plan, ffn)


def prune_ffn(model: SSLModel, units: Mapping[int, Sequence[int]]) -> SSLModel:
    """Remove FFN hidden units (Lin et al. 2024 §II-D, "low-rank approximation"): ``{layer_index: [FC1
    row indices]}``. Their FC1 rows (and biases) and FC2 columns go; FC2's bias stays. The result
    equals the original model wherever the removed units' FC2 columns were zero."""
    _check_layers(model, units, "prune_ffn")
    plan, ffn = _identity_plan(model)
    for layer, idx in units.items():
        layer = int(layer)
        idx = _indices(layer, idx, len(ffn[layer]), "FFN units")
        drop = set(idx)
        ffn[layer] = [u for j, u in enumerate(ffn[layer]) if j not in drop]
    return _rebuild(model, plan, ffn)


def replace_heads(model: SSLModel, heads: Mapping[int, Sequence[int]], kind: str = IDENTITY) -> SSLModel:
    """Replace attention heads' maps (Lin et al. 2024 §VI-D): ``kind="identity"`` (eq. 10, skip-ahead:
    the head outputs its values; its queries and keys go) or ``"conv"`` (a 1-D convolution over time of
    ``config.head_conv_kernel`` taps, starting at the identity). Only attention heads can be replaced."""
    if kind not in (IDENTITY, CONV):
        raise PruningError(f"replace_heads: kind must be {IDENTITY!r} or {CONV!r}, not {kind!r}")
    _check_layers(model, heads, "replace_heads")
    plan, ffn = _identity_plan(model)
    for layer, idx in heads.items():
        layer = int(layer)
        n_attn = model.config.num_heads[layer]
        idx = _indices(layer, idx, len(plan[layer]), "heads")
        not_attn = [j for j in idx if j >= n_attn]
        if not_attn:
            raise PruningError(
                f"layer {layer}: heads {not_attn} are not attention heads (it has {n_attn}); only those can be replaced"
            )
        swap = set(idx)
        plan[layer] = [_Head(h.old, kind) if j in swap else h for j, h in enumerate(plan[layer])]
    return _rebuild(model, plan, ffn)


def truncate_layers(model: SSLModel, num_layers: int) -> SSLModel:
    """Keep the first ``num_layers`` transformer layers: Lin et al.'s first-k baseline (MelHuBERT-first2 /
    -first6, §V-B: stopping the forward process early), as a model of its own. The prediction head, if
    any, is kept (it now reads layer ``num_layers``)."""
    n = model.config.num_layers
    if not 1 <= int(num_layers) <= n:
        raise PruningError(f"truncate_layers: cannot keep {num_layers} of {n} layers (1..{n})")
    plan, ffn = _identity_plan(model)
    return _rebuild(model, plan[: int(num_layers)], ffn[: int(num_layers)])


def count_heads(model: SSLModel, kind: Optional[str] = None) -> int:
    """Heads of the whole model (``kind``: only attention / identity / conv heads)."""
    c = model.config
    per = {ATTN: c.num_heads, IDENTITY: c.identity_heads, CONV: c.conv_heads}
    return sum(sum(v) for k, v in per.items() if kind in (None, k))


_CONV_KEY = re.compile(r"frontend\.conv_layers\.(\d+)\.(conv|norm)\.(weight|bias)")


def prune_conv_channels(model: SSLModel, channels: Mapping[int, Sequence[int]]) -> SSLModel:
    """Remove output channels of the waveform CNN: ``{conv_layer_index: [output channel indices]}``.

    Layer ``i``'s filters (rows of its convolution, its bias and its norm's per-channel affine) go, and with
    them the matching input channels of layer ``i + 1``; for the last layer, the feature layer norm's
    entries and the feature projection's input columns. The
    model's width (``embed_dim``) and every stride stay, so downstream models and hub entries see the same
    shapes; the per-layer channels are in the new config's ``conv_layers``.

    The result equals the unpruned model with those channels gated to 0
    (:attr:`s3prl_plugins.nn.frontends._ConvBlock.channel_mask`, whose LayerNorms take their statistics over
    the channels left). Without such gates it is exact where the removed channels carry nothing downstream
    (zero filters of the next layer); otherwise it is the starting point for recovery training, as
    :func:`prune_heads` is. A model whose CNN feeds the encoder without a projection gets one that selects the
    channels left (an identity's columns: exact).

    Refused (:class:`PruningError`, nothing changed): a log-Mel front-end, a layer or channel that does not
    exist, every channel of a layer (that would remove the layer and its stride, changing the frame rate),
    and the last layer's channels under a ``conv`` or ``cif`` subsampler (built as wide as that layer).
    """
    c = model.config
    if c.frontend != "conv":
        raise PruningError(
            "prune_conv_channels: this model has a log-Mel front-end, no waveform CNN (prune its heads, FFN units "
            "or layers instead)"
        )
    n = len(c.conv_layers)
    bad = [k for k in channels if not 0 <= int(k) < n]
    if bad:
        raise PruningError(f"prune_conv_channels: conv layer(s) {bad} do not exist (the CNN has layers 0..{n - 1})")
    plan = {int(k): v for k, v in channels.items()}
    keep: List[List[int]] = []
    for i, (ch, _, stride) in enumerate(c.conv_layers):
        drop = set(_indices(i, plan.get(i, ()), ch, "conv channels"))
        if len(drop) == ch:
            raise PruningError(
                f"conv layer {i}: removing all its {ch} channels would remove the layer and its stride {stride} "
                "(the frame rate would change): keep at least one"
            )
        keep.append([j for j in range(ch) if j not in drop])
    last = keep[-1]
    last_pruned = len(last) < c.conv_layers[-1][0]
    sub = c.subsampling or {}
    if last_pruned and sub.get("type") in ("conv", "cif"):
        raise PruningError(
            f"conv layer {n - 1}: the model's {sub['type']!r} subsampler is built as wide as the CNN's last layer "
            f"({c.conv_layers[-1][0]} channels); prune the earlier layers' channels instead"
        )
    cfg = dataclasses.replace(
        c,
        conv_layers=[(len(k), kernel, stride) for k, (_, kernel, stride) in zip(keep, c.conv_layers)],
        # fairseq's rule (a projection when the widths differ) must not drop one when they now agree
        feature_projection=True if (c.has_projection or last_pruned) else c.feature_projection,
    )
    cfg = type(c).from_dict(cfg.to_dict())  # re-validated
    old = model.state_dict()
    new_model = SSLModel(cfg)
    rows_last = torch.tensor(last, dtype=torch.long)
    out: Dict[str, Tensor] = {}
    for key, value in new_model.state_dict().items():
        m = _CONV_KEY.fullmatch(key)
        if m:
            i = int(m.group(1))
            t = old[key][torch.tensor(keep[i], dtype=torch.long)]
            if m.group(2) == "conv" and m.group(3) == "weight" and i > 0:
                t = t[:, torch.tensor(keep[i - 1], dtype=torch.long)]
        elif key.startswith("feature_layer_norm."):
            t = old[key][rows_last]
        elif key == "feature_projection.weight":
            full = old[key] if key in old else torch.eye(c.embed_dim, c.frontend_dim)
            t = full[:, rows_last]
        elif key == "feature_projection.bias":
            t = old[key] if key in old else torch.zeros(c.embed_dim)
        else:
            t = old[key]
        out[key] = t.clone().to(value.dtype)
    new_model.load_state_dict(out, strict=True)
    new_model.train(model.training)
    return new_model.to(next(model.parameters()).device)


def conv_channel_masks(model: SSLModel, channels: Mapping[int, Sequence[int]]) -> None:
    """Gate the channels :func:`prune_conv_channels` would remove to 0, in place (``channel_mask`` of each
    CNN layer; the others 1): the unpruned model then computes what the pruned one does. ``{}`` clears the
    gates."""
    layers = model.frontend.conv_layers
    for i, layer in enumerate(layers):
        idx = [int(j) for j in channels.get(i, ())]
        if not channels:
            layer.channel_mask = None
            continue
        mask = torch.ones(layer.conv.out_channels, device=layer.conv.weight.device)
        mask[idx] = 0.0
        layer.channel_mask = mask
