"""Typed factories and presets of the model zoo.

Parameter counts (tested to the digit):

===================  ============  ==============================================================
preset               parameters    source
===================  ============  ==============================================================
hubert_base          94,697,600    HuBERT BASE as counted by fairseq/s3prl (incl. ``final_proj``,
                                   ``label_embs_concat``, ``mask_emb``); backbone 94,370,944
distilhubert         23,491,200    DistilHuBERT (Chang et al. 2022, Table 1), heads removed;
                                   27,034,752 with its 3 prediction heads ("w/ prediction heads")
star_hubert          22,308,592    STaRHuBERT (Jang, Kim and Kim 2024, §3.1): width 432, FFN 976
star_hubert_l        26,626,672    STaRHuBERT-L: FFN 1392
melhubert_base_10ms  MelHuBERT BASE on 40-bin log-Mel at 10 ms (Lin et al., §IV-A), 512 clusters
melhubert_base_20ms  the same on two stacked frames (20 ms)
wav2vec2_base        wav2vec 2.0 BASE backbone (same shape as HuBERT's)
wavlm_base           WavLM BASE backbone (gated relative position bias)
===================  ============  ==============================================================
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from s3prl_plugins.models.config import HUBERT_CONV, SSLModelConfig
from s3prl_plugins.models.ssl_model import SSLModel

STAR_CONV: List[Tuple[int, int, int]] = (
    [(128, 10, 5), (256, 1, 1)] + [(256, 3, 2)] * 4 + [(432, 1, 1)] + [(432, 2, 2)] * 2
)


def _uniform(shape: Tuple[int, int, int, int], overrides: Dict[str, Any], **fields: Any) -> SSLModelConfig:
    """A config whose layers are all alike -- ``shape`` = (embed_dim, num_layers, num_heads, ffn_dim): each
    layer ``num_heads`` heads of ``embed_dim / num_heads`` and ``ffn_dim`` units --, with the family's
    ``fields`` and then the caller's ``overrides`` over them."""
    embed_dim, num_layers, num_heads, ffn_dim = shape
    cfg = dict(
        embed_dim=embed_dim,
        num_layers=num_layers,
        num_heads=[num_heads] * num_layers,
        head_dim=embed_dim // num_heads,
        ffn_dims=[ffn_dim] * num_layers,
        **fields,
    )
    cfg.update(overrides)
    return SSLModelConfig(**cfg)


def hubert_config(
    embed_dim: int = 768,
    num_layers: int = 12,
    num_heads: int = 12,
    ffn_dim: int = 3072,
    conv_layers: Sequence[Tuple[int, int, int]] = HUBERT_CONV,
    with_head: bool = True,
    final_dim: int = 256,
    num_classes: Sequence[int] = (504,),
    **overrides: Any,
) -> SSLModelConfig:
    """HuBERT (Hsu et al. 2021): waveform CNN, feature LayerNorm + projection, post-LN transformer."""
    return _uniform(
        (embed_dim, num_layers, num_heads, ffn_dim),
        overrides,
        frontend="conv",
        conv_layers=list(conv_layers),
        mask_embedding=with_head,
        head={"type": "hubert", "final_dim": final_dim, "num_classes": list(num_classes)} if with_head else None,
        name="hubert",
    )


def hubert_base(with_head: bool = True) -> SSLModelConfig:
    return hubert_config(with_head=with_head, name="hubert_base")


def wav2vec2_base() -> SSLModelConfig:
    return hubert_config(with_head=False, name="wav2vec2_base")


def wavlm_base() -> SSLModelConfig:
    return hubert_config(with_head=False, gated_relative_position=True, name="wavlm_base")


def distilhubert_config(
    num_layers: int = 2,
    embed_dim: int = 768,
    num_heads: int = 12,
    ffn_dim: int = 3072,
    conv_layers: Sequence[Tuple[int, int, int]] = HUBERT_CONV,
    pred_layers: Optional[Sequence[int]] = (4, 8, 12),
    out_dim: int = 768,
    **overrides: Any,
) -> SSLModelConfig:
    """DistilHuBERT (Chang et al. 2022): HuBERT's CNN, no feature LayerNorm, a 2-layer transformer,
    prediction heads for teacher layers 4/8/12 (``pred_layers=None`` drops them)."""
    return _uniform(
        (embed_dim, num_layers, num_heads, ffn_dim),
        overrides,
        frontend="conv",
        conv_layers=list(conv_layers),
        feature_layer_norm=False,
        head={"type": "distil", "layers": list(pred_layers), "out_dim": out_dim} if pred_layers else None,
        name="distilhubert",
    )


