"""Speech Temporal Relation (STaR) distillation losses (Jang, Kim and Kim 2024, "STaR: Distilling Speech
Temporal Relation for Lightweight Speech Self-Supervised Learning Models").

Conventions shared by every function here:

* ``teacher_states`` / ``student_states``: lists of ``(B, T, D)`` tensors, layer 0 first (layer 0 is the
  input of the first transformer layer, the paper's "zeroth output"). Widths may differ between teacher
  and student; the lists must have the same length (map layers beforehand, see :func:`map_layers`).
* ``teacher_attn`` / ``student_attn``: lists of head-averaged attention maps ``(B, T, T)``, one per
  transformer layer, rows are queries (each valid row sums to 1 over the valid keys).
* ``lengths``: ``(B,)`` valid frames per utterance. Frames at or past ``lengths[b]`` are padding and
  contribute nothing: whatever a padded frame holds, the loss (and its gradient) is that of the
  utterance cut to its valid frames.
* Time lengths: teacher and student sequences may differ by at most ``max_mismatch`` frames (edge effects
  of different front-ends); both are cut to the shorter. A larger difference raises ``ValueError``
  (e.g. a 10 ms student against a 20 ms teacher).
* Reduction ``"mean"`` (default): for each layer and utterance ``b`` with ``n_b`` valid frames, the
  squared Frobenius distance is divided by ``n_b**2`` (mean over the frame pairs; for the KL, the sum over
  valid keys is averaged over the ``n_b`` valid query rows); these per-utterance values are averaged over
  the batch (every utterance weighs the same, so a padded batch gives exactly the mean of the
  one-by-one losses) and summed over layers, as the equations sum over layers. ``"sum"``: the equations
  literally, summed over the batch.
* Normalisation (``normalize``), not specified by the paper (its code was not released):

  - ``"l2"`` (default): each frame vector is scaled to unit L2 norm before the Gram matrix, so TGM
    entries are cosine similarities in [-1, 1]. Chosen because teacher and student widths differ
    (768 vs 432), HuBERT's layer norms differ by more than 10x across depth (an unnormalised sum over
    layers is dominated by the loudest layers), and a bounded target keeps the paper's lr of 1e-3 stable.
  - ``"dim"``: ``G = F F^T / D``: the mean over channels of the products (keeps the norms, removes the
    width dependence).
  - ``"none"``: ``G = F F^T``, eq. 3 as written.

* Memory: ``||A A^T - B B^T||_F^2 = ||A^T A||_F^2 - 2 ||A^T B||_F^2 + ||B^T B||_F^2`` (and
  ``||A1 A2^T - B1 B2^T||_F^2 = <A1^T A1, A2^T A2> - 2 <A1^T B1, A2^T B2> + <B1^T B1, B2^T B2>`` for the
  intra-layer TGM) needs only ``D x D`` products: memory independent of ``T``, and ``O(T D^2)`` instead of
  ``O(T^2 D)`` work. ``method="auto"`` uses it when it needs fewer multiply-adds than the direct
  ``T x T`` form (``T > (Dt^2 + Dt*Ds + Ds^2) / (k (Dt + Ds))`` for ``k`` losses computed together by
  :func:`tgm_losses`: ~924 frames for 768/432 alone, ~462 for STaR's two); ``"gram"`` /
  ``"direct"`` force one. Both are computed in float32 (float64 inputs stay float64) with autocast off.
  The D x D form subtracts large terms: in float32 its absolute error is ~1e-7 of ``||A^T A||^2``,
  negligible for training; equality with the direct form to 1e-5 relative holds in float64 (tested).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import torch
from torch import Tensor

NORMALIZATIONS = ("l2", "dim", "none")
METHODS = ("auto", "gram", "direct")
REDUCTIONS = ("mean", "sum")


def match_time(
    teacher: Sequence[Tensor],
    student: Sequence[Tensor],
    lengths: Tensor,
    max_mismatch: int = 2,
    time_dims: Tuple[int, ...] = (1,),
) -> Tuple[List[Tensor], List[Tensor], Tensor]:
    """Cut teacher and student tensors to the shorter time length (differing by at most ``max_mismatch``).

    ``time_dims`` are the dimensions that are time (``(1,)`` for states, ``(1, 2)`` for attention maps).
    Returns the cut lists and ``lengths`` clamped to the common length.
    """
    if len(teacher) != len(student):
        raise ValueError(
            f"teacher gives {len(teacher)} tensors and student {len(student)}: map student layers to teacher "
            "layers first (s3prl_plugins.losses.star.map_layers, or `layer_map` in the distillation config)"
        )
    if not teacher:
        raise ValueError("no layers to distil")
    tt, ts = teacher[0].size(time_dims[0]), student[0].size(time_dims[0])
    if abs(tt - ts) > max_mismatch:
        raise ValueError(
            f"teacher has {tt} frames and student {ts}: their frame rates differ (the TGM and attention losses "
            f"need the same frames; at most {max_mismatch} frames of edge difference are cut). Use a student "
            "whose front-end has the teacher's total stride."
        )
    n = min(tt, ts)

    def cut(x: Tensor) -> Tensor:
        for d in time_dims:
            x = x.narrow(d, 0, n)
        return x

    return [cut(t) for t in teacher], [cut(s) for s in student], lengths.clamp(max=n)


def valid_mask(lengths: Tensor, frames: int) -> Tensor:
    """(B, frames) True on valid frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def _prep(x: Tensor, mask: Tensor, normalize: str) -> Tensor:
    """Features ready for a TGM: float32 (or float64), unit rows / scaled as asked, padded rows zero."""
    x = x.float() if x.dtype != torch.float64 else x
    if normalize == "l2":
        x = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    elif normalize == "dim":
        x = x / x.size(-1) ** 0.5  # (x/sqrt D)(x/sqrt D)^T = x x^T / D
    elif normalize != "none":
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {normalize!r}")
    return x * mask[..., None].to(x.dtype)


