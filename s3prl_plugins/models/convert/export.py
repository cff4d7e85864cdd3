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
