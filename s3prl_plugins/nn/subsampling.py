"""Sequence subsampling along time: fixed-length pooling / convolution with upsampling, and Continuous
Integrate-and-Fire (CIF) segment pooling -- one module that any model of the zoo uses through its config
(``SSLModelConfig.subsampling``, see :func:`build_subsampler`).

Fixed-length (Meng et al. 2022 §2.1): average pooling, or a convolution whose kernel equals its stride,
after the front-end; paired either with an upsampler after the encoder (repetition or a transposed
convolution, Fig. 1a, eq. 1) or with the teacher's targets subsampled the same way (Fig. 1b, eq. 2).

Variable-length subsampling of Meng, Chen, Shi, Watanabe, Garcia, Lee and Tang, "On Compressing
Sequences for Self-Supervised Speech Models" (SLT 2022), §2.2 and §5.2, after Dong and Xu's CIF
(ICASSP 2020): a non-negative weight α_t per frame; a segment boundary fires wherever the running sum
Σ_{i<=t} α_i crosses an integer; each segment is the weighted sum of the frames it covers with weights
ε, α_t, ..., α_t' − ε' -- the first frame contributes the leftover ε of its α beyond the previous
integer, the last frame the part α_t' − ε' up to the next integer, and ε' is carried over into the next
segment (§5.2). Those weights sum to 1, so a complete segment is a weighted average of its frames.

In general (α may exceed 1, so one frame may cross several integers), frame t covers the interval
[c_{t-1}, c_t] of the cumulative sum c, and its weight in segment k is the length of the overlap of that
interval with [k, k + 1]:

    w_{k,t} = max(0, min(c_t, k + 1) − max(c_{t−1}, k)),     segment_k = Σ_t w_{k,t} x_t.

Written here rather than taken from the ``torch-cif`` package (as fast: bench/RESULTS.md, ``bench_cif``):
its float32 prefix sum misplaces boundaries over long inputs (``tests/nn/test_cif.py``); ours integrates in
float64 and takes ``lengths``, α > 1 and a documented tail rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Cumulative sums within this distance of an integer count as that integer: α = 1/3 summed 300 times
# is 99.99999999999997 in float64, and fixed-rate CIF (α = 1/F) must still give T / F segments.
SNAP = 1e-6


def _cumulative(alpha: Tensor, lengths: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """(α with padded frames zeroed, float64 cumulative sum snapped to integers within SNAP)."""
    if lengths is not None:
        valid = torch.arange(alpha.size(1), device=alpha.device)[None, :] < lengths[:, None]
        alpha = alpha * valid
    c = torch.cumsum(alpha.double(), dim=1)  # float32 prefix sums drift by ~1e-4 over 1,500 frames
    rounded = torch.round(c)
    c = torch.where((c - rounded).abs() < SNAP, rounded, c)
    return alpha, c


def cif(
    features: Tensor,
    alpha: Tensor,
    lengths: Optional[Tensor] = None,
    tail_threshold: Optional[float] = None,
) -> Tuple[Tensor, Tensor]:
    """Integrate ``features`` with weights ``alpha`` and fire a segment at every integer crossing.

    Fully vectorised: a float64 cumulative sum, floor, and one ``scatter_add`` per integer a single
    frame can cross (1 for α <= 1) -- no loop over frames. Differentiable in ``features`` and ``alpha``.

    Args:
        features: (batch, frames, dim).
        alpha: (batch, frames), non-negative (a sigmoid's output is in [0, 1]; larger values are allowed:
            such a frame fills several segments).
        lengths: (batch,) valid frames (None: all); α of padded frames is ignored.
        tail_threshold: what happens to the incomplete last segment (weight Σα − floor(Σα) < 1), a float
            or one value per utterance (batch,). ``None``
            (training, the default): dropped -- the number of segments of utterance b is
            ``floor(Σ_{t < lengths[b]} α[b, t])`` (sums within 1e-6 of an integer count as that integer).
            A number (inference, CIF's usual 0.5): the tail is kept, normalised by its weight into an
            average, when its weight is at least the threshold (a positive threshold counts as at least
            1e-6); a threshold <= 0 keeps any tail, even one of no weight (below 1e-6: then the plain mean
            of the utterance's frames). An utterance whose α never fires (Σα < 1) gives no segment, or
            only its tail.

    Returns:
        ``(segments (batch, max segments, dim), segment_lengths (batch,))``; rows past an utterance's
        segment count are zero.
    """
    if features.dim() != 3 or alpha.shape != features.shape[:2]:
        raise ValueError(
            f"features must be (batch, frames, dim) and alpha (batch, frames): got {tuple(features.shape)} and "
            f"{tuple(alpha.shape)}"
        )
    if bool((alpha < 0).any()):
        raise ValueError("alpha must be non-negative")
    B, T, D = features.shape
    alpha, c = _cumulative(alpha, lengths)
    c_prev = torch.cat([c.new_zeros(B, 1), c[:, :-1]], dim=1)
    total = c[:, -1] if T else c.new_zeros(B)
    complete = torch.floor(total)
    tail = total - complete
    if tail_threshold is None:
        keep_tail = torch.zeros(B, dtype=torch.bool, device=alpha.device)
    else:
        thr = torch.as_tensor(tail_threshold, dtype=tail.dtype, device=tail.device)
        # a positive threshold is at least SNAP (a tail of float dust is no segment); <= 0 keeps any tail, even
        # one of weight 0 -- how an utterance whose alpha never fires still gets its one segment
        keep_tail = torch.where(thr > 0, tail >= thr.clamp(min=SNAP), torch.ones_like(tail, dtype=torch.bool))
    seg_lengths = complete.long() + keep_tail.long()
    n = int(seg_lengths.max()) if B else 0
    # rows 0..n-1 are the output; row n collects what is dropped (an incomplete tail), so nothing
    # needs masking afterwards
    out = features.new_zeros(B, n + 1, D)
    # a kept tail is normalised by its weight: scale the weights of the frames that fall into it
    tail_scale = torch.where(keep_tail & (tail > 0), tail.clamp(min=SNAP).reciprocal(), torch.ones_like(tail))
    k0 = torch.floor(c_prev)
    crossings = int((torch.floor(c) - k0).max()) if T else 0
    for j in range(crossings + 1):  # 1 pass for α <= 1; one more per extra integer a frame can cross
        k = k0 + j
        w = (torch.minimum(c, k + 1) - torch.maximum(c_prev, k)).clamp(min=0)
        in_tail = k == complete[:, None]
        w = torch.where(in_tail, w * tail_scale[:, None], w)
        index = torch.where(k < seg_lengths[:, None], k, torch.full_like(k, n)).long()
        out.scatter_add_(1, index.unsqueeze(-1).expand(B, T, D), w.to(features.dtype).unsqueeze(-1) * features)
    out = out[:, :n]
    # a kept tail of no weight (an α that never fires and sums to below SNAP: a saturated sigmoid) has no
    # weighted average: it is the plain mean of the utterance's frames
    empty = keep_tail & (tail <= 0) & (complete == 0)
    if n and bool(empty.any()):
        valid = _valid(lengths, B, T, features.device)
        mean = (features * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        out = torch.cat([torch.where(empty[:, None], mean, out[:, 0])[:, None], out[:, 1:]], dim=1)
    return out, seg_lengths


def cif_reference(
    features: Tensor, alpha: Tensor, lengths: Optional[Tensor] = None, tail_threshold: Optional[float] = None
) -> Tuple[Tensor, Tensor]:
    """The straightforward per-frame loop of CIF (integrate; while the accumulator reaches 1, fire the
    part that completes the segment and carry the rest), in float64 -- the slow, obvious form that
    :func:`cif` is tested against. Same arguments, returns and tail rule."""
    B, T, D = features.shape
    outs, counts = [], []
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        acc = 0.0
        seg = torch.zeros(D, dtype=torch.float64)
        segs = []
        for t in range(n):
            a = float(alpha[b, t])
            x = features[b, t].double()
            while acc + a >= 1.0 - SNAP:
                take = 1.0 - acc
                segs.append(seg + take * x)
                seg = torch.zeros(D, dtype=torch.float64)
                a = max(0.0, a - take)
                acc = 0.0
            seg = seg + a * x
            acc += a
        thr = None if tail_threshold is None else float(torch.as_tensor(tail_threshold).expand(B)[b])
        if thr is not None and (acc >= max(thr, SNAP) if thr > 0 else True):
            segs.append(seg / acc if acc >= SNAP else features[b, :n].double().mean(0))
        outs.append(segs)
        counts.append(len(segs))
    S = max(counts) if counts else 0
    rows = [torch.stack(segs) if segs else torch.zeros(0, D, dtype=torch.float64) for segs in outs]
    rows = [torch.cat([r, r.new_zeros(S - r.size(0), D)]) for r in rows]  # no in-place writes: cheap backward
    out = torch.stack(rows) if rows else torch.zeros(0, 0, D, dtype=torch.float64)
    return out.to(features.dtype), torch.tensor(counts, dtype=torch.long)


# ---------------------------------------------------------------------------------------------------
# Fixed-length subsampling and upsampling (§2.1)


def _valid(lengths: Optional[Tensor], B: int, T: int, device) -> Tensor:
    if lengths is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    return torch.arange(T, device=device)[None, :] < lengths[:, None]


def average_pool(x: Tensor, lengths: Optional[Tensor], stride: int) -> Tuple[Tensor, Tensor]:
    """Average every ``stride`` consecutive frames: (B, T, D) -> (B, ceil(T / stride), D).

    Padded frames never enter an average; an utterance's last, partial window is the average of the
    frames it has (so ``lengths`` become ``ceil(lengths / stride)`` and nothing is dropped). The paper's
    average pooling (Meng et al. 2022 §2.1, and its post-hoc "avg" rows of Table 1)."""
    B, T, D = x.shape
    n = torch.full((B,), T, dtype=torch.long, device=x.device) if lengths is None else lengths
    valid = _valid(lengths, B, T, x.device)
    S = -(-T // stride)
    pad = S * stride - T
    xs = F.pad(x * valid.unsqueeze(-1).to(x.dtype), (0, 0, 0, pad)).view(B, S, stride, D).sum(2)
    counts = (n[:, None] - torch.arange(S, device=x.device)[None, :] * stride).clamp(1, stride)
    return xs / counts.unsqueeze(-1).to(x.dtype), -(-n // stride)


def concat_pool(x: Tensor, lengths: Optional[Tensor], stride: int) -> Tuple[Tensor, Tensor]:
    """Concatenate every ``stride`` consecutive frames: (B, T, D) -> (B, ceil(T / stride), stride * D);
    a partial last window is zero-filled (Table 1's "cat" rows)."""
    B, T, D = x.shape
    n = torch.full((B,), T, dtype=torch.long, device=x.device) if lengths is None else lengths
    S = -(-T // stride)
    xs = F.pad(x * _valid(lengths, B, T, x.device).unsqueeze(-1).to(x.dtype), (0, 0, 0, S * stride - T))
    return xs.reshape(B, S, stride * D), -(-n // stride)


class FixedSubsampler(nn.Module):
    """Average pooling (``kind="avg"``, no parameters) or a convolution with kernel = stride
    (``kind="conv"``, ``channels`` in and out) over (B, T, C) front-end features (Meng et al. 2022 §2.1).
    Frames past an utterance's length are zeroed first, so a padded batch gives each utterance what it
    gets alone; output lengths are ``ceil(lengths / stride)``."""

    def __init__(self, kind: str, stride: int, channels: int):
        super().__init__()
        if kind not in ("avg", "conv"):
            raise ValueError(f"fixed subsampling is 'avg' or 'conv', not {kind!r}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.kind, self.stride = kind, int(stride)
        self.conv = nn.Conv1d(channels, channels, self.stride, self.stride) if kind == "conv" else None

    def forward(self, x: Tensor, lengths: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        if self.conv is None:
            return average_pool(x, lengths, self.stride)
        B, T, _ = x.shape
        n = torch.full((B,), T, dtype=torch.long, device=x.device) if lengths is None else lengths
        S = -(-T // self.stride)
        x = F.pad(x * _valid(lengths, B, T, x.device).unsqueeze(-1).to(x.dtype), (0, 0, 0, S * self.stride - T))
        return self.conv(x.transpose(1, 2)).transpose(1, 2), -(-n // self.stride)


class Upsampler(nn.Module):
    """Back to the front-end's frame rate after the encoder (Meng et al. 2022 Fig. 1a, eq. 1):
    repetition (``"repeat"``) or a transposed convolution with kernel = stride (``"deconv"``,
    ``dim`` in and out); the output is cut to ``frames``."""

    def __init__(self, kind: str, stride: int, dim: int):
        super().__init__()
        if kind not in ("repeat", "deconv"):
            raise ValueError(f"upsampling is 'repeat' or 'deconv', not {kind!r}")
        self.kind, self.stride = kind, int(stride)
        self.deconv = nn.ConvTranspose1d(dim, dim, self.stride, self.stride) if kind == "deconv" else None

    def forward(self, x: Tensor, frames: int) -> Tensor:
        if self.deconv is None:
            y = x.repeat_interleave(self.stride, dim=1)
        else:
            y = self.deconv(x.transpose(1, 2)).transpose(1, 2)
        if y.size(1) < frames:
            y = F.pad(y, (0, 0, 0, frames - y.size(1)))
        return y[:, :frames]


# ---------------------------------------------------------------------------------------------------
# Variable-length subsampling (§2.2, §5.2, §5.3)


class CIFWeights(nn.Module):
    """The CIF module that produces α from the front-end features (Meng et al. 2022 §3: "a single
    one-dimensional 512-channel convolution with a stride of 1 and kernel width of 5, followed by a
    feedforward layer of 512 dimensions and an output dimension of 1"; the authors' follow-up code puts
    a LayerNorm and a ReLU between them and ends in a sigmoid).

    Parameters for 512 channels: 512·512·5 + 512 (conv) + 2·512 (LayerNorm) + 512 + 1 (linear) =
    1,312,769, so DistilHuBERT (23,491,200) + CIF = 24,803,969: 24.80 M, where Table 2 prints 24.81 M.
    24.81 M needs 1,031 to 11,031 more parameters; no layer the paper or the follow-up code describes
    has that size (a second LayerNorm adds 1,024 and still rounds to 24.80 M, a second 512x512 linear
    layer adds 262,656), so the module is kept as described and the 0.01 M is recorded here as
    unexplained (tests/nn/test_subsampling.py checks our count; the fixed rows of Table 2 are exact).

    Padded frames are zeroed before the convolution (a batch gives each utterance the α it gets
    alone) and their α is 0.
    """

    def __init__(self, channels: int, kernel: int = 5):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"the CIF convolution needs an odd kernel (same-length output), got {kernel}")
        self.conv = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(channels)
        self.proj = nn.Linear(channels, 1)

    def forward(self, x: Tensor, lengths: Optional[Tensor]) -> Tensor:
        B, T, _ = x.shape
        valid = _valid(lengths, B, T, x.device)
        h = self.conv((x * valid.unsqueeze(-1).to(x.dtype)).transpose(1, 2)).transpose(1, 2)
        alpha = torch.sigmoid(self.proj(torch.relu(self.norm(h))).squeeze(-1))
        return alpha * valid.to(alpha.dtype)


def alpha_from_segments(segment_ids: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
    """α that makes :func:`cif` average each given segment: ``α_t = 1 / (length of t's segment)``
    (the target α^sup of Meng et al. 2022 eq. 5; with it CIF is the average pooling over given segments
    of the §5.3 topline).

    Args:
        segment_ids: (B, T) per-frame segment index (any labels that change exactly at boundaries;
            negative values mark padding, e.g. the -100 of a padded label batch).
        lengths: (B,) valid frames (None: the non-negative labels).
    """
    B, T = segment_ids.shape
    valid = segment_ids >= 0
    if lengths is not None:
        valid &= _valid(lengths, B, T, segment_ids.device)
    change = torch.ones_like(valid)
    change[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    index = torch.cumsum(change & valid, dim=1) - 1  # running segment number per frame
    index = index.clamp(min=0)
    size = torch.zeros(B, T + 1, dtype=torch.float64, device=segment_ids.device)
    size.scatter_add_(1, index, valid.double())
    alpha = 1.0 / size.gather(1, index).clamp(min=1.0)
    return alpha * valid  # float64: 1/3 + 1/3 + 1/3 must sum to 1 for the guidance losses


def fit_segment_ids(segment_ids: Tensor, frames: int) -> Tensor:
    """Per-frame segment labels (B, T') fitted to ``frames`` front-end frames: cut, or extended by each
    utterance's last label over the missing frames (labels written at another CNN's rate can be a frame
    or two short; the data pipeline pads with -100, which is filled the same way -- frames past an
    utterance's length are masked by its lengths anyway)."""
    B, T = segment_ids.shape
    if T < frames:
        segment_ids = torch.cat([segment_ids, segment_ids.new_full((B, frames - T), -100)], dim=1)
    segment_ids = segment_ids[:, :frames]
    valid = segment_ids >= 0
    last = segment_ids.gather(1, (valid.sum(1, keepdim=True) - 1).clamp(min=0))
    return torch.where(valid, segment_ids, last.expand_as(segment_ids))


def segment_index(alpha: Tensor, lengths: Optional[Tensor], segment_lengths: Tensor) -> Tensor:
    """(B, T) the segment each frame belongs to (the one its share of α starts in), clamped to the
    utterance's segments -- what :func:`expand_segments` repeats."""
    _, c = _cumulative(alpha, lengths)
    c_prev = torch.cat([c.new_zeros(c.size(0), 1), c[:, :-1]], dim=1)
    idx = torch.floor(c_prev).long()
    return torch.minimum(idx, (segment_lengths - 1).clamp(min=0)[:, None])


def expand_segments(segments: Tensor, alpha: Tensor, lengths: Optional[Tensor], segment_lengths: Tensor) -> Tensor:
    """Segment-rate states (B, S, D) back to the front-end's frames (B, T, D): each frame takes its
    segment's vector (frames after the last kept segment take the last one). The fixed-stride output
    that s3prl's ``S3PRLUpstream`` and ESPnet's frontend need."""
    idx = segment_index(alpha, lengths, segment_lengths)
    if segments.size(1) == 0:
        return segments.new_zeros(alpha.size(0), alpha.size(1), segments.size(-1))
    return segments.gather(1, idx.unsqueeze(-1).expand(-1, -1, segments.size(-1)))


@dataclass
class Subsampled:
    """What a subsampler returns: the shortened features, their lengths, and α for variable-length
    subsampling (None for fixed)."""

    x: Tensor
    lengths: Tensor
    alpha: Optional[Tensor] = None
    frames: int = 0  # the input's (padded) frames


SUBSAMPLING_TYPES = ("avg", "conv", "cif", "segments")
FIXED_SUBSAMPLING = ("avg", "conv")  # a fixed frame rate; the others follow the content (Subsampler.variable)
SUBSAMPLING_KEYS = {"type", "stride", "upsample", "kernel", "tail_threshold"}


def check_subsampling(spec: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for an inconsistent ``SSLModelConfig.subsampling`` mapping."""
    unknown = sorted(set(spec) - SUBSAMPLING_KEYS)
    if unknown:
        raise ValueError(f"unknown subsampling key(s) {unknown}; known: {sorted(SUBSAMPLING_KEYS)}")
    kind = spec.get("type")
    if kind not in SUBSAMPLING_TYPES:
        raise ValueError(f"subsampling type {kind!r}: choose one of {SUBSAMPLING_TYPES}")
    stride = spec.get("stride", 1)
    if not isinstance(stride, (int, float)) or stride < 1:
        raise ValueError(f"subsampling stride must be >= 1 front-end frames per output frame, got {stride!r}")
    if kind in ("avg", "conv") and int(stride) != stride:
        raise ValueError(f"fixed subsampling needs an integer stride, got {stride}")
    up = spec.get("upsample")
    if up not in (None, "repeat", "deconv"):
        raise ValueError(f"subsampling upsample {up!r}: choose null, 'repeat' or 'deconv'")
    if up is not None and kind not in ("avg", "conv"):
        raise ValueError(
            "upsampling (Fig. 1a) pairs with fixed subsampling only; variable-length models subsample the targets"
        )


class Subsampler(nn.Module):
    """One subsampler for every model, from the config mapping ``{type, stride, upsample, kernel,
    tail_threshold}``:

    ============  ==================================================================================
    ``avg``       average pooling, ``stride`` frames per output frame (no parameters)
    ``conv``      convolution with kernel = stride (``channels``² · stride + channels parameters)
    ``cif``       :class:`CIFWeights` (``kernel``, default 5) → α → :func:`cif`; ``stride`` is the
                  nominal frames per segment (the cardinality target, and the rate the profiler
                  assumes for a model without audio)
    ``segments``  the §5.3 topline: average pooling over segments given with the input (no CIF,
                  no parameters); ``stride`` is nominal as for ``cif``
    ============  ==================================================================================

    Tail rule of variable-length subsampling: in training the incomplete last segment is dropped (CIF's
    count is floor(Σα)); in eval mode it is kept when its weight reaches ``tail_threshold`` (0.5); and,
    in both, an utterance whose α never fires (Σα < 1) keeps its tail as its one segment (the average
    of all its frames), so no utterance reaches the encoder -- or a downstream model -- empty.
    """

    def __init__(self, spec: Mapping[str, Any], channels: int):
        super().__init__()
        check_subsampling(spec)
        self.kind = str(spec["type"])
        self.stride = spec.get("stride", 1)
        self.tail_threshold = float(spec.get("tail_threshold", 0.5))
        self.fixed = FixedSubsampler(self.kind, int(self.stride), channels) if self.kind in FIXED_SUBSAMPLING else None
        self.weights = CIFWeights(channels, int(spec.get("kernel", 5))) if self.kind == "cif" else None

    def _threshold(self, alpha: Tensor, lengths: Optional[Tensor]) -> Tensor:
        """Per utterance: no tail in training (inf), ``tail_threshold`` in eval mode, and any weight at
        all where α never fires (so that no utterance is left without a segment)."""
        total = _cumulative(alpha, lengths)[1][:, -1]
        never = torch.floor(total) < 1
        base = self.tail_threshold if not self.training else float("inf")
        return torch.where(never, torch.zeros_like(total), torch.full_like(total, base))

    @property
    def variable(self) -> bool:
        return self.fixed is None

    def forward(
        self, x: Tensor, lengths: Tensor, alpha: Optional[Tensor] = None, segment_ids: Optional[Tensor] = None
    ) -> Subsampled:
        """Args:
        x: (B, T, C) front-end features; lengths: (B,) valid frames.
        alpha: use this α instead of computing it (variable-length only).
        segment_ids: (B, T) per-frame segment labels (``segments`` type: required).
        """
        if self.fixed is not None:
            if alpha is not None or segment_ids is not None:
                raise ValueError(f"{self.kind} subsampling is fixed-length: it takes no alpha or segments")
            y, n = self.fixed(x, lengths)
            return Subsampled(y, n, None, x.size(1))
        if alpha is None:
            if self.kind == "segments":
                if segment_ids is None:
                    raise ValueError(
                        "this model pools over given segments (subsampling type 'segments', the forced-alignment "
                        "topline): pass segment_ids (per-frame segment labels at the front-end's frame rate)"
                    )
                alpha = alpha_from_segments(fit_segment_ids(segment_ids, x.size(1)), lengths).to(x.dtype)
            else:
                alpha = self.weights(x, lengths)
        threshold = self._threshold(alpha, lengths)
        y, n = cif(x, alpha, lengths, tail_threshold=threshold)
        return Subsampled(y, n, alpha, x.size(1))

    def pool_like(self, x: Tensor, lengths: Tensor, out: Subsampled) -> Tuple[Tensor, Tensor]:
        """Subsample other frames (the teacher's hidden states, Fig. 1b, eq. 2) the way ``out`` was:
        average pooling with the same stride for fixed subsampling (also for ``conv``: the paper
        subsamples targets by averaging), and CIF with the student's α (§5.2) for variable-length --
        the same tail rule, so teacher and student have the same segments."""
        if self.fixed is not None:
            return average_pool(x, lengths, int(self.stride))
        T = min(x.size(1), out.alpha.size(1))
        alpha, lengths = out.alpha[:, :T], lengths.clamp(max=T)
        threshold = self._threshold(alpha, lengths)
        return cif(x[:, :T], alpha.to(x.dtype), lengths, tail_threshold=threshold)

    def expand(self, states: Tensor, out: Subsampled, frames: int, lengths: Tensor) -> Tensor:
        """Subsampled states back to ``frames`` front-end frames by repetition (fixed) or by each
        frame's segment (variable, :func:`expand_segments`)."""
        if self.fixed is not None:
            y = states.repeat_interleave(int(self.stride), dim=1)
            if y.size(1) < frames:
                y = F.pad(y, (0, 0, 0, frames - y.size(1)))
            return y[:, :frames]
        return expand_segments(states, out.alpha, lengths, out.lengths)


def build_subsampler(spec: Optional[Mapping[str, Any]], channels: int) -> Optional[Subsampler]:
    return None if not spec else Subsampler(spec, channels)
