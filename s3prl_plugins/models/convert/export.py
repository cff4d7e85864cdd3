"""Export our models to reference formats (so stock s3prl entries load them)."""

from __future__ import annotations

import re
from typing import Any, Dict

from s3prl_plugins.models.convert.common import uniform_hubert_refusals
from s3prl_plugins.models.convert.keymap import ConversionError
from s3prl_plugins.models.ssl_model import SSLModel


def _fairseq_backbone_keys(conv_norm: str) -> Dict[str, str]:
    """Our key -> fairseq-layout key for the CNN, projection and transformer (the names s3prl's
    ``hubert_local`` and ``distiller_local`` models share)."""
    return {
        r"frontend\.conv_layers\.(\d+)\.conv\.(weight|bias)": r"feature_extractor.conv_layers.\1.0.\2",
        r"frontend\.conv_layers\.(\d+)\.norm\.(weight|bias)": (
            r"feature_extractor.conv_layers.\1.2.\2"
            if conv_norm == "group_norm"
            else r"feature_extractor.conv_layers.\1.2.1.\2"
        ),
        r"feature_projection\.(weight|bias)": r"post_extract_proj.\1",
        r"encoder\.pos_conv\.conv\.bias": "encoder.pos_conv.0.bias",
        r"encoder\.pos_conv\.conv\.parametrizations\.weight\.original0": "encoder.pos_conv.0.weight_g",
        r"encoder\.pos_conv\.conv\.parametrizations\.weight\.original1": "encoder.pos_conv.0.weight_v",
        r"encoder\.layer_norm\.(weight|bias)": r"encoder.layer_norm.\1",
        r"encoder\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.(weight|bias)": (
            r"encoder.layers.\1.self_attn.\2_proj.\3"
        ),
        r"encoder\.layers\.(\d+)\.attention_layer_norm\.(weight|bias)": r"encoder.layers.\1.self_attn_layer_norm.\2",
        r"encoder\.layers\.(\d+)\.feed_forward\.(fc1|fc2)\.(weight|bias)": r"encoder.layers.\1.\2.\3",
        r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)": r"encoder.layers.\1.final_layer_norm.\2",
    }


