"""Transformer components shared by every model in the zoo (HuBERT, wav2vec 2.0, WavLM, DistilHuBERT,
STaRHuBERT, MelHuBERT).

Every layer has its own head count and FFN width, so a pruned model is described by its config and
rebuilt by the same code. Attention runs through ``scaled_dot_product_attention``; when the
head-averaged attention map is asked for (STaR's eq. 1, MelHuBERT's diagonality eq. 9) the heads are
processed one at a time so that only one (batch, frames, frames) map per head is alive at once and the
average is accumulated, never a (batch, heads, frames, frames) tensor of every head.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_plugins.nn.frontends import autocast_dtype, cpu_bf16_supported, cpu_inference, fast_path_on, gelu

logger = logging.getLogger(__name__)

POS_CONV_PRECISIONS = ("fp32_forward", "fp32", "autocast")
CPU_BF16 = ("auto", "on", "off")


class _Fp32ForwardConv1d(torch.autograd.Function):
    """A 1-D convolution whose forward runs in (at least) float32 and whose backward runs in ``low_dtype``
    on the inputs saved in ``low_dtype`` -- exactly the backward autocast would run. For the grouped
    positional convolution cuDNN's bf16 forward is ~8x slower than its fp32 one while its bf16 backward
    is ~8x faster than the fp32 one (H200, 768 ch, kernel 128, 16 groups): this takes the fast half of each.
    Gradients are returned in the dtype of each input (the float32 weight gets float32 gradients)."""

    @staticmethod
    def forward(
        ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: int, groups: int, low_dtype: torch.dtype
    ) -> Tensor:
        compute = torch.promote_types(torch.promote_types(x.dtype, low_dtype), torch.float32)
        y = F.conv1d(
            x.to(compute),
            weight.to(compute),
            None if bias is None else bias.to(compute),
            padding=padding,
            groups=groups,
        )
        ctx.save_for_backward(x.to(low_dtype), weight.to(low_dtype))
        ctx.conf = (padding, groups, x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return y.to(low_dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        padding, groups, x_dtype, w_dtype, b_dtype = ctx.conf
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], b_dtype is not None and ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad.to(x.dtype),
            x,
            weight,
            None if b_dtype is None else [weight.size(0)],
            [1],
            [padding],
            [1],
            False,
            [0],
            groups,
            mask,
        )
        return (
            gx.to(x_dtype) if mask[0] else None,
            gw.to(w_dtype) if mask[1] else None,
            gb.to(b_dtype) if mask[2] else None,
            None,
            None,
            None,
        )


def conv1d_fp32_island(conv: nn.Conv1d, x: Tensor, backward_in_low: bool = True) -> Tensor:
    """``conv(x)`` under autocast computed as a float32 island: the forward in float32 and the result in
    the autocast dtype (what ``conv(x)`` returns there); the backward in the autocast dtype
    (``backward_in_low``, :class:`_Fp32ForwardConv1d`) or in float32. Stride 1, no dilation, zero padding
    (the positional convolution). Without autocast: ``conv(x)``."""
    device_type = x.device.type
    low = autocast_dtype(device_type)
    if low is None:
        return conv(x)
    with torch.autocast(device_type, enabled=False):
        weight = conv.weight  # weight norm's parametrisation, computed in float32
        padding = int(conv.padding[0])
        if backward_in_low:
            return _Fp32ForwardConv1d.apply(x, weight, conv.bias, padding, conv.groups, low)
        bias = None if conv.bias is None else conv.bias.float()
        return F.conv1d(x.float(), weight.float(), bias, padding=padding, groups=conv.groups).to(low)


class ConvPositionalEmbedding(nn.Module):
    """Convolutional relative positional embedding of wav2vec 2.0 / HuBERT.

    A grouped Conv1d with weight normalisation over the kernel axis (fairseq ``weight_norm(dim=2)``),
    "same" padding (the extra frame of an even kernel is dropped) and GELU.

    Args:
        embed_dim: model width.
        kernel_size: 128 in the BASE models.
        groups: 16 in the BASE models.
        precision: under autocast, ``"fp32_forward"`` (float32 forward, backward in the autocast dtype),
            ``"fp32"`` (both in float32) or ``"autocast"`` (the plain form); see
            :class:`s3prl_plugins.models.SSLModelConfig` ``pos_conv_precision``. A speed option, on
            :data:`s3prl_plugins.nn.frontends.FAST_PATH_DEVICES` only.
        fft: in CPU inference compute the convolution by FFT (:meth:`fft_conv`; equal up to float rounding).
            A speed option (``cpu_fast_path``).
    """

    def __init__(
        self,
        embed_dim: int,
        kernel_size: int = 128,
        groups: int = 16,
        precision: str = "fp32_forward",
        fft: bool = True,
    ):
        super().__init__()
        conv = nn.Conv1d(embed_dim, embed_dim, kernel_size, padding=kernel_size // 2, groups=groups)
        self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.num_remove = 1 if kernel_size % 2 == 0 else 0
        self.precision = precision
        self.fft = fft  # CPU inference: the convolution by FFT (fft_conv; a speed option)
        self._fft_weight: Optional[Tuple[tuple, Tensor]] = None  # (key, spectra), see fft_conv

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in POS_CONV_PRECISIONS:
            raise ValueError(f"pos_conv precision must be one of {list(POS_CONV_PRECISIONS)}, not {value!r}")
        self._precision = value

    def forward(self, x: Tensor) -> Tensor:
        """(batch, frames, dim) -> (batch, frames, dim)."""
        x = x.transpose(1, 2)
        if self.fft and cpu_inference(x, self):
            return F.gelu(self.fft_conv(x)).transpose(1, 2)
        if self._precision == "autocast" or not fast_path_on(x):
            x = self.conv(x)
        else:
            x = conv1d_fp32_island(self.conv, x, backward_in_low=self._precision == "fp32_forward")
        if self.num_remove:
            x = x[..., : -self.num_remove]
        return F.gelu(x).transpose(1, 2)

    def fft_conv(self, x: Tensor) -> Tensor:
        """The convolution (before GELU; the dropped frame already dropped) of (batch, dim, frames), computed
        by FFT (overlap-save): each block of ``n - kernel + 1`` output frames is the inverse FFT of the
        input block's spectrum times the conjugate spectra of the filters, summed over each group's input
        channels (one complex matrix product per frequency and group). Equal to :attr:`conv` up to float
        rounding, with 1/32 of its multiply-adds at kernel 128 (figures: bench/RESULTS.md). The filters'
        spectra are kept while the weights are unchanged (36 MiB at 768 channels)."""
        conv = self.conv
        batch, dim, frames = x.shape
        kernel, groups = conv.kernel_size[0], conv.groups
        n = 1 << (2 * kernel - 1).bit_length()  # 256 at kernel 128: the fastest of 256 / 512 / 1024
        step = n - kernel + 1
        spectra = self._filter_spectra(n, x.dtype)  # (groups, freqs, out, in) per group
        width = dim // groups
        blocks = -(-frames // step)
        left = kernel // 2
        padded = F.pad(x, (left, blocks * step + kernel - 1 - frames - left))
        spec = torch.fft.rfft(padded.unfold(2, n, step), n)  # (B, D, blocks, freqs)
        freqs = spec.size(-1)
        spec = spec.view(batch, groups, width, blocks, freqs).permute(1, 4, 2, 0, 3)
        out = spectra @ spec.reshape(groups, freqs, width, batch * blocks)  # (G, freqs, out, B * blocks)
        out = out.view(groups, freqs, width, batch, blocks).permute(3, 0, 2, 4, 1).reshape(batch, dim, blocks, freqs)
        y = torch.fft.irfft(out, n)[..., :step].reshape(batch, dim, blocks * step)[..., :frames]
        return y + conv.bias.to(y.dtype)[:, None]

    def _filter_spectra(self, n: int, dtype: torch.dtype) -> Tensor:
        """conj(rfft(filters, n)) as (groups, freqs, out, in) in the complex dtype of ``dtype``, cached
        while the parameters (their storage and version counters) are unchanged."""
        params = tuple(self.conv.parameters())
        key = (n, dtype) + tuple((p.data_ptr(), p._version) for p in params)
        if self._fft_weight is None or self._fft_weight[0] != key:
            weight = self.conv.weight.detach().double()  # (D, D / G, K) after weight normalisation
            dim, width, _ = weight.shape
            spectra = torch.fft.rfft(weight, n).conj()
            spectra = spectra.view(self.conv.groups, width, width, -1).permute(0, 3, 1, 2)
            complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
            self._fft_weight = (key, spectra.to(complex_dtype).contiguous())
        return self._fft_weight[1]


class RelativePositionBias(nn.Module):
    """WavLM's bucketed relative position bias (T5-style buckets, bidirectional).

    Args:
        num_heads: heads of the layer that owns the embedding.
        num_buckets: 320 in WavLM BASE.
        max_distance: 800 in WavLM BASE.
    """

    def __init__(self, num_heads: int, num_buckets: int = 320, max_distance: int = 800):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.rel_attn_embed = nn.Embedding(num_buckets, num_heads)

    def _bucket(self, relative: Tensor) -> Tensor:
        half = self.num_buckets // 2
        buckets = (relative > 0).long() * half
        relative = relative.abs()
        max_exact = half // 2
        is_small = relative < max_exact
        large = torch.log(relative.float().clamp(min=1) / max_exact) / math.log(self.max_distance / max_exact)
        large = (max_exact + large * (half - max_exact)).long().clamp(max=half - 1)
        return buckets + torch.where(is_small, relative, large)

    def forward(self, frames: int) -> Tensor:
        """Returns the (heads, frames, frames) bias."""
        pos = torch.arange(frames, device=self.rel_attn_embed.weight.device)
        relative = pos[None, :] - pos[:, None]
        return self.rel_attn_embed(self._bucket(relative)).permute(2, 0, 1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a per-layer head count, and heads whose attention map was replaced.

    A layer holds three kinds of heads, in this order along the value projection and the output
    projection's input: ``num_heads`` attention heads (queries, keys, values), ``identity_heads`` that
    output their values (the attention map replaced by the identity, Lin et al. 2024 §VI-D, eq. 10: the
    "skip-ahead" approach skips queries and keys), and ``conv_heads`` whose map is a 1-D convolution
    over time (one ``conv_kernel``-tap filter per head, shared by the head's value channels -- as an
    attention map weighs all of a head's channels alike; initialised to the centre tap, i.e. the
    identity, so a replacement starts where skip-ahead does).

    Args:
        embed_dim: model width.
        num_heads: attention heads in this layer (0 with no other heads leaves only the output bias: a
            fully pruned layer).
        head_dim: width of one head.
        dropout: dropout on attention probabilities (training only).
        gated_relative_position: add WavLM's gated relative position bias (gate computed from the
            layer input, Chen et al. 2022, "WavLM", eq. 4-5).
        relative_position_bias: this layer owns the bucket embedding (WavLM: the first layer only).
        num_buckets, max_distance: the bucket embedding's settings.
        identity_heads, conv_heads: heads replaced by the identity / a 1-D convolution.
        conv_kernel: taps of the convolution heads (odd).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        dropout: float = 0.0,
        gated_relative_position: bool = False,
        relative_position_bias: bool = False,
        num_buckets: int = 320,
        max_distance: int = 800,
        identity_heads: int = 0,
        conv_heads: int = 0,
        conv_kernel: int = 21,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.identity_heads = identity_heads
        self.conv_heads = conv_heads
        self.total_heads = num_heads + identity_heads + conv_heads
        self.head_dim = head_dim
        self.dropout = dropout
        inner = num_heads * head_dim
        if num_heads > 0:
            self.q_proj = nn.Linear(embed_dim, inner)
            self.k_proj = nn.Linear(embed_dim, inner)
        if self.total_heads > 0:
            self.v_proj = nn.Linear(embed_dim, self.total_heads * head_dim)
            self.out_proj = nn.Linear(self.total_heads * head_dim, embed_dim)
        else:
            self.out_bias = nn.Parameter(torch.zeros(embed_dim))
        if conv_heads > 0:
            self.head_conv = nn.Conv1d(
                conv_heads, conv_heads, conv_kernel, padding=conv_kernel // 2, groups=conv_heads, bias=False
            )
            with torch.no_grad():
                self.head_conv.weight.zero_()
                self.head_conv.weight[:, 0, conv_kernel // 2] = 1.0
        self.rel_pos = RelativePositionBias(num_heads, num_buckets, max_distance) if relative_position_bias else None
        self.gated = gated_relative_position
        if gated_relative_position:
            if inner != embed_dim:
                raise ValueError("WavLM's gated relative position needs heads * head_dim == embed_dim")
            self.gru_rel_pos_linear = nn.Linear(head_dim, 8)
            self.gru_rel_pos_const = nn.Parameter(torch.ones(1, num_heads, 1, 1))
        # (batch, total_heads) multiplier of each head's output J_h, set only while head importance is
        # computed (s3prl_plugins.compress.scores.head_gradient_scores: dL/d gate = <dL/dJ_h, J_h>) or heads
        # are learned away (the dp step's HardConcrete gates, s3prl_plugins.compress.dp)
        self.head_gate: Optional[Tensor] = None
        # a scalar multiplier of the whole output (bias included): the dp step's gate of the attention sublayer
        self.output_gate: Optional[Tensor] = None

    def _gated_bias(self, x: Tensor, position_bias: Tensor) -> Tensor:
        batch, frames, _ = x.shape
        gate_in = x.view(batch, frames, self.num_heads, self.head_dim).transpose(1, 2)
        proj = self.gru_rel_pos_linear(gate_in).view(batch, self.num_heads, frames, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(proj).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # (B, H, T, 1)
        return gate * position_bias.unsqueeze(0)

    def _heads(self, t: Tensor, n: int) -> Tensor:
        batch, frames, _ = t.shape
        return t.view(batch, frames, n, self.head_dim).transpose(1, 2)

    def _bias(self, x: Tensor, key_padding_mask: Optional[Tensor], position_bias: Optional[Tensor]) -> Optional[Tensor]:
        batch, frames, _ = x.shape
        bias: Optional[Tensor] = None
        if key_padding_mask is not None:
            bias = torch.zeros(batch, 1, 1, frames, dtype=x.dtype, device=x.device)
            bias = bias.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        if self.gated and position_bias is not None:
            gated = self._gated_bias(x, position_bias)
            bias = gated if bias is None else bias + gated
        return bias

    def head_attention(
        self, x: Tensor, key_padding_mask: Optional[Tensor] = None, position_bias: Optional[Tensor] = None
    ):
        """Yield each attention head's map (batch, frames, frames), one at a time (a (B, H, T, T) tensor of
        every head is never built). ``position_bias`` is what the layer received (WavLM: from layer 1)."""
        if self.num_heads == 0:
            return
        if self.rel_pos is not None:
            position_bias = self.rel_pos(x.size(1))
        bias = self._bias(x, key_padding_mask, position_bias)
        q, k = self._heads(self.q_proj(x), self.num_heads), self._heads(self.k_proj(x), self.num_heads)
        scale = 1.0 / math.sqrt(self.head_dim)
        for h in range(self.num_heads):
            scores = torch.matmul(q[:, h] * scale, k[:, h].transpose(1, 2))
            if bias is not None:
                scores = scores + (bias[:, 0] if bias.size(1) == 1 else bias[:, h])
            yield torch.softmax(scores, dim=-1)

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        position_bias: Optional[Tensor] = None,
        need_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """Args:
            x: (batch, frames, embed_dim).
            key_padding_mask: (batch, frames), True on padded frames.
            position_bias: (heads, frames, frames) bucket bias from an earlier layer (WavLM).
            need_weights: also return the attention heads' averaged map.

        Returns:
            output (batch, frames, embed_dim); the head-averaged attention (batch, frames, frames) or
            None; the position bias for the next layer (or None).
        """
        batch, frames, _ = x.shape
        if self.rel_pos is not None:
            position_bias = self.rel_pos(frames)
        if self.total_heads == 0:
            # a sum, not a view: a no-grad view of a parameter trips torch's module hooks (FlopCounterMode)
            out = x.new_zeros(batch, frames, self.out_bias.numel()) + self.out_bias
            avg = x.new_zeros(batch, frames, frames) if need_weights else None
            return self._gated(out), avg, position_bias

        v = self._heads(self.v_proj(x), self.total_heads)
        parts = []
        avg: Optional[Tensor] = None
        if self.num_heads:
            va = v[:, : self.num_heads]
            p_drop = self.dropout if self.training else 0.0
            if not need_weights:
                bias = self._bias(x, key_padding_mask, position_bias)
                q, k = self._heads(self.q_proj(x), self.num_heads), self._heads(self.k_proj(x), self.num_heads)
                parts.append(sdpa(q, k, va, bias, p_drop))
            else:
                outs = []
                avg = x.new_zeros(batch, frames, frames)
                for h, probs in enumerate(self.head_attention(x, key_padding_mask, position_bias)):
                    avg = avg + probs
                    outs.append(torch.matmul(F.dropout(probs, p_drop, self.training), va[:, h]))
                parts.append(torch.stack(outs, dim=1))
                avg = avg / self.num_heads
        elif need_weights:
            avg = x.new_zeros(batch, frames, frames)
        if self.identity_heads:  # eq. 10: softmax(QK^T / sqrt(d)) ~ I, the head outputs V
            parts.append(v[:, self.num_heads : self.num_heads + self.identity_heads])
        if self.conv_heads:
            vc = v[:, self.num_heads + self.identity_heads :]  # (B, C, T, d)
            if key_padding_mask is not None:  # padded frames are no keys of the attention either
                vc = vc.masked_fill(key_padding_mask[:, None, :, None], 0.0)
            flat = vc.permute(0, 3, 1, 2).reshape(batch * self.head_dim, self.conv_heads, frames)
            conv = self.head_conv(flat).view(batch, self.head_dim, self.conv_heads, frames).permute(0, 2, 3, 1)
            parts.append(conv)
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # (B, H_total, T, d): J_h per head
        if self.head_gate is not None:
            out = out * self.head_gate[:, :, None, None].to(out.dtype)
        out = out.transpose(1, 2).reshape(batch, frames, self.total_heads * self.head_dim)
        return self._gated(self.out_proj(out)), avg, position_bias

    def _gated(self, out: Tensor) -> Tensor:
        return out if self.output_gate is None else out * self.output_gate.to(out.dtype)


def sdpa(q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], dropout_p: float) -> Tensor:
    """``F.scaled_dot_product_attention`` arranged so that a GPU can use a fused kernel.

    Under autocast q/k/v are bf16/fp16 while the residual stream, and so the padding bias, is fp32: the
    bias is cast to q's dtype. PyTorch's fused kernels that take a mask (memory-efficient, cuDNN) need
    a head size that is a multiple of 8 in half precision; STaRHuBERT's is 36 (432 / 12), and the math
    kernel it would fall back to materialises (B, H, T, T) scores (3.0 GB instead of 52 MB for one
    layer's fwd+bwd at 4 x 2000 frames on an H100, measured). There q, k and v are zero-padded to the
    next multiple of 8 with the original scale (zeros add nothing to q.k; the extra output columns are
    dropped), which is exact.
    """
    if bias is not None and bias.dtype != q.dtype:
        bias = bias.to(q.dtype)
    head_dim = q.size(-1)
    if bias is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and head_dim % 8:
        return padded_sdpa(q, k, v, bias, dropout_p, 8)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)


def padded_sdpa(q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor], dropout_p: float, multiple: int) -> Tensor:
    """SDPA with the head size zero-padded to a multiple of ``multiple`` (see :func:`sdpa`)."""
    head_dim = q.size(-1)
    pad = (0, -head_dim % multiple)
    out = F.scaled_dot_product_attention(
        F.pad(q, pad), F.pad(k, pad), F.pad(v, pad), attn_mask=bias, dropout_p=dropout_p, scale=head_dim**-0.5
    )
    return out[..., :head_dim]


class FeedForward(nn.Module):
    """Position-wise FFN ``fc2(dropout(gelu(fc1(x))))`` with a per-layer width (0: only fc2's bias).

    ``unit_gate`` ((ffn_dim,), multiplies the hidden units) and ``output_gate`` (a scalar, multiplies the whole
    output, bias included) are None except while a pruning method learns which units go (the dp step's
    HardConcrete gates, :mod:`s3prl_plugins.compress.dp`)."""

    def __init__(self, embed_dim: int, ffn_dim: int, activation_dropout: float = 0.0):
        super().__init__()
        self.unit_gate: Optional[Tensor] = None
        self.output_gate: Optional[Tensor] = None
        self.ffn_dim = ffn_dim
        if ffn_dim > 0:
            self.fc1 = nn.Linear(embed_dim, ffn_dim)
            self.fc2 = nn.Linear(ffn_dim, embed_dim)
        else:
            self.out_bias = nn.Parameter(torch.zeros(embed_dim))
        self.activation_dropout = nn.Dropout(activation_dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.ffn_dim == 0:
            out = torch.zeros_like(x) + self.out_bias  # a sum, not a view (see SelfAttention.forward)
        else:
            h = gelu(self.fc1(x))
            if self.unit_gate is not None:
                h = h * self.unit_gate.to(h.dtype)
            out = self.fc2(self.activation_dropout(h))
        return out if self.output_gate is None else out * self.output_gate.to(out.dtype)


class EncoderLayer(nn.Module):
    """One transformer layer, post-LN (HuBERT/wav2vec 2.0/WavLM BASE) or pre-LN (``layer_norm_first``).

    Post-LN: ``x = LN(x + Drop(Attn(x))); x = LN(x + Drop(FFN(x)))``.
    Pre-LN: ``x = x + Drop(Attn(LN(x))); x = x + Drop(FFN(LN(x)))``.
    """

    def __init__(
        self,
        attention: SelfAttention,
        feed_forward: FeedForward,
        dropout: float = 0.1,
        layer_norm_first: bool = False,
    ):
        super().__init__()
        embed_dim = attention.embed_dim
        self.attention = attention  # built by the caller, as torchaudio's EncoderLayer takes it
        self.attention_layer_norm = nn.LayerNorm(embed_dim)
        self.feed_forward = feed_forward
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm_first = layer_norm_first

    def forward(
        self,
        x: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        position_bias: Optional[Tensor] = None,
        need_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        residual = x
        if self.layer_norm_first:
            x = self.attention_layer_norm(x)
        x, attn, position_bias = self.attention(x, key_padding_mask, position_bias, need_weights)
        x = residual + self.dropout(x)
        if not self.layer_norm_first:
            x = self.attention_layer_norm(x)
        residual = x
        if self.layer_norm_first:
            x = self.final_layer_norm(x)
        x = residual + self.dropout(self.feed_forward(x))
        if not self.layer_norm_first:
            x = self.final_layer_norm(x)
        return x, attn, position_bias


class Encoder(nn.Module):
    """Positional convolution, layer norm and a stack of :class:`EncoderLayer`.

    Args:
        embed_dim: model width.
        num_heads: heads per layer.
        head_dim: width of one head.
        ffn_dims: FFN width per layer.
        pos_conv_kernel: kernel of the positional convolution (0: none).
        pos_conv_groups: its groups.
        layer_norm_first: pre-LN layers (the encoder's layer norm then comes last).
        gated_relative_position: WavLM's relative position bias (owned by the first layer).
        identity_heads, conv_heads: per layer, heads replaced by the identity / a 1-D convolution
            (:class:`SelfAttention`); None: none.
        conv_kernel: taps of the convolution heads.
        pos_conv_precision: see :class:`ConvPositionalEmbedding`.
        pos_conv_fft: see :class:`ConvPositionalEmbedding` ``fft``.
        cpu_bf16: in CPU inference (:func:`~s3prl_plugins.nn.frontends.cpu_inference`, no gradient recorded, no
            attention maps asked for) run the layers under bfloat16 autocast on a CPU that has bf16 arithmetic
            (:func:`cpu_bf16_supported`): ``"auto"``
            where the width is at least :attr:`BF16_MIN_WIDTH`, ``"on"`` at any width, ``"off"`` never.
            The positional convolution, the residual stream's input and the returned states stay
            float32. A speed option (figures: bench/RESULTS.md, ``bench_inference.py``).
    """

    # The narrowest width "auto" runs in bf16: measured on a 2-core Xeon with AMX (2 threads, 10 s, the whole
    # model with its layers under bf16 autocast against float32): width 768 (HuBERT BASE) 1.54x, 432 (STaRHuBERT)
    # 1.29x, 256 (12 layers) 1.09x, 96 (12 layers; the mini recipe's students are 96 wide) 0.99x -- too small a
    # product for the conversions to pay.
    BF16_MIN_WIDTH = 256

    def __init__(
        self,
        embed_dim: int,
        num_heads: Sequence[int],
        head_dim: int,
        ffn_dims: Sequence[int],
        pos_conv_kernel: int = 128,
        pos_conv_groups: int = 16,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.0,
        layer_norm_first: bool = False,
        gated_relative_position: bool = False,
        num_buckets: int = 320,
        max_distance: int = 800,
        identity_heads: Optional[Sequence[int]] = None,
        conv_heads: Optional[Sequence[int]] = None,
        conv_kernel: int = 21,
        pos_conv_precision: str = "fp32_forward",
        pos_conv_fft: bool = True,
        cpu_bf16: str = "auto",
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.cpu_bf16 = cpu_bf16
        if len(num_heads) != len(ffn_dims):
            raise ValueError(f"{len(num_heads)} head counts for {len(ffn_dims)} FFN widths")
        identity_heads = list(identity_heads or [0] * len(num_heads))
        conv_heads = list(conv_heads or [0] * len(num_heads))
        self.pos_conv = (
            ConvPositionalEmbedding(embed_dim, pos_conv_kernel, pos_conv_groups, pos_conv_precision, pos_conv_fft)
            if pos_conv_kernel
            else None
        )
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm_first = layer_norm_first
        self.layers = nn.ModuleList(
            EncoderLayer(
                SelfAttention(
                    embed_dim,
                    h,
                    head_dim,
                    attention_dropout,
                    gated_relative_position=gated_relative_position,
                    relative_position_bias=gated_relative_position and i == 0,
                    num_buckets=num_buckets,
                    max_distance=max_distance,
                    identity_heads=identity_heads[i],
                    conv_heads=conv_heads[i],
                    conv_kernel=conv_kernel,
                ),
                FeedForward(embed_dim, f, activation_dropout),
                dropout=dropout,
                layer_norm_first=layer_norm_first,
            )
            for i, (h, f) in enumerate(zip(num_heads, ffn_dims))
        )

    def forward(
        self,
        x: Tensor,
        padding_mask: Optional[Tensor] = None,
        need_weights: bool = False,
        num_layers: Optional[int] = None,
    ) -> Tuple[List[Tensor], List[Tensor]]:
        """Args:
            x: (batch, frames, embed_dim) projected features.
            padding_mask: (batch, frames), True on padded frames.
            need_weights: also return each layer's head-averaged attention map.
            num_layers: run only the first ``num_layers`` layers.

        Returns:
            hidden states [input of layer 1, ..., output of the last layer run] each (batch, frames, dim)
            (for pre-LN the last one is after the final layer norm), and the attention maps
            (batch, frames, frames) of each layer run (empty unless ``need_weights``).
        """
        if padding_mask is not None and not bool(padding_mask.any()):
            padding_mask = None  # nothing padded: no attention mask, so SDPA may use its flash kernel
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        if self.pos_conv is not None:
            x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        states = [x]
        attns: List[Tensor] = []
        position_bias = None
        layers = self.layers if num_layers is None else self.layers[:num_layers]
        bf16 = not need_weights and self.bf16_inference(x)  # attention maps (STaR's targets) stay float32
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            for layer in layers:
                x, attn, position_bias = layer(x, padding_mask, position_bias, need_weights)
                states.append(x)
                if attn is not None:
                    attns.append(attn)
        if bf16:  # the states as float32 ever returns them
            states = [h.to(states[0].dtype) for h in states]
            attns = [a.to(states[0].dtype) for a in attns]
        if self.layer_norm_first:
            states[-1] = self.layer_norm(states[-1])
        return states, attns

    @property
    def cpu_bf16(self) -> str:
        return self._cpu_bf16

    @cpu_bf16.setter
    def cpu_bf16(self, value: str) -> None:
        if value not in CPU_BF16:
            raise ValueError(f"cpu_bf16 must be one of {list(CPU_BF16)}, not {value!r}")
        self._cpu_bf16 = value

    def bf16_inference(self, x: Tensor) -> bool:
        """Whether the layers run under bf16 autocast here (:attr:`cpu_bf16`): CPU inference with no gradient
        recorded at all (a backward pass through anything -- e.g. the head gates of gradient-based pruning
        scores -- keeps float32); ``"on"`` on a CPU without bf16 arithmetic says so once and runs float32
        (emulated bf16 would be slower)."""
        if self._cpu_bf16 == "off" or x.dtype != torch.float32 or torch.is_grad_enabled():
            return False
        if not cpu_inference(x, self):
            return False
        if self._cpu_bf16 == "auto" and self.embed_dim < self.BF16_MIN_WIDTH:
            return False
        if not cpu_bf16_supported():
            if self._cpu_bf16 == "on":
                _warn_no_bf16()
            return False
        return True


@functools.lru_cache(maxsize=None)
def _warn_no_bf16() -> None:
    logger.warning(
        "cpu_bf16='on': this CPU reports no bfloat16 arithmetic (AVX512-BF16 / AMX-BF16), where bf16 would be "
        "slower than float32: the layers run in float32"
    )
