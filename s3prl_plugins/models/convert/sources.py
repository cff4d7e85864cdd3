"""Reading each reference format into ``(SSLModelConfig, state_dict)``."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from s3prl_plugins.models.config import HUBERT_CONV, SSLModelConfig
from s3prl_plugins.models.convert.keymap import (
    DISTILLER_HEAD_RULES,
    FAIRSEQ_RULES,
    HF_DROPPED,
    HF_RULES,
    HUBERT_HEAD_RULES,
    MASK_EMB_RULES,
    TORCHAUDIO_DROPPED,
    TORCHAUDIO_RULES,
    WAV2VEC2_DROPPED,
    ConversionError,
    apply_key_map,
    parse_conv_layers,
)
from s3prl_plugins.models.convert.star_lightning import is_star_lightning

Converted = Tuple[SSLModelConfig, Dict[str, Tensor]]


def _as_dict(cfg: Any) -> Dict[str, Any]:
    if cfg is None:
        return {}
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if hasattr(cfg, "__dict__"):  # argparse.Namespace of old fairseq checkpoints
        return dict(vars(cfg))
    raise ConversionError(f"cannot read a config of type {type(cfg).__name__}")


def _check_activation(cfg: Mapping[str, Any], source: str) -> None:
    act = cfg.get("activation_fn", "gelu")
    if act != "gelu":
        raise ConversionError(f"{source}: activation {act!r} is not supported (only gelu)")


def _fairseq_config(
    model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any], name: str, **extra: Any
) -> SSLModelConfig:
    _check_activation(model_cfg, name)
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


def from_s3prl_hubert(ckpt: Mapping[str, Any], keep_head: bool = True) -> Converted:
    """s3prl ``hubert_local`` format ``{task_cfg, model_cfg, model_weight, dictionaries_symbols}``."""
    for key in ("task_cfg", "model_cfg", "model_weight"):
        if key not in ckpt:
            raise ConversionError(f"not an s3prl hubert_local checkpoint: {key!r} missing")
    model_cfg, task_cfg = _as_dict(ckpt["model_cfg"]), _as_dict(ckpt["task_cfg"])
    state = dict(ckpt["model_weight"])
    head = None
    if keep_head and "label_embs_concat" in state:
        symbols = ckpt.get("dictionaries_symbols") or [[None] * state["label_embs_concat"].shape[0]]
        final_dim = state["label_embs_concat"].shape[1]
        head = {"type": "hubert", "final_dim": int(final_dim), "num_classes": [len(s) for s in symbols]}
    config = _fairseq_config(model_cfg, task_cfg, "hubert", head=head, mask_embedding=keep_head and "mask_emb" in state)
    rules = FAIRSEQ_RULES + (HUBERT_HEAD_RULES if head else []) + (MASK_EMB_RULES if config.mask_embedding else [])
    dropped = [(r"final_proj\..*|label_embs_concat|mask_emb", "pre-training head / mask embedding (keep_head=False)")]
    return config, apply_key_map(state, rules, dropped, source="s3prl hubert checkpoint")


def from_s3prl_wav2vec2(ckpt: Mapping[str, Any]) -> Converted:
    """s3prl ``wav2vec2_local`` format ``{task_cfg, model_cfg, model_weight}`` (pre-training modules dropped)."""
    for key in ("task_cfg", "model_cfg", "model_weight"):
        if key not in ckpt:
            raise ConversionError(f"not an s3prl wav2vec2_local checkpoint: {key!r} missing")
    config = _fairseq_config(_as_dict(ckpt["model_cfg"]), _as_dict(ckpt["task_cfg"]), "wav2vec2")
    dropped = WAV2VEC2_DROPPED + [(r"mask_emb", "masked-prediction embedding (pre-training only)")]
    return config, apply_key_map(dict(ckpt["model_weight"]), FAIRSEQ_RULES, dropped, source="s3prl wav2vec2 checkpoint")


def from_s3prl_wavlm(ckpt: Mapping[str, Any]) -> Converted:
    """s3prl ``wavlm_local`` format ``{cfg, model}``."""
    if "cfg" not in ckpt or "model" not in ckpt:
        raise ConversionError("not an s3prl wavlm_local checkpoint: needs 'cfg' and 'model'")
    cfg = _as_dict(ckpt["cfg"])
    rel = bool(cfg.get("relative_position_embedding", False))
    if rel and not cfg.get("gru_rel_pos", False):
        raise ConversionError("WavLM without gated relative position (gru_rel_pos=False) is not supported")
    config = _fairseq_config(
        cfg,
        cfg,
        "wavlm",
        gated_relative_position=rel,
        num_buckets=int(cfg.get("num_buckets", 320)),
        max_distance=int(cfg.get("max_distance", 1280)),
    )
    dropped = [
        (r"mask_emb", "masked-prediction embedding (pre-training only)"),
        (r"label_embs_concat|final_proj\..*", "pre-training head"),
    ]
    return config, apply_key_map(dict(ckpt["model"]), FAIRSEQ_RULES, dropped, source="s3prl wavlm checkpoint")


def from_s3prl_distiller(ckpt: Mapping[str, Any], keep_head: bool = False) -> Converted:
    """s3prl ``distiller_local`` format ``{"Config": {"distiller": ...}, "Distiller": state}`` (DistilHuBERT)."""
    if "Config" not in ckpt or "Distiller" not in ckpt:
        raise ConversionError("not an s3prl distiller checkpoint: needs 'Config' and 'Distiller'")
    cfg = _as_dict(_as_dict(ckpt["Config"]).get("distiller"))
    _check_activation(cfg, "distiller")
    if (
        cfg.get("task_emb_type", "expand-last") != "expand-last"
        or cfg.get("out_layer_type", "expand-last") != "expand-last"
    ):
        raise ConversionError("only DistilHuBERT's expand-last prediction heads are supported")
    layers = int(cfg.get("encoder_layers", 1))
    dim = int(cfg.get("encoder_embed_dim", 768))
    heads = int(cfg.get("encoder_attention_heads", 12))
    n_tasks = int(cfg.get("n_tasks", 12))
    pred = [int(i) for i in cfg.get("pred_layer_id", range(1, n_tasks + 1))]
    head = None
    if keep_head:
        head = {
            "type": "distil",
            "layers": pred,
            "out_dim": int(cfg.get("final_dim", 768)),
            "inter_dim": int(cfg.get("out_layer_inter_dim", -1)),
        }
    config = SSLModelConfig(
        frontend="conv",
        conv_layers=parse_conv_layers(cfg.get("extractor_conv_feature_layers", HUBERT_CONV)),
        conv_norm={"default": "group_norm", "layer_norm": "layer_norm"}[cfg.get("extractor_mode", "default")],
        feature_layer_norm=False,
        embed_dim=dim,
        num_layers=layers,
        num_heads=[heads] * layers,
        head_dim=dim // heads,
        ffn_dims=[int(cfg.get("encoder_ffn_embed_dim", 3072))] * layers,
        pos_conv_kernel=int(cfg.get("conv_pos", 128)),
        pos_conv_groups=int(cfg.get("conv_pos_groups", 16)),
        layer_norm_first=bool(cfg.get("layer_norm_first", False)),
        head=head,
        name="distilhubert",
    )
    rules = FAIRSEQ_RULES + (DISTILLER_HEAD_RULES if keep_head else [])
    dropped = [] if keep_head else [(r"output_layer\..*", "prediction heads (removed after distillation)")]
    n = len(pred)
    state = apply_key_map(
        dict(ckpt["Distiller"]),
        rules,
        dropped,
        transforms={r"head\.bias": lambda t: t.reshape(n, -1)},
        source="s3prl distiller checkpoint",
    )
    return config, state


def from_fairseq(ckpt: Mapping[str, Any]) -> Converted:
    """A fairseq HuBERT / wav2vec 2.0 / WavLM-style checkpoint ``{cfg: {model, task}, model}`` (or old ``args``)."""
    if "model" not in ckpt or ("cfg" not in ckpt and "args" not in ckpt):
        raise ConversionError("not a fairseq checkpoint: needs 'model' and 'cfg' (or 'args')")
    if ckpt.get("cfg") is not None:
        cfg = _as_dict(ckpt["cfg"])
        model_cfg, task_cfg = _as_dict(cfg.get("model")), _as_dict(cfg.get("task"))
    else:
        model_cfg = task_cfg = _as_dict(ckpt["args"])
    arch = str(model_cfg.get("_name", model_cfg.get("arch", "")))
    state = ckpt["model"]
    if "label_embs_concat" in state or arch.startswith("hubert"):
        symbols = [[None] * state["label_embs_concat"].shape[0]] if "label_embs_concat" in state else []
        return from_s3prl_hubert(
            {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": state, "dictionaries_symbols": symbols}
        )
    if arch.startswith("wav2vec2") or "quantizer.vars" in state or "project_q.weight" in state:
        return from_s3prl_wav2vec2({"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": state})
    raise ConversionError(f"unsupported fairseq architecture {arch!r}")


def _hf_prefix_strip(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    for prefix in ("hubert.", "wav2vec2.", "wavlm."):
        if any(k.startswith(prefix) for k in state):
            return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}
    return state


def from_transformers(path: str) -> Converted:
    """A Hugging Face model folder (``config.json`` + ``model.safetensors``/``pytorch_model.bin``) of
    HuBERT, wav2vec 2.0 or WavLM (base models or ``*ForCTC`` etc.; task heads are dropped)."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise ConversionError(f"{path}: no config.json, not a Hugging Face model folder")
    with open(cfg_path) as f:
        hf = json.load(f)
    model_type = hf.get("model_type")
    if model_type not in ("hubert", "wav2vec2", "wavlm"):
        raise ConversionError(f"{path}: model_type {model_type!r} is not hubert, wav2vec2 or wavlm")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ConversionError(f"{path}: hidden_act {hf.get('hidden_act')!r} is not supported (only gelu)")
    if hf.get("feat_extract_activation", "gelu") != "gelu":
        raise ConversionError(f"{path}: feat_extract_activation must be gelu")
    normalize = False
    pre = os.path.join(path, "preprocessor_config.json")
    if os.path.isfile(pre):
        with open(pre) as f:
            normalize = bool(json.load(f).get("do_normalize", False))
    layers = int(hf.get("num_hidden_layers", 12))
    dim = int(hf.get("hidden_size", 768))
    heads = int(hf.get("num_attention_heads", 12))
    conv = list(zip(hf.get("conv_dim"), hf.get("conv_kernel"), hf.get("conv_stride")))
    feature_ln = bool(hf.get("feat_proj_layer_norm", True)) if model_type == "hubert" else True
    config = SSLModelConfig(
        frontend="conv",
        conv_layers=conv,
        conv_norm={"group": "group_norm", "layer": "layer_norm"}[hf.get("feat_extract_norm", "group")],
        conv_bias=bool(hf.get("conv_bias", False)),
        normalize_waveform=normalize,
        feature_layer_norm=feature_ln,
        feature_projection=True,
        embed_dim=dim,
        num_layers=layers,
        num_heads=[heads] * layers,
        head_dim=dim // heads,
        ffn_dims=[int(hf.get("intermediate_size", 3072))] * layers,
        pos_conv_kernel=int(hf.get("num_conv_pos_embeddings", 128)),
        pos_conv_groups=int(hf.get("num_conv_pos_embedding_groups", 16)),
        layer_norm_first=bool(hf.get("do_stable_layer_norm", False)),
        gated_relative_position=model_type == "wavlm",
        num_buckets=int(hf.get("num_buckets", 320)),
        max_distance=int(hf.get("max_bucket_distance", 800)),
        name=model_type,
    )
    st = os.path.join(path, "model.safetensors")
    if os.path.isfile(st):
        from safetensors.torch import load_file

        state = load_file(st)
    else:
        bin_path = os.path.join(path, "pytorch_model.bin")
        if not os.path.isfile(bin_path):
            raise ConversionError(f"{path}: neither model.safetensors nor pytorch_model.bin")
        state = torch.load(bin_path, map_location="cpu", weights_only=True)
    state = _hf_prefix_strip(dict(state))
    dropped = HF_DROPPED + [(r"masked_spec_embed", "masked-prediction embedding (pre-training only)")]
    return config, apply_key_map(state, HF_RULES, dropped, source=f"transformers model {path}")