def distilhubert(with_heads: bool = False) -> SSLModelConfig:
    return distilhubert_config(pred_layers=(4, 8, 12) if with_heads else None, name="distilhubert")


def distilhubert_subsampled(kind: str, stride: int, upsample: Optional[str] = None, **overrides: Any) -> SSLModelConfig:
    """DistilHuBERT with sequence subsampling after the CNN (Meng et al. 2022, Table 2): ``kind`` avg /
    conv (fixed, ``stride`` frames per output frame, optionally ``upsample`` repeat / deconv) or cif /
    segments (variable; ``stride`` is the nominal frames per segment, e.g. 4 for 12.5 Hz)."""
    spec: Dict[str, Any] = {"type": kind, "stride": stride}
    if upsample:
        spec["upsample"] = upsample
    name = f"distilhubert_{kind}{stride}" + (f"_{upsample}" if upsample else "")
    args = dict(subsampling=spec, name=name)
    args.update(overrides)
    return distilhubert_config(pred_layers=None, **args)


def distilhubert_cif() -> SSLModelConfig:
    """DistilHuBERT + CIF (Table 2 III), profiled at its nominal 12.5 Hz (4 CNN frames per segment)."""
    return distilhubert_subsampled("cif", 4, name="distilhubert_cif")


def star_hubert_config(
    embed_dim: int = 432,
    num_layers: int = 12,
    num_heads: int = 12,
    ffn_dim: int = 976,
    conv_layers: Sequence[Tuple[int, int, int]] = STAR_CONV,
    **overrides: Any,
) -> SSLModelConfig:
    """STaRHuBERT-family student (Jang, Kim and Kim 2024, §3.1): the teacher's depth with a narrower attention
    width and FFN, and a slim CNN whose last width equals ``embed_dim`` (so no projection)."""
    return _uniform(
        (embed_dim, num_layers, num_heads, ffn_dim),
        overrides,
        frontend="conv",
        conv_layers=list(conv_layers),
        name="star_hubert",
    )


def star_hubert() -> SSLModelConfig:
    return star_hubert_config(name="star_hubert")


def star_hubert_l() -> SSLModelConfig:
    return star_hubert_config(ffn_dim=1392, name="star_hubert_l")


def melhubert_config(
    stack_frames: int = 1,
    embed_dim: int = 768,
    num_layers: int = 12,
    num_heads: int = 12,
    ffn_dim: int = 3072,
    n_mels: int = 40,
    num_clusters: Optional[int] = 512,
    **overrides: Any,
) -> SSLModelConfig:
    """MelHuBERT (Lin et al., §II-A): log-Mel input projected to the transformer width, the
    HuBERT transformer, and a linear cluster classifier (``num_clusters=None`` drops it)."""
    return _uniform(
        (embed_dim, num_layers, num_heads, ffn_dim),
        overrides,
        frontend="logmel",
        conv_layers=[],
        n_mels=n_mels,
        stack_frames=stack_frames,
        feature_layer_norm=False,
        feature_projection=True,
        mask_embedding=num_clusters is not None,
        head={"type": "cluster", "num_classes": num_clusters} if num_clusters else None,
        name="melhubert",
    )


def melhubert_base_10ms() -> SSLModelConfig:
    return melhubert_config(stack_frames=1, name="melhubert_base_10ms")


def melhubert_base_20ms() -> SSLModelConfig:
    return melhubert_config(stack_frames=2, name="melhubert_base_20ms")


PRESETS: Dict[str, Callable[[], SSLModelConfig]] = {
    "hubert_base": hubert_base,
    "wav2vec2_base": wav2vec2_base,
    "wavlm_base": wavlm_base,
    "distilhubert": distilhubert,
    "distilhubert_cif": distilhubert_cif,
    "distilhubert_avg2": lambda: distilhubert_subsampled("avg", 2),
    "distilhubert_avg4": lambda: distilhubert_subsampled("avg", 4),
    "distilhubert_avg8": lambda: distilhubert_subsampled("avg", 8),
    "distilhubert_conv2_deconv": lambda: distilhubert_subsampled("conv", 2, "deconv"),
    "distilhubert_conv4_deconv": lambda: distilhubert_subsampled("conv", 4, "deconv"),
    "star_hubert": star_hubert,
    "star_hubert_l": star_hubert_l,
    "melhubert_base_10ms": melhubert_base_10ms,
    "melhubert_base_20ms": melhubert_base_20ms,
}


def preset_config(name: str) -> SSLModelConfig:
    """The config of a preset by name."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


def build_model(config: SSLModelConfig) -> SSLModel:
    """Build a (randomly initialised) model from its config."""
    return SSLModel(config)