def _use_gram(method: str, frames: int, dt: int, ds: int, terms: int = 1) -> bool:
    """Whether the D x D form needs fewer multiply-adds than the direct one for ``terms`` TGM losses
    computed together (the D x D products are shared between the layer-wise and intra-layer losses)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if method == "auto":
        return frames * (dt * dt + dt * ds + ds * ds) < terms * frames * frames * (dt + ds)
    return method == "gram"


def _bt(x: Tensor, y: Tensor) -> Tensor:
    """(B, N, d), (B, N, d') -> (B, d, d') = x^T y."""
    return torch.bmm(x.transpose(1, 2), y)


def _inner(x: Tensor, y: Tensor) -> Tensor:
    """Frobenius inner product over the last two dimensions: (..., d, d') -> (...) (a batched dot
    product: no (..., d, d') temporary)."""
    return torch.einsum("...ij,...ij->...", x, y)


def _reduce(per_utt: Tensor, lengths: Tensor, reduction: str, power: int) -> Tensor:
    if reduction == "sum":
        return per_utt.sum()
    if reduction != "mean":
        raise ValueError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")
    n = lengths.to(per_utt.dtype).clamp(min=1)
    return (per_utt / n**power).mean()


def tgm_losses(
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    lengths: Tensor,
    layer_wise: bool = True,
    intra_layer: bool = True,
    normalize: str = "l2",
    reduction: str = "mean",
    method: str = "auto",
    max_mismatch: int = 2,
) -> Dict[str, Tensor]:
    """The layer-wise (eq. 3-4) and/or intra-layer (eq. 5-6) TGM losses of the same states, computed
    together: in the D x D form they share every product (``A_l^T A_l``, ``A_l^T B_l``, ``B_l^T B_l`` per
    layer), so both cost what one costs. Returns ``{"layer_wise": ..., "intra_layer": ...}`` (those asked).
    See :func:`layer_wise_tgm_loss` and :func:`intra_layer_tgm_loss` for the definitions."""
    if not (layer_wise or intra_layer):
        raise ValueError("ask for layer_wise and/or intra_layer")
    with torch.autocast(device_type=lengths.device.type, enabled=False):
        teacher, student, lengths = match_time(teacher_states, student_states, lengths, max_mismatch)
        if intra_layer and len(teacher) < 2:
            raise ValueError("the intra-layer TGM loss needs at least two states (a layer's input and output)")
        mask = valid_mask(lengths, teacher[0].size(1))
        ta = [_prep(t, mask, normalize) for t in teacher]
        sa = [_prep(s, mask, normalize) for s in student]
        frames, dt, ds = ta[0].size(1), ta[0].size(2), sa[0].size(2)
        out: Dict[str, Tensor] = {}
        if _use_gram(method, frames, dt, ds, int(layer_wise) + int(intra_layer)):
            # ||A A'^T - B B'^T||^2 = <A^T A, A'^T A'> - 2 <A^T B, A'^T B'> + <B^T B, B'^T B'>, with the
            # small D x D products of all layers stacked, (L, B, D, D'), so that the distances of every
            # pair of layers take a few batched kernels (a GPU is otherwise bound by kernel launches)
            ga = torch.stack([_bt(a, a) for a in ta])
            c = torch.stack([_bt(a, b) for a, b in zip(ta, sa)])
            gb = torch.stack([_bt(b, b) for b in sa])
            if layer_wise:  # layer l with itself, every l: (L, B) distances summed over layers
                d = _inner(ga, ga) - 2.0 * _inner(c, c) + _inner(gb, gb)
                out["layer_wise"] = _reduce(d.sum(0), lengths, reduction, 2)
            if intra_layer:  # layer l - 1 with layer l
                d = _inner(ga[:-1], ga[1:]) - 2.0 * _inner(c[:-1], c[1:]) + _inner(gb[:-1], gb[1:])
                out["intra_layer"] = _reduce(d.sum(0), lengths, reduction, 2)
            return out

        def dist(i: int, j: int) -> Tensor:  # the direct N x N form, one pair of layers at a time
            gt = torch.bmm(ta[i], ta[j].transpose(1, 2))
            gs = torch.bmm(sa[i], sa[j].transpose(1, 2))
            return (gt - gs).pow(2).sum((1, 2))

        if layer_wise:
            out["layer_wise"] = sum(_reduce(dist(l, l), lengths, reduction, 2) for l in range(len(ta)))
        if intra_layer:
            out["intra_layer"] = sum(_reduce(dist(l - 1, l), lengths, reduction, 2) for l in range(1, len(ta)))
        return out


def layer_wise_tgm_loss(
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    lengths: Tensor,
    normalize: str = "l2",
    reduction: str = "mean",
    method: str = "auto",
    max_mismatch: int = 2,
) -> Tensor:
    """Layer-wise temporal Gram matrix loss (Jang, Kim and Kim 2024, eq. 3-4).

    ``G^l = F^l (F^l)^T`` (eq. 3, ``N x N`` with ``F^l`` the ``N x D`` frames of layer ``l``) and
    ``L_layer-wise = sum_{l=0..L} ||G^{l,T} - G^{l,S}||_F^2`` (eq. 4), over every given state (layer 0 =
    first transformer input). With ``reduction="mean"`` each squared distance is divided by ``n_b^2``
    and averaged over utterances (module docstring); features are normalised per ``normalize``.
    """
    return tgm_losses(teacher_states, student_states, lengths, True, False, normalize, reduction, method, max_mismatch)[
        "layer_wise"
    ]


def intra_layer_tgm_loss(
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    lengths: Tensor,
    normalize: str = "l2",
    reduction: str = "mean",
    method: str = "auto",
    max_mismatch: int = 2,
) -> Tensor:
    """Intra-layer temporal Gram matrix loss (Jang, Kim and Kim 2024, eq. 5-6).

    ``G^l = F^{l-1} (F^l)^T`` (eq. 5: the relation between a layer's input and output) and
    ``L_intra-layer = sum_{l=1..L} ||G^{l,T} - G^{l,S}||_F^2`` (eq. 6), for each consecutive pair of the
    given states. Reduction and normalisation as in :func:`layer_wise_tgm_loss`.
    """
    return tgm_losses(teacher_states, student_states, lengths, False, True, normalize, reduction, method, max_mismatch)[
        "intra_layer"
    ]


def avg_attention_kl(
    teacher_attn: Sequence[Tensor],
    student_attn: Sequence[Tensor],
    lengths: Tensor,
    reduction: str = "mean",
    max_mismatch: int = 2,
    eps: float = 1e-8,
) -> Tensor:
    """Average attention map distillation (Jang, Kim and Kim 2024, eq. 1).

    ``L_avg-attn = sum_l sum_t KL( mean_h A^{l,T}_{h,t} || mean_h A^{l,S}_{h,t} )`` over the given layers,
    where ``A_{h,t}`` is query row ``t`` of head ``h`` (the maps given are already head-averaged, so
    teacher and student may have different head counts). Only valid queries and keys count; rows are
    renormalised over the valid keys (a no-op for maps computed with the padding mask) and student
    probabilities are floored at ``eps`` before the log. ``reduction="mean"``: the per-utterance sum over
    valid rows is divided by ``n_b`` and averaged over utterances, then summed over layers.
    """
    with torch.autocast(device_type=lengths.device.type, enabled=False):
        teacher, student, lengths = match_time(teacher_attn, student_attn, lengths, max_mismatch, time_dims=(1, 2))
        frames = teacher[0].size(1)
        mask = valid_mask(lengths, frames)
        pair = mask[:, :, None] & mask[:, None, :]
        total = 0.0
        for t, s in zip(teacher, student):
            p = t.float().masked_fill(~pair, 0.0)
            q = s.float().masked_fill(~pair, 0.0)
            p = p / p.sum(-1, keepdim=True).clamp(min=eps)
            q = q / q.sum(-1, keepdim=True).clamp(min=eps)
            kl = torch.xlogy(p, p) - p * torch.log(q.clamp(min=eps))
            per_utt = kl.masked_fill(~pair, 0.0).sum((1, 2))
            total = total + _reduce(per_utt, lengths, reduction, 1)
        return total


def last_attention_kl(
    teacher_attn: Sequence[Tensor], student_attn: Sequence[Tensor], lengths: Tensor, **kwargs
) -> Tensor:
    """The paper's ``L_last-attn`` baseline (Jang, Kim and Kim 2024, Table 1; after MiniLM/[21]): eq. 1 on the
    last transformer layer only (head-averaged maps, see :func:`avg_attention_kl`)."""
    return avg_attention_kl(list(teacher_attn)[-1:], list(student_attn)[-1:], lengths, **kwargs)


def map_layers(
    teacher_layers: int, student_layers: int, layer_map: Union[None, str, Sequence[int]] = None
) -> List[int]:
    """For each student state 0..``student_layers``, the teacher state it is matched with.

    * ``None``: identity; the depths must agree (the paper's layer-to-layer distillation, §3.1).
    * ``"uniform"``: student state ``j`` <-> teacher state ``round(j * L_T / L_S)`` (state 0 <-> 0, last
      <-> last; e.g. a 4-layer student of a 12-layer teacher uses teacher states 0, 3, 6, 9, 12).
    * a list of ``student_layers + 1`` teacher state indices, in increasing order.
    """
    if layer_map is None:
        if teacher_layers != student_layers:
            raise ValueError(
                f"the teacher has {teacher_layers} transformer layers and the student {student_layers}: set "
                "`layer_map: uniform` or a list of teacher states (one per student state 0..L) in the config"
            )
        return list(range(student_layers + 1))
    if layer_map == "uniform":
        return [int(round(j * teacher_layers / student_layers)) for j in range(student_layers + 1)]
    if isinstance(layer_map, str):
        raise ValueError(f"layer_map must be null, 'uniform' or a list of teacher states, not {layer_map!r}")
    out = [int(i) for i in layer_map]
    if len(out) != student_layers + 1:
        raise ValueError(
            f"layer_map has {len(out)} entries; the student has {student_layers + 1} states (0..{student_layers})"
        )
    if any(i < 0 or i > teacher_layers for i in out) or any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"layer_map {out} must increase strictly within teacher states 0..{teacher_layers}")
    return out