def from_torchaudio(model: torch.nn.Module, normalize_waveform: bool = False) -> Converted:
    """A torchaudio ``Wav2Vec2Model`` (``wav2vec2_model``/``hubert_base`` factories), read from its modules."""
    fe = model.feature_extractor
    enc = model.encoder
    conv = []
    norm = "none"
    for i, block in enumerate(fe.conv_layers):
        c = block.conv
        conv.append((c.out_channels, c.kernel_size[0], c.stride[0]))
        if block.layer_norm is not None:
            norm = "group_norm" if isinstance(block.layer_norm, torch.nn.GroupNorm) else "layer_norm"
    tr = enc.transformer
    layers = len(tr.layers)
    att = tr.layers[0].attention
    dim = att.embed_dim
    pos = tr.pos_conv_embed.conv
    config = SSLModelConfig(
        frontend="conv",
        conv_layers=conv,
        conv_norm=norm,
        conv_bias=fe.conv_layers[0].conv.bias is not None,
        normalize_waveform=normalize_waveform,
        embed_dim=dim,
        num_layers=layers,
        num_heads=[layer.attention.num_heads for layer in tr.layers],
        head_dim=att.head_dim,
        ffn_dims=[layer.feed_forward.intermediate_dense.out_features for layer in tr.layers],
        pos_conv_kernel=pos.kernel_size[0],
        pos_conv_groups=pos.groups,
        layer_norm_first=bool(tr.layers[0].layer_norm_first),  # torchaudio inverts the flag on `Transformer`
        name="torchaudio",
    )
    return config, apply_key_map(model.state_dict(), TORCHAUDIO_RULES, TORCHAUDIO_DROPPED, source="torchaudio model")


def detect_format(obj: Any) -> Optional[str]:
    """Name the format of a loaded checkpoint dict: ours, star_lightning (the published STaRHuBERT),
    s3prl_hubert, s3prl_wav2vec2, s3prl_wavlm, s3prl_distiller, fairseq -- or None."""
    if not isinstance(obj, Mapping):
        return None
    if is_star_lightning(obj):
        return "star_lightning"
    keys = set(obj)
    if {"format_version", "model_config", "model_weight"} <= keys:
        return "ours"
    if {"task_cfg", "model_cfg", "model_weight"} <= keys:
        return (
            "s3prl_hubert"
            if "dictionaries_symbols" in keys or "label_embs_concat" in obj["model_weight"]
            else "s3prl_wav2vec2"
        )
    if {"cfg", "model"} <= keys and isinstance(obj["model"], Mapping):
        cfg = obj["cfg"]
        if isinstance(cfg, Mapping) and "model" in cfg:
            return "fairseq"
        return "s3prl_wavlm"
    if {"args", "model"} <= keys:
        return "fairseq"
    if {"Config", "Distiller"} <= keys:
        return "s3prl_distiller"
    return None
