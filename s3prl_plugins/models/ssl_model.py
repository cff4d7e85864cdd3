"""SSLModel: front-end -> feature projection -> transformer encoder (+ optional prediction head)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from s3prl_plugins.models.config import SPEED_OPTIONS, SSLModelConfig
from s3prl_plugins.models.heads import build_head
from s3prl_plugins.nn import ConvFeatureExtractor, Encoder, LogMelFrontend
from s3prl_plugins.nn.frontends import kept_layer_norm
from s3prl_plugins.nn.subsampling import Subsampled, Upsampler, build_subsampler


class InputError(ValueError):
    """Audio that a model cannot take (empty, too short, stereo, non-finite)."""


@dataclass
class SSLOutput:
    """What every model returns.

    Attributes:
        hidden_states: ``num_layers + 1`` tensors (batch, frames, dim): the input of the first
            transformer layer (front-end features after projection, positional convolution and layer
            norm) as layer 0, then the output of every layer. Padded frames hold unspecified values.
        lengths: (batch,) valid frames.
        padding_mask: (batch, frames), True on padded frames.
        attentions: head-averaged attention maps (batch, frames, frames) per layer, if asked.
        features: projected front-end features (batch, frames, dim), before the positional convolution.
        subsampled: with sequence subsampling (``config.subsampling``), what the subsampler returned:
            the encoder's frames per utterance (``subsampled.lengths`` = ``lengths``) and, for
            variable-length subsampling, α (batch, front-end frames).
        frontend_lengths: (batch,) front-end frames before subsampling (= ``lengths`` without).
        upsampled: with ``upsample=True`` (Meng et al. 2022 Fig. 1a), the last layer's output back at
            the front-end's frame rate through the learned upsampler (batch, front-end frames, dim).
    """

    hidden_states: List[Tensor]
    lengths: Tensor
    padding_mask: Tensor
    attentions: List[Tensor] = field(default_factory=list)
    features: Optional[Tensor] = None
    subsampled: Optional[Subsampled] = None
    frontend_lengths: Optional[Tensor] = None
    upsampled: Optional[Tensor] = None


def lengths_to_padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(batch,) lengths -> (batch, max_len) bool mask, True on padded positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class SSLModel(nn.Module):
    """A HuBERT-family model built from :class:`SSLModelConfig`.

    Args:
        config: the architecture.
    """

    def __init__(self, config: SSLModelConfig):
        super().__init__()
        self.config = config
        if config.frontend == "conv":
            self.frontend: nn.Module = ConvFeatureExtractor(
                config.conv_layers,
                config.conv_norm,
                config.conv_bias,
                config.conv_dropout,
                config.fast_conv_norm,
                config.cpu_fast_path,
            )
        else:
            self.frontend = LogMelFrontend(
                config.n_mels,
                config.frame_length_ms,
                config.frame_shift_ms,
                config.stack_frames,
                batched=config.batched_fbank,
            )
        dim = config.frontend_dim
        self.feature_layer_norm = nn.LayerNorm(dim) if config.feature_layer_norm else None
        self.feature_projection = nn.Linear(dim, config.embed_dim) if config.has_projection else None
        if not config.has_projection and dim != config.embed_dim:
            raise ValueError(f"front-end width {dim} != embed_dim {config.embed_dim} and no projection")
        self.feature_dropout = nn.Dropout(config.dropout)
        self.mask_emb = nn.Parameter(torch.empty(config.embed_dim).uniform_()) if config.mask_embedding else None
        self.encoder = Encoder(
            config.embed_dim,
            config.num_heads,
            config.head_dim,
            config.ffn_dims,
            pos_conv_kernel=config.pos_conv_kernel,
            pos_conv_groups=config.pos_conv_groups,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            activation_dropout=config.activation_dropout,
            layer_norm_first=config.layer_norm_first,
            gated_relative_position=config.gated_relative_position,
            num_buckets=config.num_buckets,
            max_distance=config.max_distance,
            identity_heads=config.identity_heads,
            conv_heads=config.conv_heads,
            conv_kernel=config.head_conv_kernel,
            pos_conv_precision=config.pos_conv_precision,
            pos_conv_fft=config.cpu_fast_path,
            cpu_bf16=config.cpu_bf16,
        )
        self.head = build_head(config.embed_dim, config.head) if config.head else None
        spec = config.subsampling or {}
        self.subsampler = build_subsampler(config.subsampling, dim)
        self.upsampler = (
            Upsampler(spec["upsample"], int(spec.get("stride", 1)), config.embed_dim) if spec.get("upsample") else None
        )

    @property
    def downsample_rate(self) -> int:
        return self.config.downsample_rate

    def set_speed_options(self, **options) -> "SSLModel":
        """Switch speed options (``pos_conv_precision``, ``fast_conv_norm``, ``batched_fbank``, ``cpu_fast_path``,
        ``cpu_bf16``; see :class:`SSLModelConfig`) on a built model, in place; the config records them. The weights
        are untouched. Returns self."""
        unknown = sorted(set(options) - set(SPEED_OPTIONS))
        if unknown:
            raise ValueError(f"unknown speed option(s) {unknown}; known: {sorted(SPEED_OPTIONS)}")
        config = dataclasses.replace(self.config, **options)  # validated in __post_init__
        self.encoder.cpu_bf16 = config.cpu_bf16
        if self.encoder.pos_conv is not None:
            self.encoder.pos_conv.precision = config.pos_conv_precision
            self.encoder.pos_conv.fft = bool(config.cpu_fast_path)
        if isinstance(self.frontend, ConvFeatureExtractor):
            for layer in self.frontend.conv_layers:
                layer.fast_norm = bool(config.fast_conv_norm)
            self.frontend.chunked = bool(config.cpu_fast_path)
        else:
            self.frontend.batched = bool(config.batched_fbank)
        self.config = config
        return self

    @property
    def min_samples(self) -> int:
        """The fewest samples that give one output frame."""
        fe = self.frontend
        if isinstance(fe, LogMelFrontend):
            return fe.window
        return fe.receptive_field

    def check_input(self, waveforms: Tensor, lengths: Optional[Tensor]) -> None:
        """Raise :class:`InputError` for input the model cannot take."""
        if waveforms.dim() != 2:
            raise InputError(
                f"expected mono waveforms of shape (batch, samples), got {tuple(waveforms.shape)}; "
                "mix stereo down to one channel first (e.g. s3prl_plugins.data.audio.load_audio does)"
            )
        if waveforms.size(0) == 0:
            raise InputError("empty batch")
        n = lengths if lengths is not None else torch.full((waveforms.size(0),), waveforms.size(1))
        short = (n < self.min_samples).nonzero().flatten().tolist()
        if short:
            raise InputError(
                f"utterance(s) {short} have {[int(n[i]) for i in short]} samples, fewer than the "
                f"{self.min_samples} ({self.min_samples / 16000 * 1000:.1f} ms at 16 kHz) this model needs "
                "for one frame: drop or pad them"
            )
        if lengths is not None and int(lengths.max()) > waveforms.size(1):
            raise InputError(f"a length {int(lengths.max())} exceeds the padded size {waveforms.size(1)}")

    def extract_features(
        self,
        waveforms: Tensor,
        lengths: Optional[Tensor] = None,
        alpha: Optional[Tensor] = None,
        segment_ids: Optional[Tensor] = None,
    ):
        """Front-end (+ sequence subsampling) + layer norm + projection: (features (B, T, D), lengths (B,));
        :meth:`forward` also returns α and the front-end's lengths."""
        x, n, _, _ = self._frontend(waveforms, lengths, alpha, segment_ids)
        return self.project(x, n)

    def _frontend(
        self, waveforms: Tensor, lengths: Optional[Tensor], alpha: Optional[Tensor], segment_ids: Optional[Tensor]
    ):
        """(features, their lengths, the :class:`Subsampled` result or None, the front-end's lengths)."""
        self.check_input(waveforms, lengths)
        if self.config.normalize_waveform:
            waveforms = _normalize(waveforms, lengths)
        x, frame_lengths = self.frontend(waveforms, lengths)
        if self.config.feature_grad_mult != 1.0 and x.requires_grad:
            x = _GradMultiply.apply(x, self.config.feature_grad_mult)
        if frame_lengths is None:
            frame_lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long, device=x.device)
        if self.subsampler is None:
            if alpha is not None or segment_ids is not None:
                raise ValueError(
                    "alpha / segment_ids given to a model without sequence subsampling (config.subsampling)"
                )
            return x, frame_lengths, None, frame_lengths
        sub = self.subsampler(x, frame_lengths, alpha=alpha, segment_ids=segment_ids)
        return sub.x, sub.lengths, sub, frame_lengths

    def project(self, x: Tensor, frame_lengths: Optional[Tensor] = None):
        """Front-end output (B, T, C) -> projected features (B, T, D) and (B,) frames."""
        if frame_lengths is None:
            frame_lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long, device=x.device)
        if self.feature_layer_norm is not None:
            keep = self.frontend.output_keep if isinstance(self.frontend, ConvFeatureExtractor) else None
            x = kept_layer_norm(x, self.feature_layer_norm, keep)  # gated CNN channels outside its statistics
        if self.feature_projection is not None:
            x = self.feature_projection(x)
        return self.feature_dropout(x), frame_lengths

    def forward(
        self,
        waveforms: Tensor,
        lengths: Optional[Tensor] = None,
        need_attention: bool = False,
        num_layers: Optional[int] = None,
        frame_mask: Optional[Tensor] = None,
        alpha: Optional[Tensor] = None,
        segment_ids: Optional[Tensor] = None,
        upsample: bool = False,
    ) -> SSLOutput:
        """Args:
            waveforms: (batch, samples) zero-padded 16 kHz audio.
            lengths: (batch,) valid samples (None: nothing padded).
            need_attention: also return head-averaged attention maps.
            num_layers: run only the first layers (MelHuBERT's first-k baseline, teachers' early exit).
            frame_mask: (batch, frames) True where the mask embedding replaces the features
                (masked prediction; needs ``mask_embedding``).
            alpha: variable-length subsampling: use this α (batch, front-end frames) instead of the CIF
                module's.
            segment_ids: the ``segments`` subsampling type (the forced-alignment topline): per-frame
                segment labels (batch, front-end frames) to average over.
            upsample: also run the upsampler (``subsampling.upsample``) on the last layer -- a training
                head like the prediction heads: downstream models take the subsampled states (Meng et al.
                2022 §1, "we directly use the subsampled representation in downstream"; Table 2 counts
                its parameters but not its MACs).

        Returns:
            :class:`SSLOutput`.
        """
        x, frame_lengths, sub, frontend_lengths = self._frontend(waveforms, lengths, alpha, segment_ids)
        x, frame_lengths = self.project(x, frame_lengths)
        padded = lengths is not None or (sub is not None and sub.alpha is not None)
        out = self.encode(x, frame_lengths if padded else None, need_attention, num_layers, frame_mask)
        out.subsampled = sub
        out.frontend_lengths = frontend_lengths
        if upsample:
            if self.upsampler is None:
                raise ValueError("upsample=True but the model has no upsampler (subsampling.upsample)")
            out.upsampled = self.upsampler(out.hidden_states[-1], sub.frames)
        return out

    def to_frontend_rate(self, states: Tensor, out: SSLOutput) -> Tensor:
        """Encoder-rate states (batch, frames, dim) of ``out`` back at the front-end's frame rate (fixed:
        repetition; variable: each frame takes its segment's vector). Without subsampling: unchanged."""
        if self.subsampler is None:
            return states
        return self.subsampler.expand(states, out.subsampled, out.subsampled.frames, out.frontend_lengths)

    def encode(
        self,
        x: Tensor,
        frame_lengths: Optional[Tensor] = None,
        need_attention: bool = False,
        num_layers: Optional[int] = None,
        frame_mask: Optional[Tensor] = None,
    ) -> SSLOutput:
        """Run the transformer on projected features (batch, frames, dim); see :meth:`forward`."""
        padded = frame_lengths is not None
        if frame_lengths is None:
            frame_lengths = torch.full((x.size(0),), x.size(1), dtype=torch.long, device=x.device)
        padding_mask = lengths_to_padding_mask(frame_lengths, x.size(1))
        features = x
        if frame_mask is not None:
            if self.mask_emb is None:
                raise ValueError("frame_mask given but the model has no mask embedding (mask_embedding=False)")
            x = torch.where(frame_mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)
        states, attns = self.encoder(
            x, padding_mask if padded else None, need_weights=need_attention, num_layers=num_layers
        )
        return SSLOutput(states, frame_lengths, padding_mask, attns, features)


