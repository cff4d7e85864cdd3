"""Front-ends that turn 16 kHz waveforms into frame sequences.

* :class:`ConvFeatureExtractor` -- the wav2vec 2.0 / HuBERT waveform CNN, described layer by layer
  with ``(channels, kernel, stride)`` specs so that narrower students (e.g. STaRHuBERT's CNN) are
  expressed by config alone.
* :class:`LogMelFrontend` -- MelHuBERT's input (Lin et al., "Compressing Transformer-based
  self-supervised models for speech processing", §II-A / §IV-A): Kaldi log-Mel filterbanks (40 bins,
  25 ms window, 10 ms shift), optionally stacking 2 frames into one 20 ms frame, with dataset-level
  mean/std normalisation.
"""

from __future__ import annotations

import contextlib
import functools
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ConvSpec = Tuple[int, int, int]


def gelu(x: Tensor) -> Tensor:
    """GELU; in place when no gradient is tracked, which spares allocating (and page-faulting) a second
    buffer of the CNN's largest activations (64 MB per 10 s in HuBERT's first layer)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return F.gelu(x)
    return torch.ops.aten.gelu_(x)


# Device types on which the speed options (SSLModelConfig: pos_conv_precision, fast_conv_norm, batched_fbank)
# take effect. They target the GPU's costs (cuDNN's slow bf16 grouped convolution, float32 copies of
# memory-bound activations, kernel launches per utterance); on a 2-core CPU they were slower than the plain
# forms (2026-12, PyTorch 2.8: the fused GroupNorm ~2.6x, the batched filterbanks ~1.5x at 8 x 10 s, the
# bf16-autocast float32 island ~1.4x), so the CPU -- and the meta device of MAC counting -- runs the plain forms.
FAST_PATH_DEVICES = {"cuda"}


def fast_path_on(x: Tensor) -> bool:
    """Whether the speed options apply to a tensor on this device (:data:`FAST_PATH_DEVICES`)."""
    return x.device.type in FAST_PATH_DEVICES


def cpu_inference(x: Tensor, module: nn.Module) -> bool:
    """Whether ``module`` runs inference on the CPU here: a CPU tensor, no gradient, eval mode, no autocast,
    and not inside an ONNX export, a trace or ``torch.compile`` (their graphs must hold the plain ops).
    The CPU inference fast paths (:meth:`ConvFeatureExtractor.forward` with ``chunked``) run only then."""
    if x.device.type != "cpu" or module.training or torch.is_grad_enabled() and x.requires_grad:
        return False
    if torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()):
        return False
    if autocast_dtype("cpu") is not None or torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    return not (torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())


@functools.lru_cache(maxsize=None)
def cpu_bf16_supported() -> bool:
    """Whether this CPU has native bfloat16 arithmetic: AVX512-BF16 or AMX (``torch.cpu``'s own queries).
    Not ``torch.ops.mkldnn._is_mkldnn_bf16_supported``: that is also true on any AVX-512 CPU, where oneDNN
    emulates bf16 -- slower than float32."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch without the queries
        return False


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast computes in on this device type, or None when autocast is off there (or the
    device has no autocast: the meta device of MAC counting)."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except RuntimeError:  # "unknown device type for autocast"
        pass
    return None


def channel_group_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """``nn.GroupNorm(C, C)`` (one group per channel: statistics over time) of (batch, C, frames), computed
    as a layer norm over the frame axis (fused statistics: one kernel reads the activations for the mean
    and variance of every (utterance, channel) row) and the per-channel affine in one ``addcmul``.

    Equal to ``F.group_norm(x, C, weight, bias, eps)`` (biased variance, ``eps`` inside the root). Under
    autocast ``group_norm`` would run in float32 -- a float32 copy of HuBERT's largest activations and a
    float32 output (the first CNN layer is memory-bound); here the statistics are accumulated in float32
    by the layer-norm kernel while the activations stay in the autocast dtype, which is what the next
    convolution reads anyway.
    """
    device_type = x.device.type
    dtype = autocast_dtype(device_type)
    if dtype is not None:
        with torch.autocast(device_type, enabled=False):
            return channel_group_norm(x.to(dtype), weight, bias, eps)
    y = F.layer_norm(x, x.shape[-1:], eps=eps)
    return torch.addcmul(bias.to(y.dtype)[:, None], y, weight.to(y.dtype)[:, None])


def conv_output_lengths(lengths: Tensor, specs: Sequence[ConvSpec]) -> Tensor:
    """Number of frames each CNN layer leaves, for inputs of ``lengths`` samples.

    ``floor((L - kernel) / stride) + 1`` per layer (no padding), clamped at 0.

    Args:
        lengths: (batch,) integer tensor of valid samples.
        specs: the ``(channels, kernel, stride)`` of every layer.

    Returns:
        (batch,) integer tensor of valid frames.
    """
    out = lengths.clone()
    for _, kernel, stride in specs:
        out = torch.div(out - kernel, stride, rounding_mode="floor") + 1
        out = out.clamp(min=0)
    return out


def receptive_field(specs: Sequence[ConvSpec]) -> int:
    """Smallest number of samples that yields one output frame."""
    field = 1
    for _, kernel, stride in reversed(list(specs)):
        field = (field - 1) * stride + kernel
    return field


def kept_layer_norm(x: Tensor, norm: nn.LayerNorm, keep: Optional[Tensor]) -> Tensor:
    """``norm`` (a LayerNorm over the last axis) of ``x`` with its statistics over the channels ``keep``
    (bool, (channels,)) only; the others come out 0. With ``keep`` None: ``norm(x)``.

    What a model whose channels are gated to 0 (:attr:`_ConvBlock.channel_mask`) computes, so that it
    equals the model with those channels removed (a LayerNorm over the remaining channels:
    :func:`s3prl_plugins.compress.prune_conv_channels`) -- a LayerNorm over every channel would count the
    gated zeros in its mean and variance."""
    if keep is None or bool(keep.all()):
        return norm(x)
    idx = keep.nonzero().flatten()
    weight = norm.weight.index_select(0, idx) if norm.weight is not None else None
    bias = norm.bias.index_select(0, idx) if norm.bias is not None else None
    y = F.layer_norm(x.index_select(-1, idx), (idx.numel(),), weight, bias, norm.eps)
    return x.new_zeros(x.shape).index_copy(-1, idx, y.to(x.dtype))


class _ConvBlock(nn.Module):
    """One layer of the waveform CNN: convolution -> (norm) -> GELU.

    ``channel_mask`` (None, or a (channels,) tensor set from outside: a pruning method that learns which
    channels to remove, e.g. the ``dp`` step's HardConcrete gates) multiplies the block's output channels;
    channels at 0 are also left out of a LayerNorm's statistics (:func:`kept_layer_norm`), so the block with
    a 0/1 mask computes what the block with those channels removed computes."""

    def __init__(self, in_channels: int, spec: ConvSpec, norm: str, bias: bool, dropout: float, fast_norm: bool = True):
        super().__init__()
        self.fast_norm = fast_norm  # group_norm through channel_group_norm (equal; a speed option)
        self.channel_mask: Optional[Tensor] = None
        channels, kernel, stride = spec
        self.conv = nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=bias)
        if norm == "group_norm":
            self.norm: Optional[nn.Module] = nn.GroupNorm(channels, channels, affine=True)
        elif norm == "layer_norm":
            self.norm = nn.LayerNorm(channels, elementwise_affine=True)
        else:
            self.norm = None
        self.norm_kind = norm
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.channel_mask
        x = self.dropout(self.conv(x))
        if self.norm_kind == "group_norm":
            if self.fast_norm and fast_path_on(x):
                x = channel_group_norm(x, self.norm.weight, self.norm.bias, self.norm.eps)
            else:
                x = self.norm(x)
        elif self.norm_kind == "layer_norm":
            keep = None if mask is None else mask > 0
            x = kept_layer_norm(x.transpose(1, 2), self.norm, keep).transpose(1, 2)
        x = gelu(x)
        return x if mask is None else x * mask.to(x.dtype)[:, None]


