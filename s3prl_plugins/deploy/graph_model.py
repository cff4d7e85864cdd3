"""The traceable forward of an :class:`SSLModel`: what the ONNX graph computes.

:meth:`SSLModel.forward` checks its input with Python control flow (``int(lengths.max())``), skips the
attention mask when nothing is padded, normalises one utterance at a time and runs MelHuBERT's fbank
per utterance -- right in PyTorch, but a trace would freeze each of those choices at the example's
shapes. :class:`ExportableModel` runs the same modules (the same parameters, no copies) with every
shape-dependent step written as tensor ops: the mask is always built from ``lengths``, the waveform
normalisation is masked, the log-Mel front-end is :class:`~s3prl_plugins.deploy.fbank.ExportableFbank`,
and CIF is integrated over a fixed number of rows (the front-end's frames + 1; α < 1 per frame, a
sigmoid, so no utterance has more segments) instead of the batch's largest segment count.

Outputs: ``hidden_states`` (layers + 1, batch, frames, dim) -- padded frames hold unspecified values, as
in PyTorch -- and ``output_lengths`` (batch,), the valid frames. The rate is the expert's
(:class:`~s3prl_plugins.upstream.expert.UpstreamExpert`, ``output_rate="auto"``): the encoder's frames
for fixed subsampling, the front-end's frames for CIF (each frame takes its segment's state).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_plugins.deploy.fbank import ExportableFbank
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.nn.frontends import LogMelFrontend, conv_output_lengths
from s3prl_plugins.nn.subsampling import SNAP


class ExportError(ValueError):
    """A model (or an export option) that the ONNX graph cannot express; the message says why and what is supported."""


def _positions(x: Tensor, dim: int) -> Tensor:
    """``arange(x.size(dim))`` that a trace keeps dynamic."""
    return torch.arange(x.size(dim), device=x.device)


def _masked_layer_norm(w: Tensor, lengths: Tensor) -> Tensor:
    """Per-utterance zero mean, unit variance over the valid samples (``F.layer_norm`` of each, eps 1e-5);
    zero on padding, as :func:`s3prl_plugins.models.ssl_model._normalize`."""
    valid = (_positions(w, 1)[None, :] < lengths[:, None]).to(w.dtype)
    n = lengths.to(w.dtype)[:, None]
    mean = (w * valid).sum(1, keepdim=True) / n
    var = (((w - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return (w - mean) / torch.sqrt(var + 1e-5) * valid


def _cif_frontend_rate(x: Tensor, alpha: Tensor, lengths: Tensor, threshold: float) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`s3prl_plugins.nn.subsampling.cif` in eval mode (tail kept at ``threshold``; an utterance whose
    α never fires keeps its one segment) over T + 1 rows, for α < 1 per frame.

    Returns (segments (B, T, D) zero past each utterance's count, segment lengths (B,), the segment of
    each frame (B, T) -- what :func:`~s3prl_plugins.nn.subsampling.expand_segments` gathers)."""
    D = x.size(2)
    valid = _positions(x, 1)[None, :] < lengths[:, None]
    alpha = alpha * valid.to(alpha.dtype)
    c = torch.cumsum(alpha.double(), dim=1)
    rounded = torch.round(c)
    c = torch.where((c - rounded).abs() < SNAP, rounded, c)
    c_prev = torch.cat([torch.zeros_like(c[:, :1]), c[:, :-1]], dim=1)
    total = c[:, -1]
    complete = torch.floor(total)
    tail = total - complete
    never = complete < 1
    keep_tail = never | (tail >= max(threshold, SNAP))
    seg_lengths = complete.long() + keep_tail.long()
    tail_scale = torch.where(keep_tail & (tail > 0), 1.0 / tail.clamp(min=SNAP), torch.ones_like(tail))
    k0 = torch.floor(c_prev)
    trash = torch.ones_like(k0).sum(1, keepdim=True)  # (B, 1) = T, kept dynamic by a trace
    out = torch.zeros_like(torch.cat([x, x[:, :1]], dim=1))  # (B, T + 1, D): row T takes what is dropped
    for j in range(2):  # α < 1: a frame's share falls in at most two segments
        k = k0 + j
        w = (torch.minimum(c, k + 1) - torch.maximum(c_prev, k)).clamp(min=0)
        w = torch.where(k == complete[:, None], w * tail_scale[:, None], w)
        index = torch.where(k < seg_lengths[:, None].to(k.dtype), k, trash).long()
        out = out.scatter_add(1, index.unsqueeze(-1).expand(-1, -1, D), w.to(x.dtype).unsqueeze(-1) * x)
    out = out[:, :-1]
    # a kept tail of no weight (α never fires and sums to ~0): the plain mean of the utterance's frames
    empty = keep_tail & (tail <= 0) & (complete == 0)
    mean = (x * valid.unsqueeze(-1).to(x.dtype)).sum(1) / lengths.clamp(min=1).to(x.dtype)[:, None]
    first = torch.where(empty[:, None], mean, out[:, 0])
    out = torch.cat([first[:, None], out[:, 1:]], dim=1)
    frame_segment = torch.minimum(k0.long(), (seg_lengths - 1).clamp(min=0)[:, None])
    return out, seg_lengths, frame_segment