class _GradMultiply(torch.autograd.Function):
    """Identity forward; the gradient is scaled by ``scale`` (fairseq's ``feature_grad_mult``)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def _normalize(waveforms: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """Per-utterance zero-mean unit-variance over the valid samples (fairseq ``normalize=True``)."""
    if lengths is None:
        return F.layer_norm(waveforms, waveforms.shape[-1:])
    out = torch.zeros_like(waveforms)
    for i, n in enumerate(lengths.tolist()):
        out[i, :n] = F.layer_norm(waveforms[i, :n], (n,))
    return out


def pad_waveforms(wavs: Sequence[Tensor]):
    """List of 1-D waveforms -> ((batch, samples) zero-padded, (batch,) lengths)."""
    lengths = torch.tensor([w.numel() for w in wavs], dtype=torch.long, device=wavs[0].device)
    return torch.nn.utils.rnn.pad_sequence(list(wavs), batch_first=True), lengths


# The transformer's linear layers (what weight pruning prunes, and what a sparse kernel would skip)
TRANSFORMER_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def transformer_linears(model: nn.Module) -> Dict[str, nn.Linear]:
    """Every linear layer of the encoder's layers (``encoder.layers.*``: q/k/v/out, fc1, fc2), by module name."""
    return {
        name: m
        for name, m in model.named_modules()
        if name.startswith("encoder.layers.")
        and isinstance(m, nn.Linear)
        and name.rsplit(".", 1)[-1] in TRANSFORMER_LINEARS
    }


def zero_weight_macs_per_frame(model: nn.Module) -> int:
    """Multiply-accumulates per encoder frame that the zero weights of the transformer's linear layers
    would save in a sparse kernel (the "theoretical" MACs: dense MACs minus this times the frames)."""
    return sum(int((m.weight == 0).sum()) for m in transformer_linears(model).values())


def count_parameters(module: Union[nn.Module, SSLModel], include_head: bool = True) -> int:
    """Parameters of a model; ``include_head=False`` leaves out the prediction head and mask embedding."""
    total = 0
    for name, p in module.named_parameters():
        if not include_head and (name.startswith("head.") or name == "mask_emb"):
            continue
        total += p.numel()
    return total