class ConvFeatureExtractor(nn.Module):
    """Waveform CNN of wav2vec 2.0 / HuBERT.

    Args:
        specs: ``(channels, kernel, stride)`` for every layer, e.g. HuBERT BASE
            ``[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2``.
        norm: ``"group_norm"`` (fairseq ``extractor_mode="default"``: a per-channel GroupNorm on the
            first layer only), ``"layer_norm"`` (``"layer_norm"`` mode: a LayerNorm after every conv)
            or ``"none"``.
        bias: whether the convolutions have a bias (fairseq ``conv_bias``).
        dropout: dropout after each convolution (training only).
        fast_norm: compute the first layer's GroupNorm with :func:`channel_group_norm` (equal; faster on a
            GPU, :data:`FAST_PATH_DEVICES` only).
        chunked: in CPU inference (:func:`cpu_inference`) run the CNN over chunks of time (equal; see
            :meth:`forward_chunked`).
    """

    # Largest activation one chunk may hold (batch x channels x frames x bytes, any layer). The plain
    # forward writes HuBERT's first-layer output (64 MB per 10 s) to fresh pages that the CPU faults in
    # every call and reads it back from memory; chunks of this size stay in the caches and are reused by
    # the allocator. 12 MiB was the fastest of 1.5-32 MiB on 2 cores (bench/RESULTS.md, CPU fast path).
    CHUNK_BYTES = 12 * 2**20

    def __init__(
        self,
        specs: Sequence[ConvSpec],
        norm: str = "group_norm",
        bias: bool = False,
        dropout: float = 0.0,
        fast_norm: bool = True,
        chunked: bool = True,
    ):
        super().__init__()
        self.chunked = chunked
        if norm not in ("group_norm", "layer_norm", "none"):
            raise ValueError(f"conv norm must be group_norm, layer_norm or none, not {norm!r}")
        self.specs: List[ConvSpec] = [tuple(int(v) for v in s) for s in specs]  # type: ignore[misc]
        layers = []
        in_ch = 1
        for i, spec in enumerate(self.specs):
            layer_norm = norm if (norm == "layer_norm" or (norm == "group_norm" and i == 0)) else "none"
            layers.append(_ConvBlock(in_ch, spec, layer_norm, bias, dropout, fast_norm))
            in_ch = spec[0]
        self.conv_layers = nn.ModuleList(layers)
        self.output_dim = in_ch
        self.receptive_field = receptive_field(self.specs)
        self.stride = 1
        for _, _, s in self.specs:
            self.stride *= s

    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """Args:
            waveforms: (batch, samples), zero-padded.
            lengths: (batch,) valid samples, or None when nothing is padded.

        Returns:
            features (batch, frames, channels) and (batch,) valid frames (None if ``lengths`` is None).
        """
        if lengths is not None:
            lengths = conv_output_lengths(lengths, self.specs)
        if self.chunked and not self.masked and cpu_inference(waveforms, self):
            frames = waveforms.size(1)
            for _, kernel, stride in self.specs:
                frames = max(0, (frames - kernel) // stride + 1)
            if frames > 0:
                return self.forward_chunked(waveforms, frames).transpose(1, 2), lengths
        x = waveforms.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x.transpose(1, 2), lengths

    @property
    def masked(self) -> bool:
        """Whether any layer's output channels are gated (:attr:`_ConvBlock.channel_mask`)."""
        return any(layer.channel_mask is not None for layer in self.conv_layers)

    @property
    def output_keep(self) -> Optional[Tensor]:
        """The last layer's channels that are not gated to 0 (bool), or None when nothing is gated: what a
        LayerNorm over the CNN's output takes its statistics over (:func:`kept_layer_norm`)."""
        mask = self.conv_layers[-1].channel_mask
        return None if mask is None else mask > 0

    def forward_chunked(self, waveforms: Tensor, frames: int) -> Tensor:
        """The CNN's output (batch, channels, frames) computed over chunks of output frames, each from the
        samples of its receptive field (no padding anywhere: every output is the dot products the plain
        forward computes), so that no layer's whole-utterance activation is ever materialised.

        The first layer's GroupNorm (one group per channel, statistics over all the frames of an
        utterance, padding included as in the plain form) needs the whole utterance; it is folded into
        that layer's weights instead. The layer is linear in the unfolded input ``u_t`` (the ``kernel``
        samples under frame ``t``): ``y_ct = w_c . u_t + b_c``, so its mean is ``w_c . m + b_c`` and its
        (biased) variance ``w_c^T S w_c``, with ``m`` and ``S`` the mean and covariance of ``u_t`` over
        the frames (a kernel x kernel matrix, computed in float64). GroupNorm then becomes one affine map
        per channel, ``gamma_c (y_ct - mean_c) / sqrt(var_c + eps) + beta_c = w'_c . u_t + b'_c``, applied
        chunk by chunk as one batched matrix product.
        """
        waveforms = waveforms.contiguous()
        batch, samples = waveforms.shape
        first = self.conv_layers[0]
        channels, kernel, stride = self.specs[0]
        fold = first.norm_kind == "group_norm"  # else the first layer is local in time too (or LayerNorm)
        if fold:
            w = first.conv.weight[:, 0]  # (C, K); a conv bias shifts y and its mean alike: it cancels
            t0 = (samples - kernel) // stride + 1
            u = waveforms.as_strided((batch, kernel, t0), (waveforms.stride(0), 1, stride)).double()
            mean = u.mean(2)  # (B, K)
            centred = u - mean[:, :, None]
            cov = centred @ centred.transpose(1, 2) / t0  # (B, K, K)
            wd = w.double()
            wm = mean @ wd.T  # (B, C): the mean of y_ct less the bias, which GroupNorm removes with it
            y_var = torch.einsum("ck,bkj,cj->bc", wd, cov, wd)
            scale = first.norm.weight.double() / torch.sqrt(y_var + first.norm.eps)  # (B, C)
            w_fold = (wd * scale[:, :, None]).to(waveforms.dtype)  # (B, C, K)
            b_fold = (first.norm.bias.double() - wm * scale).to(waveforms.dtype)[:, :, None]  # (B, C, 1)
        # output frames per final frame at each layer -> chunk size within CHUNK_BYTES
        per_frame, rate = 0, 1
        for c, _, s in reversed(self.specs):
            per_frame = max(per_frame, c * rate)
            rate *= s
        chunk = max(16, self.CHUNK_BYTES // (batch * per_frame * waveforms.element_size()))
        out = waveforms.new_empty(batch, self.output_dim, frames)
        for n0 in range(0, frames, chunk):
            n1 = min(frames, n0 + chunk)
            start, end = n0, n1  # the input range of each layer, from the last back to the samples
            for _, k, s in reversed(self.specs[1:]):
                start, end = start * s, (end - 1) * s + k
            if fold:
                view = waveforms[:, start * stride :]
                u = view.as_strided((batch, kernel, end - start), (waveforms.stride(0), 1, stride))
                x = gelu(torch.baddbmm(b_fold, w_fold, u))
            else:
                x = first(waveforms[:, start * stride : (end - 1) * stride + kernel].unsqueeze(1))
            for layer in self.conv_layers[1:]:
                x = layer(x)
            out[:, :, n0:n1] = x
        return out


class LogMelFrontend(nn.Module):
    """Kaldi log-Mel filterbank front-end of MelHuBERT.

    Features are ``torchaudio.compliance.kaldi.fbank`` (povey window, snip_edges, no dither) of the
    waveform scaled to the 16-bit integer range (Kaldi's convention), normalised by the dataset
    mean/std held in the ``mean``/``std`` buffers (identity until :meth:`set_stats`). With
    ``stack_frames=2`` consecutive frames are concatenated (MelHuBERT-20ms); an odd last frame is
    paired with a copy of itself so that ``ceil(T / 2)`` frames come out, matching the paper's
    ``n = ceil(T/2) - 1`` targets ``c_1, c_3, ..., c_{2n+1}``.

    Args:
        n_mels: Mel bins (40 in MelHuBERT).
        frame_length_ms: analysis window (25 ms).
        frame_shift_ms: hop (10 ms).
        stack_frames: 1 (10 ms frames) or 2 (20 ms frames).
        sample_rate: input rate in Hz.
        batched: compute the whole batch's filterbanks at once (:meth:`batch_fbank`, equal to
            :meth:`fbank` frame by frame) instead of one utterance at a time (a speed option: the loop
            launches ~30 small kernels per utterance on a GPU; :data:`FAST_PATH_DEVICES` only).
    """

    def __init__(
        self,
        n_mels: int = 40,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        stack_frames: int = 1,
        sample_rate: int = 16000,
        batched: bool = True,
    ):
        super().__init__()
        self.batched = batched
        self._mel_cache: dict = {}  # (device, dtype) -> (n_fft // 2 + 1, n_mels) filterbank matrix
        if stack_frames < 1:
            raise ValueError(f"stack_frames must be >= 1, got {stack_frames}")
        self.n_mels = n_mels
        self.frame_length_ms = float(frame_length_ms)
        self.frame_shift_ms = float(frame_shift_ms)
        self.stack_frames = int(stack_frames)
        self.sample_rate = int(sample_rate)
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.window = int(round(sample_rate * frame_length_ms / 1000))
        self.hop = int(round(sample_rate * frame_shift_ms / 1000))
        self.output_dim = n_mels * stack_frames
        self.receptive_field = self.window
        self.stride = self.hop * self.stack_frames

    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        """Set the dataset-level normalisation (per Mel bin)."""
        if mean.shape != (self.n_mels,) or std.shape != (self.n_mels,):
            raise ValueError(f"mean/std must have shape ({self.n_mels},)")
        if not torch.all(std > 0):
            raise ValueError("std must be positive in every Mel bin")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def num_frames(self, lengths: Tensor) -> Tensor:
        """Frames out of ``lengths`` samples, after stacking."""
        n = (torch.div(lengths - self.window, self.hop, rounding_mode="floor") + 1).clamp(min=0)
        return torch.div(n + self.stack_frames - 1, self.stack_frames, rounding_mode="floor")

    def fbank(self, waveform: Tensor) -> Tensor:
        """Unnormalised, unstacked log-Mel frames of one waveform (samples,) -> (frames, n_mels)."""
        import torchaudio  # local: keeps `import s3prl_plugins.nn` light

        return torchaudio.compliance.kaldi.fbank(
            waveform.unsqueeze(0) * 32768.0,
            num_mel_bins=self.n_mels,
            frame_length=self.frame_length_ms,
            frame_shift=self.frame_shift_ms,
            dither=0.0,
            energy_floor=0.0,
            sample_frequency=float(self.sample_rate),
        )

    def _mel_matrix(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (str(device), dtype)
        if key not in self._mel_cache:
            import torchaudio  # local: keeps `import s3prl_plugins.nn` light

            n_fft = 1 << (self.window - 1).bit_length()  # Kaldi's round_to_power_of_two
            banks, _ = torchaudio.compliance.kaldi.get_mel_banks(
                self.n_mels, n_fft, float(self.sample_rate), 20.0, 0.0, 100.0, -500.0, 1.0
            )
            self._mel_cache[key] = (
                F.pad(banks, (0, 1)).T.contiguous().to(device=device, dtype=dtype)
            )  # (n_fft // 2 + 1, n_mels)
        return self._mel_cache[key]

    def batch_fbank(self, waveforms: Tensor) -> Tensor:
        """Unnormalised, unstacked log-Mel frames of a batch (batch, samples) -> (batch, frames, n_mels): what
        :meth:`fbank` computes for every utterance (Kaldi's steps -- snip_edges framing, DC removal,
        pre-emphasis 0.97, povey window, power spectrum, Mel banks 20 Hz..Nyquist, log floored at float32
        eps), done for every frame of the batch at once; a frame of utterance ``i`` equals :meth:`fbank`'s
        wherever it lies within the utterance's valid samples."""
        frames = (waveforms * 32768.0).unfold(-1, self.window, self.hop)  # (B, M, window)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        frames = frames - 0.97 * torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        window = torch.hann_window(self.window, periodic=False, device=frames.device, dtype=frames.dtype).pow(0.85)
        n_fft = 1 << (self.window - 1).bit_length()
        spectrum = torch.fft.rfft(F.pad(frames * window, (0, n_fft - self.window))).abs().pow(2.0)
        mel = torch.matmul(spectrum, self._mel_matrix(frames.device, frames.dtype))
        eps = torch.tensor(torch.finfo(torch.float).eps, device=mel.device, dtype=mel.dtype)
        return torch.max(mel, eps).log()

    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """Args:
            waveforms: (batch, samples), zero-padded.
            lengths: (batch,) valid samples, or None.

        Returns:
            features (batch, frames, n_mels * stack_frames), zero on padded frames, and (batch,) frames.
        """
        if self.batched and fast_path_on(waveforms):
            return self._forward_batched(waveforms, lengths)
        batch = waveforms.size(0)
        full = torch.full((batch,), waveforms.size(1), dtype=torch.long, device=waveforms.device)
        sample_lengths = full if lengths is None else lengths
        feats = []
        for i in range(batch):
            f = self.fbank(waveforms[i, : int(sample_lengths[i])].float())
            f = (f - self.mean) / self.std
            if self.stack_frames > 1:
                rest = f.size(0) % self.stack_frames
                if rest:
                    f = torch.cat([f, f[-1:].expand(self.stack_frames - rest, -1)], dim=0)
                f = f.reshape(-1, self.n_mels * self.stack_frames)
            feats.append(f)
        out_lengths = torch.tensor([f.size(0) for f in feats], dtype=torch.long, device=waveforms.device)
        x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(waveforms.dtype)
        return x, (None if lengths is None else out_lengths)

    def _forward_batched(self, waveforms: Tensor, lengths: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        """:meth:`forward` with :meth:`batch_fbank`: one pass over the batch, padded frames zeroed."""
        batch, samples = waveforms.shape
        full = torch.full((batch,), samples, dtype=torch.long, device=waveforms.device)
        sample_lengths = full if lengths is None else lengths.to(waveforms.device)
        device_type = waveforms.device.type
        with (
            torch.autocast(device_type, enabled=False)
            if autocast_dtype(device_type) is not None
            else contextlib.nullcontext()
        ):
            f = self.batch_fbank(waveforms.float())  # (B, M, n_mels), float32 as the per-utterance path
            f = (f - self.mean) / self.std
        frames = (torch.div(sample_lengths - self.window, self.hop, rounding_mode="floor") + 1).clamp(
            min=0
        )  # unstacked, per utterance
        s = self.stack_frames
        out_lengths = torch.div(frames + s - 1, s, rounding_mode="floor")
        steps = -(-f.size(1) // s)
        if s > 1:  # stacked frame j holds frames j*s .. j*s+s-1; past an utterance's end its last frame again
            idx = torch.arange(steps * s, device=f.device)[None, :].expand(batch, -1)
            idx = torch.minimum(idx, (frames - 1).clamp(min=0)[:, None])
            f = torch.gather(f, 1, idx[..., None].expand(-1, -1, f.size(-1))).reshape(batch, steps, s * self.n_mels)
        keep = torch.arange(steps, device=f.device)[None, :] < out_lengths[:, None]
        x = f.masked_fill(~keep[..., None], 0.0)
        width = int(out_lengths.max())
        x = x[:, :width].to(waveforms.dtype)
        return x, (None if lengths is None else out_lengths)
