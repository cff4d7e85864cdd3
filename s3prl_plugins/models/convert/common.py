"""What the readers share: the ``(config, state_dict)`` they return, fairseq-style configs."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

from torch import Tensor

from s3prl_plugins.models.config import HUBERT_CONV, SSLModelConfig
from s3prl_plugins.models.convert.keymap import ConversionError, parse_conv_layers

Converted = Tuple[SSLModelConfig, Dict[str, Tensor]]


def as_dict(cfg: Any) -> Dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if hasattr(cfg, "__dict__"):  # argparse.Namespace of old fairseq checkpoints
        return dict(vars(cfg))
    raise ConversionError(f"cannot read a config of type {type(cfg).__name__}")


def check_activation(cfg: Mapping[str, Any], source: str) -> None:
    act = cfg.get("activation_fn", "gelu")
    if act != "gelu":
        raise ConversionError(f"{source}: activation {act!r} is not supported (only gelu)")


def fairseq_config(
    model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any], name: str, **extra: Any
) -> SSLModelConfig:
    check_activation(model_cfg, name)
    layers = int(model_cfg.get("encoder_layers", 12))
    dim = int(model_cfg.get("encoder_embed_dim", 768))
    heads = int(model_cfg.get("encoder_attention_heads", 12))
    mode = model_cfg.get("extractor_mode", "default")
    conv = parse_conv_layers(model_cfg.get("conv_feature_layers", HUBERT_CONV))
    return SSLModelConfig(
        frontend="conv",
        conv_layers=conv,
        conv_norm={"default": "group_norm", "layer_norm": "layer_norm"}[mode],
        conv_bias=bool(model_cfg.get("conv_bias", False)),
        normalize_waveform=bool(task_cfg.get("normalize", model_cfg.get("normalize", False))),
        feature_layer_norm=True,
        feature_projection=None,
        embed_dim=dim,
        num_layers=layers,
        num_heads=[heads] * layers,
        head_dim=dim // heads,
        ffn_dims=[int(model_cfg.get("encoder_ffn_embed_dim", 3072))] * layers,
        pos_conv_kernel=int(model_cfg.get("conv_pos", 128)),
        pos_conv_groups=int(model_cfg.get("conv_pos_groups", 16)),
        layer_norm_first=bool(model_cfg.get("layer_norm_first", False)),
        name=name,
        **extra,
    )


def uniform_hubert_refusals(c: SSLModelConfig, target: str) -> List[str]:
    """What a HuBERT-shaped format with one head count and one FFN width for every layer (transformers'
    ``HubertModel``, s3prl's ``DistillerModel``) cannot express of ``c`` -- the reasons every such export
    shares, each naming ``target``; an exporter adds its own after them."""
    why = []
    if c.frontend != "conv":
        why.append(f"the log-Mel front-end ({target} takes the waveform CNN only)")
    if c.conv_norm == "none":
        why.append(f"a CNN without normalisation ({target}: group or layer norm)")
    if c.subsampling:
        why.append(f"sequence subsampling ({c.subsampling['type']}: {target} has no CIF or pooling)")
    if any(c.identity_heads) or any(c.conv_heads):
        why.append(f"heads replaced by the identity {c.identity_heads} / a convolution {c.conv_heads}")
    if not c.num_layers:
        why.append(f"no transformer layers ({target} has at least one)")
    elif len(set(c.num_heads)) > 1 or len(set(c.ffn_dims)) > 1:
        why.append(f"per-layer heads {c.num_heads} / FFN widths {c.ffn_dims} ({target}: one of each for all layers)")
    elif c.num_heads[0] * c.head_dim != c.embed_dim:
        why.append(
            f"{c.num_heads[0]} heads x {c.head_dim} != width {c.embed_dim} ({target} derives the head size from "
            "the width)"
        )
    if c.gated_relative_position:
        why.append(f"WavLM's gated relative position bias (a WavLM model: {target} takes HuBERT's layers)")
    return why
