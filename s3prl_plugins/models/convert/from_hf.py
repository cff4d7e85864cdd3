"""Hugging Face ``transformers`` model folders (HuBERT, wav2vec 2.0, WavLM)."""

from __future__ import annotations

import json
import os
from typing import Dict

import torch
from torch import Tensor

from s3prl_plugins.models.config import SSLModelConfig
from s3prl_plugins.models.convert.common import Converted
from s3prl_plugins.models.convert.keymap import (
    HF_DROPPED,
    HF_RULES,
    ConversionError,
    apply_key_map,
)


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