def to_s3prl_hubert(model: SSLModel) -> Dict[str, Any]:
    """Our HuBERT-shaped model -> s3prl ``hubert_local`` checkpoint dict
    ``{task_cfg, model_cfg, model_weight, dictionaries_symbols}``, loadable by
    ``s3prl.hub.hubert_local(ckpt=...)``.

    Raises:
        ConversionError: the model is not expressible as fairseq HuBERT (log-Mel front-end, per-layer
            widths, no HuBERT head, a projection that fairseq's rule would not create, ...).
    """
    c = model.config
    problems = []
    if c.frontend != "conv":
        problems.append("front-end is not the waveform CNN")
    if c.conv_norm == "none":
        problems.append("CNN without normalisation")
    if len(set(c.num_heads)) != 1 or len(set(c.ffn_dims)) != 1 or c.num_heads[0] * c.head_dim != c.embed_dim:
        problems.append("per-layer head counts / FFN widths differ (pruned model)")
    if not c.feature_layer_norm or c.has_projection != (c.frontend_dim != c.embed_dim):
        problems.append("feature layer norm / projection differ from fairseq HuBERT")
    if c.gated_relative_position:
        problems.append("WavLM relative positions")
    if not c.head or c.head.get("type") != "hubert" or model.mask_emb is None:
        problems.append("no HuBERT head (final_proj + label embeddings) and mask embedding")
    if problems:
        raise ConversionError("cannot export to s3prl hubert_local: " + "; ".join(problems))
    state = model.state_dict()
    out: Dict[str, Any] = {}
    mapping = {
        **_fairseq_backbone_keys(c.conv_norm),
        r"feature_layer_norm\.(weight|bias)": r"layer_norm.\1",
        r"mask_emb": "mask_emb",
        r"head\.final_proj\.(weight|bias)": r"final_proj.\1",
        r"head\.label_embs_concat": "label_embs_concat",
    }
    for key, value in state.items():
        for pat, repl in mapping.items():
            if re.fullmatch(pat, key):
                out[re.sub(pat, repl, key)] = value.detach().cpu().clone()
                break
        else:
            raise ConversionError(f"cannot export key {key!r} to s3prl hubert_local")
    conv = " + ".join(f"[({ch}, {k}, {s})]" for ch, k, s in c.conv_layers)
    num_classes = c.head["num_classes"]
    model_cfg = {
        "label_rate": 16000 / c.downsample_rate,
        "extractor_mode": "default" if c.conv_norm == "group_norm" else "layer_norm",
        "conv_feature_layers": conv,
        "conv_bias": c.conv_bias,
        "encoder_layers": c.num_layers,
        "encoder_embed_dim": c.embed_dim,
        "encoder_ffn_embed_dim": c.ffn_dims[0],
        "encoder_attention_heads": c.num_heads[0],
        "activation_fn": "gelu",
        "layer_norm_first": c.layer_norm_first,
        "conv_pos": c.pos_conv_kernel,
        "conv_pos_groups": c.pos_conv_groups,
        "final_dim": c.head.get("final_dim", 256),
        "untie_final_proj": len(num_classes) > 1,
        "logit_temp": 0.1,
    }
    task_cfg = {"normalize": c.normalize_waveform, "label_rate": model_cfg["label_rate"], "sample_rate": 16000}
    symbols = [[str(i) for i in range(n)] for n in num_classes]
    return {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": out, "dictionaries_symbols": symbols}


def to_s3prl_distiller(model: SSLModel) -> Dict[str, Any]:
    """Our DistilHuBERT-shaped model with its prediction heads -> s3prl's ``distiller_local`` checkpoint
    ``{"Config": {"distiller": ...}, "Distiller": state}``, loadable by ``s3prl.hub.distiller_local(ckpt=...)``
    (the format of s3prl's released DistilHuBERT). The heads are needed: s3prl's expert always runs them.

    Raises:
        ConversionError: not expressible as s3prl's DistillerModel (log-Mel front-end, a feature
            LayerNorm, sequence subsampling, per-layer widths, pre-LN layers, no ``distil`` head, ...).
    """
    c = model.config
    problems = uniform_hubert_refusals(c, "s3prl's distiller")
    if c.subsampling:
        problems.append("a subsampled student loads through distilhubert_cif_local instead")
    if c.conv_bias:
        problems.append("CNN convolutions with biases")
    if c.feature_layer_norm:
        problems.append("a feature LayerNorm (s3prl's distiller has none)")
    if c.has_projection != (c.frontend_dim != c.embed_dim):
        problems.append("a projection that s3prl's rule (widths differ) would not create")
    if not c.head or c.head.get("type") != "distil" or model.head is None:
        problems.append(
            "no DistilHuBERT prediction heads (s3prl's expert runs them: export the student before they are dropped)"
        )
    if problems:
        raise ConversionError("cannot export to s3prl distiller_local: " + "; ".join(problems))
    head = model.head
    n = len(head.layers)
    mapping = {
        **_fairseq_backbone_keys(c.conv_norm),
        r"head\.expand\.(weight|bias)": r"output_layer.0.\1",
    }
    out: Dict[str, Any] = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu().clone()
        if key == "head.weight":  # (N, inter, out); one head is a plain Linear in s3prl's SplitLinear
            if n > 1:
                out["output_layer.2.weight"] = value
            else:
                out["output_layer.2.layer.weight"] = value[0].T.contiguous()
            continue
        if key == "head.bias":
            if n > 1:
                out["output_layer.2.bias"] = value.reshape(1, 1, n, -1)
            else:
                out["output_layer.2.layer.bias"] = value[0]
            continue
        for pat, repl in mapping.items():
            if re.fullmatch(pat, key):
                out[re.sub(pat, repl, key)] = value
                break
        else:
            raise ConversionError(f"cannot export key {key!r} to s3prl distiller_local")
    conv = " + ".join(f"[({ch}, {k}, {s})]" for ch, k, s in c.conv_layers)
    distiller = {
        "extractor_mode": "default" if c.conv_norm == "group_norm" else "layer_norm",
        "extractor_conv_feature_layers": conv,
        "extractor_dropout": 0.0,
        "feature_grad_mult": c.feature_grad_mult,
        "conv_pos": c.pos_conv_kernel,
        "conv_pos_groups": c.pos_conv_groups,
        "encoder_layers": c.num_layers,
        "encoder_embed_dim": c.embed_dim,
        "encoder_ffn_embed_dim": c.ffn_dims[0],
        "encoder_attention_heads": c.num_heads[0],
        "activation_fn": "gelu",
        "layer_norm_first": c.layer_norm_first,
        "attention_type": "original",
        "dropout": c.dropout,
        "attention_dropout": c.attention_dropout,
        "activation_dropout": c.activation_dropout,
        "encoder_layerdrop": 0.0,
        "final_dim": head.out_dim,
        "out_layer_type": "expand-last",
        "out_layer_inter_dim": head.inter_dim,
        "n_tasks": n,
        "task_emb_type": "expand-last",
        "pred_layer_id": list(head.layers),
    }
    return {"Config": {"distiller": distiller}, "Distiller": out}