def _fixed_subsample(sub, x: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
    """:class:`~s3prl_plugins.nn.subsampling.FixedSubsampler` with a constant right padding of stride - 1
    frames (a window-sized pooling of it gives ceil(T / stride) windows for any T, where the module pads by
    a shape-dependent amount a trace would freeze)."""
    stride = int(sub.stride)
    valid = (_positions(x, 1)[None, :] < lengths[:, None]).to(x.dtype)
    x = F.pad((x * valid.unsqueeze(-1)).transpose(1, 2), (0, stride - 1))  # (B, C, T + stride - 1)
    out_lengths = torch.div(lengths + stride - 1, stride, rounding_mode="floor")
    if sub.fixed.conv is not None:
        return sub.fixed.conv(x).transpose(1, 2), out_lengths
    sums = F.avg_pool1d(x, stride, stride) * stride  # (B, C, S)
    starts = torch.arange(sums.size(2), device=x.device)[None, :] * stride
    counts = (lengths[:, None] - starts).clamp(1, stride).to(x.dtype)
    return (sums / counts.unsqueeze(1)).transpose(1, 2), out_lengths


class ExportableModel(nn.Module):
    """``forward(waveforms (B, L) float32, lengths (B,) int64) -> (hidden_states (layers + 1, B, T, D),
    output_lengths (B,))`` of an :class:`SSLModel` in eval mode, in traceable ops.

    Args:
        model: the model; its modules are shared, not copied.
        output_rate: ``"auto"`` (the expert's default) or ``"encoder"`` / ``"frontend"``; CIF models
            support ``frontend`` only (their segment count varies per utterance, which one ONNX
            output tensor with a lengths vector could carry, but no s3prl runner or ESPnet front-end
            takes), fixed subsampling ``encoder`` only.
    """

    def __init__(self, model: SSLModel, output_rate: str = "auto"):
        super().__init__()
        config = model.config
        sub = model.subsampler
        if sub is not None and sub.kind == "segments":
            raise ExportError(
                "subsampling type 'segments' (the forced-alignment topline) pools over segments given with the "
                "audio; an exported graph takes audio alone. Export a CIF or fixed-subsampling model instead"
            )
        if output_rate not in ("auto", "encoder", "frontend"):
            raise ExportError(f"output_rate={output_rate!r}: choose auto, encoder or frontend")
        if sub is not None and sub.variable and output_rate == "encoder":
            raise ExportError(
                "a CIF model's segment-rate output (a different number of segments per utterance) is not exported; "
                "supported: output_rate 'frontend' (the default for CIF): every state at the CNN's fixed frame rate, "
                "each frame holding its segment's state -- what s3prl's S3PRLUpstream and ESPnet take"
            )
        if sub is not None and not sub.variable and output_rate == "frontend":
            raise ExportError(
                "fixed subsampling is exported at its own (encoder) rate, the expert's default; downstream code "
                f"repeats each frame {int(sub.stride)} times if it needs the front-end's rate"
            )
        self.model = model.eval()
        self.fbank = ExportableFbank(model.frontend) if isinstance(model.frontend, LogMelFrontend) else None
        self.cif_threshold = float(sub.tail_threshold) if sub is not None and sub.variable else None
        self.layer_norm_first = config.layer_norm_first
        self.eval()  # torch.onnx.export restores the wrapper's mode afterwards: it must be eval, or dropout turns on

    @property
    def downsample_rate(self) -> int:
        """Input samples per output frame."""
        config = self.model.config
        if self.cif_threshold is not None:
            return config.downsample_rate
        return config.encoder_downsample_rate or config.downsample_rate

    def frontend(self, waveforms: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        model = self.model
        if model.config.normalize_waveform:
            waveforms = _masked_layer_norm(waveforms, lengths)
        if self.fbank is not None:
            return self.fbank(waveforms, lengths)
        x = waveforms.unsqueeze(1)
        for block in model.frontend.conv_layers:
            x = block.conv(x)
            if block.norm_kind == "group_norm":
                x = block.norm(x)
            elif block.norm_kind == "layer_norm":
                x = block.norm(x.transpose(1, 2)).transpose(1, 2)
            x = F.gelu(x)
        return x.transpose(1, 2), conv_output_lengths(lengths, model.frontend.specs)

    def encoder(self, x: Tensor, lengths: Tensor) -> Tensor:
        enc = self.model.encoder
        padding_mask = _positions(x, 1)[None, :] >= lengths[:, None]
        x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        if enc.pos_conv is not None:
            x = x + enc.pos_conv(x)
        if not self.layer_norm_first:
            x = enc.layer_norm(x)
        states = [x]
        position_bias: Optional[Tensor] = None
        for layer in enc.layers:
            x, _, position_bias = layer(x, padding_mask, position_bias, False)
            states.append(x)
        if self.layer_norm_first:
            states[-1] = enc.layer_norm(states[-1])
        return torch.stack(states)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor]:
        model = self.model
        x, n = self.frontend(waveforms, lengths)
        sub = model.subsampler
        frame_segment, frontend_lengths = None, n
        if sub is not None and sub.fixed is not None:
            x, n = _fixed_subsample(sub, x, n)
        elif sub is not None:
            alpha = sub.weights(x, n)
            x, n, frame_segment = _cif_frontend_rate(x, alpha, n, self.cif_threshold)
        x, _ = model.project(x, n)
        states = self.encoder(x, n)
        if frame_segment is not None:
            index = frame_segment[None, :, :, None].expand(states.size(0), -1, -1, states.size(3))
            states = torch.gather(states, 2, index)
            n = frontend_lengths
        return states, n
