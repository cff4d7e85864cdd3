"""s3prl's checkpoint formats: ``hubert_local``, ``wav2vec2_local``, ``wavlm_local``, ``distiller_local``."""

from __future__ import annotations

from typing import Any, Mapping

from s3prl_plugins.models.config import HUBERT_CONV, SSLModelConfig
from s3prl_plugins.models.convert.common import Converted, as_dict, check_activation, fairseq_config
from s3prl_plugins.models.convert.keymap import (
    DISTILLER_HEAD_RULES,
    FAIRSEQ_RULES,
    HUBERT_HEAD_RULES,
    MASK_EMB_RULES,
    WAV2VEC2_DROPPED,
    ConversionError,
    apply_key_map,
    parse_conv_layers,
)


def from_s3prl_hubert(ckpt: Mapping[str, Any], keep_head: bool = True) -> Converted:
    """s3prl ``hubert_local`` format ``{task_cfg, model_cfg, model_weight, dictionaries_symbols}``."""
    for key in ("task_cfg", "model_cfg", "model_weight"):
        if key not in ckpt:
            raise ConversionError(f"not an s3prl hubert_local checkpoint: {key!r} missing")
    model_cfg, task_cfg = as_dict(ckpt["model_cfg"]), as_dict(ckpt["task_cfg"])
    state = dict(ckpt["model_weight"])
    head = None
    if keep_head and "label_embs_concat" in state:
        symbols = ckpt.get("dictionaries_symbols") or [[None] * state["label_embs_concat"].shape[0]]
        final_dim = state["label_embs_concat"].shape[1]
        head = {"type": "hubert", "final_dim": int(final_dim), "num_classes": [len(s) for s in symbols]}
    config = fairseq_config(model_cfg, task_cfg, "hubert", head=head, mask_embedding=keep_head and "mask_emb" in state)
    rules = FAIRSEQ_RULES + (HUBERT_HEAD_RULES if head else []) + (MASK_EMB_RULES if config.mask_embedding else [])
    dropped = [(r"final_proj\..*|label_embs_concat|mask_emb", "pre-training head / mask embedding (keep_head=False)")]
    return config, apply_key_map(state, rules, dropped, source="s3prl hubert checkpoint")


def from_s3prl_wav2vec2(ckpt: Mapping[str, Any]) -> Converted:
    """s3prl ``wav2vec2_local`` format ``{task_cfg, model_cfg, model_weight}`` (pre-training modules dropped)."""
    for key in ("task_cfg", "model_cfg", "model_weight"):
        if key not in ckpt:
            raise ConversionError(f"not an s3prl wav2vec2_local checkpoint: {key!r} missing")
    config = fairseq_config(as_dict(ckpt["model_cfg"]), as_dict(ckpt["task_cfg"]), "wav2vec2")
    dropped = WAV2VEC2_DROPPED + [(r"mask_emb", "masked-prediction embedding (pre-training only)")]
    return config, apply_key_map(dict(ckpt["model_weight"]), FAIRSEQ_RULES, dropped, source="s3prl wav2vec2 checkpoint")


def from_s3prl_wavlm(ckpt: Mapping[str, Any]) -> Converted:
    """s3prl ``wavlm_local`` format ``{cfg, model}``."""
    if "cfg" not in ckpt or "model" not in ckpt:
        raise ConversionError("not an s3prl wavlm_local checkpoint: needs 'cfg' and 'model'")
    cfg = as_dict(ckpt["cfg"])
    rel = bool(cfg.get("relative_position_embedding", False))
    if rel and not cfg.get("gru_rel_pos", False):
        raise ConversionError("WavLM without gated relative position (gru_rel_pos=False) is not supported")
    config = fairseq_config(
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
    cfg = as_dict(as_dict(ckpt["Config"]).get("distiller"))
    check_activation(cfg, "distiller")
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
