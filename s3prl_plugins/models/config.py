"""The one configuration that describes every model of the zoo.

A model -- HuBERT BASE, DistilHuBERT, STaRHuBERT, MelHuBERT, a pruned student -- is fully described by
an :class:`SSLModelConfig` and rebuilt by :func:`s3prl_plugins.models.build_model`. The config is a
plain dataclass that round-trips through ``to_dict``/``from_dict`` (JSON/YAML safe), which is what
checkpoints store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from s3prl_plugins.nn.transformer import CPU_BF16, POS_CONV_PRECISIONS

# speed options of SSLModelConfig and their defaults (the fast paths); SPEED_OPTIONS_OFF: the plain forms
SPEED_OPTIONS: Dict[str, Any] = {
    "pos_conv_precision": "fp32_forward",
    "fast_conv_norm": True,
    "batched_fbank": True,
    "cpu_fast_path": True,
    "cpu_bf16": "auto",
}
SPEED_OPTIONS_OFF: Dict[str, Any] = {
    "pos_conv_precision": "autocast",
    "fast_conv_norm": False,
    "batched_fbank": False,
    "cpu_fast_path": False,
    "cpu_bf16": "off",
}

HUBERT_CONV: List[Tuple[int, int, int]] = [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2


@dataclass
class SSLModelConfig:
    """Architecture of a self-supervised speech model.

    Attributes:
        frontend: ``"conv"`` (waveform CNN) or ``"logmel"`` (MelHuBERT's Kaldi fbank).
        conv_layers: CNN ``(channels, kernel, stride)`` per layer (``frontend="conv"``).
        conv_norm: ``"group_norm"`` (first layer), ``"layer_norm"`` (every layer) or ``"none"``.
        conv_bias: CNN convolutions have biases.
        normalize_waveform: layer-normalise each utterance's samples first (fairseq ``task.normalize``).
        n_mels, stack_frames, frame_length_ms, frame_shift_ms: log-Mel front-end settings.
        feature_layer_norm: LayerNorm over front-end features before the projection (HuBERT: yes,
            DistilHuBERT: no).
        feature_projection: project front-end features to ``embed_dim``; ``None`` means "when the
            widths differ" (fairseq's rule).
        embed_dim: transformer width.
        num_layers: transformer layers.
        num_heads: heads per layer (a list of ``num_layers`` ints; pruned layers may differ).
        head_dim: width of one head.
        ffn_dims: FFN width per layer.
        pos_conv_kernel, pos_conv_groups: positional convolution (kernel 0: none).
        layer_norm_first: pre-LN layers.
        gated_relative_position, num_buckets, max_distance: WavLM's relative position bias.
        mask_embedding: keep a learned mask embedding for masked prediction (HuBERT's ``mask_emb``).
        head: prediction head of pre-training/distillation (``None``, or a dict with ``type`` one of
            ``"hubert"`` {final_dim, num_classes}, ``"cluster"`` {num_classes},
            ``"distil"`` {layers, out_dim, inter_dim}); not part of the upstream's backbone.
        dropout, attention_dropout, activation_dropout, conv_dropout: training-time dropout.
        feature_grad_mult: scale of the gradient reaching the front-end (fairseq HuBERT: 0.1).
        subsampling: sequence subsampling after the front-end (Meng et al. 2022): ``None``, or
            ``{type: avg | conv | cif | segments, stride: F, upsample: null | repeat | deconv,
            kernel: 5, tail_threshold: 0.5}`` (see :class:`s3prl_plugins.nn.subsampling.Subsampler`).
        identity_heads: per layer, heads whose attention map was replaced by the identity (Lin et al.
            §VI-D, eq. 10, "skip-ahead": the head outputs its values, no queries or keys); beside the
            ``num_heads`` attention heads. Empty: none.
        conv_heads: per layer, heads whose attention map was replaced by a 1-D convolution over time
            (one ``head_conv_kernel``-tap filter per head over its values). Empty: none.
        head_conv_kernel: taps of those convolutions (21 in the paper: 10 frames on each side).
        weight_density: the fraction of prunable transformer weights left by weight pruning (Lin et al.
            §II-B; the pruned weights are stored as zeros), ``None`` for a dense model. A record: the
            zeros themselves are in the weights.
        name: free-form label (the preset it came from).
        pos_conv_precision: how the positional convolution runs under autocast (a speed option; the
            weights and the float32 outputs are the same): ``"fp32_forward"`` (default) computes its
            forward in float32 -- an fp32 island: cuDNN's bf16 grouped convolution is ~8x slower than its
            fp32 one (768 ch, kernel 128, 16 groups on an H200) -- and its backward in the autocast
            dtype (fast in bf16, slow in fp32); ``"fp32"`` forward and backward in float32;
            ``"autocast"`` whatever autocast picks (the plain form). Without autocast all three are one
            computation.
        fast_conv_norm: compute the CNN's per-channel GroupNorm (first layer) as a layer norm over time
            (fused statistics, one read of the activations) plus the per-channel affine -- equal to
            ``nn.GroupNorm(C, C)``; under autocast it stays in the autocast dtype instead of float32
            (memory-bound: half the traffic). A speed option.
        batched_fbank: the log-Mel front-end computes the batch's filterbanks at once (equal, frame by frame,
            to Kaldi's per-utterance ``fbank``) instead of one utterance at a time. A speed option.
        cpu_fast_path: in CPU inference (:func:`s3prl_plugins.nn.frontends.cpu_inference`) the waveform CNN
            runs over chunks of time with its first layer's GroupNorm folded into that layer's weights
            (:meth:`~s3prl_plugins.nn.frontends.ConvFeatureExtractor.forward_chunked`), and the positional
            convolution runs by FFT (:meth:`~s3prl_plugins.nn.transformer.ConvPositionalEmbedding.fft_conv`);
            the same outputs up to float rounding. A speed option.
        cpu_bf16: in CPU inference, on a CPU with bfloat16 arithmetic (AVX512-BF16 / AMX), the transformer
            layers run under bf16 autocast (the CNN, the positional convolution and the returned states
            stay float32): ``"auto"`` from width 256 (:attr:`s3prl_plugins.nn.transformer.Encoder.BF16_MIN_WIDTH`;
            narrower models gain nothing), ``"on"``, ``"off"``. States within a cosine of 0.99999 of float32's
            on random weights (bench/RESULTS.md). A speed option.

    The speed options (:data:`SPEED_OPTIONS`) are left out of :meth:`to_dict` when at their default,
    so checkpoints and saved configs are what they were before the options existed. The first three take
    effect on the devices of :data:`s3prl_plugins.nn.frontends.FAST_PATH_DEVICES` (CUDA: on a CPU the
    plain forms were faster), ``cpu_fast_path`` in CPU inference only; elsewhere the plain forms run
    whatever the options say.
    """

    frontend: str = "conv"
    conv_layers: List[Tuple[int, int, int]] = field(default_factory=lambda: list(HUBERT_CONV))
    conv_norm: str = "group_norm"
    conv_bias: bool = False
    normalize_waveform: bool = False
    n_mels: int = 40
    stack_frames: int = 1
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    feature_layer_norm: bool = True
    feature_projection: Optional[bool] = None
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: List[int] = field(default_factory=lambda: [12] * 12)
    head_dim: int = 64
    ffn_dims: List[int] = field(default_factory=lambda: [3072] * 12)
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    layer_norm_first: bool = False
    gated_relative_position: bool = False
    num_buckets: int = 320
    max_distance: int = 800
    mask_embedding: bool = False
    head: Optional[Dict[str, Any]] = None
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    conv_dropout: float = 0.0
    feature_grad_mult: float = 1.0
    subsampling: Optional[Dict[str, Any]] = None
    identity_heads: List[int] = field(default_factory=list)
    conv_heads: List[int] = field(default_factory=list)
    head_conv_kernel: int = 21
    weight_density: Optional[float] = None
    name: str = ""
    pos_conv_precision: str = "fp32_forward"
    fast_conv_norm: bool = True
    batched_fbank: bool = True
    cpu_fast_path: bool = True
    cpu_bf16: str = "auto"

    def __post_init__(self) -> None:
        self.conv_layers = [tuple(int(v) for v in spec) for spec in self.conv_layers]  # type: ignore[misc]
        if isinstance(self.num_heads, int):
            self.num_heads = [self.num_heads] * self.num_layers
        if isinstance(self.ffn_dims, int):
            self.ffn_dims = [self.ffn_dims] * self.num_layers
        self.num_heads = [int(h) for h in self.num_heads]
        self.ffn_dims = [int(f) for f in self.ffn_dims]
        self.identity_heads = [int(h) for h in self.identity_heads] or [0] * self.num_layers
        self.conv_heads = [int(h) for h in self.conv_heads] or [0] * self.num_layers
        if isinstance(self.cpu_bf16, bool):  # YAML 1.1 reads on / off as booleans
            self.cpu_bf16 = "on" if self.cpu_bf16 else "off"
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        if self.pos_conv_precision not in POS_CONV_PRECISIONS:
            raise ValueError(
                f"pos_conv_precision must be one of {list(POS_CONV_PRECISIONS)}, not {self.pos_conv_precision!r}"
            )
        if self.cpu_bf16 not in CPU_BF16:
            raise ValueError(f"cpu_bf16 must be one of {list(CPU_BF16)}, not {self.cpu_bf16!r}")
        if self.frontend not in ("conv", "logmel"):
            raise ValueError(f"frontend must be 'conv' or 'logmel', not {self.frontend!r}")
        if self.frontend == "conv" and not self.conv_layers:
            raise ValueError("a conv front-end needs at least one conv layer")
        for spec in self.conv_layers:
            if len(spec) != 3 or min(spec) < 1:
                raise ValueError(f"conv layer spec must be (channels, kernel, stride) >= 1, got {spec}")
        if len(self.num_heads) != self.num_layers or len(self.ffn_dims) != self.num_layers:
            raise ValueError(
                f"num_heads ({len(self.num_heads)}) and ffn_dims ({len(self.ffn_dims)}) must list "
                f"num_layers={self.num_layers} values"
            )
        if len(self.identity_heads) != self.num_layers or len(self.conv_heads) != self.num_layers:
            raise ValueError(
                f"identity_heads ({len(self.identity_heads)}) and conv_heads ({len(self.conv_heads)}) must list "
                f"num_layers={self.num_layers} values (or be empty)"
            )
        if min(self.num_heads + self.ffn_dims + self.identity_heads + self.conv_heads, default=0) < 0:
            raise ValueError("head counts and FFN widths must be >= 0")
        if any(self.conv_heads) and (self.head_conv_kernel < 1 or self.head_conv_kernel % 2 == 0):
            raise ValueError(
                f"head_conv_kernel must be odd and >= 1 (centred on the frame), not {self.head_conv_kernel}"
            )
        if self.gated_relative_position and (any(self.identity_heads) or any(self.conv_heads)):
            raise ValueError("WavLM's gated relative position needs every head to be an attention head")
        if self.weight_density is not None and not 0.0 <= self.weight_density <= 1.0:
            raise ValueError(f"weight_density must be in [0, 1], not {self.weight_density}")
        if self.embed_dim < 1 or self.head_dim < 1:
            raise ValueError("embed_dim and head_dim must be positive")
        if self.pos_conv_kernel and self.embed_dim % self.pos_conv_groups:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by pos_conv_groups {self.pos_conv_groups}")
        if self.stack_frames < 1:
            raise ValueError("stack_frames must be >= 1")
        if self.head is not None and self.head.get("type") not in ("hubert", "cluster", "distil"):
            raise ValueError(f"unknown head type {self.head.get('type')!r} (hubert, cluster, distil)")
        if self.subsampling is not None:
            from s3prl_plugins.nn.subsampling import check_subsampling

            check_subsampling(self.subsampling)

    def heads_per_layer(self) -> List[int]:
        """Every head of each layer: attention, identity and convolution heads."""
        return [a + i + c for a, i, c in zip(self.num_heads, self.identity_heads, self.conv_heads)]

    @property
    def frontend_dim(self) -> int:
        if self.frontend == "conv":
            return self.conv_layers[-1][0]
        return self.n_mels * self.stack_frames

    @property
    def has_projection(self) -> bool:
        if self.feature_projection is None:
            return self.frontend_dim != self.embed_dim
        return bool(self.feature_projection)

    @property
    def downsample_rate(self) -> int:
        """Input samples per front-end frame (320 for the waveform CNN, 160/320 for log-Mel 10/20 ms);
        with sequence subsampling the encoder runs at a lower rate, :attr:`encoder_downsample_rate`."""
        if self.frontend == "conv":
            rate = 1
            for _, _, stride in self.conv_layers:
                rate *= stride
            return rate
        return int(round(16000 * self.frame_shift_ms / 1000)) * self.stack_frames

    @property
    def subsampling_stride(self) -> Optional[int]:
        """Front-end frames per encoder frame: 1 without subsampling, the stride of fixed-length
        subsampling, ``None`` for variable-length (CIF, given segments)."""
        spec = self.subsampling
        if not spec:
            return 1
        if spec["type"] in ("avg", "conv"):
            return int(spec.get("stride", 1))
        return None

    @property
    def encoder_downsample_rate(self) -> Optional[int]:
        """Input samples per encoder frame (``None`` when variable-length)."""
        stride = self.subsampling_stride
        return None if stride is None else self.downsample_rate * stride

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["conv_layers"] = [list(s) for s in self.conv_layers]
        for key in ("identity_heads", "conv_heads"):  # none replaced: stored empty, so replace(num_layers=...) works
            if not any(d[key]):
                d[key] = []
        for key, default in SPEED_OPTIONS.items():  # at the default: not stored (checkpoints unchanged)
            if d[key] == default:
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SSLModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "SSLModelConfig":
        return SSLModelConfig.from_dict({**self.to_dict(), **changes})
