"""Explicit key maps from reference state dicts to ours.

A map is an ordered list of ``(pattern, replacement)`` regular expressions plus a list of patterns
that are dropped on purpose (each with its reason). Every source key must either be renamed or
dropped; anything else raises :class:`ConversionError` -- nothing is loaded non-strictly.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import Tensor

Rule = Tuple[str, str]


class ConversionError(ValueError):
    """A checkpoint that cannot be converted (unknown or missing keys, wrong architecture)."""


def apply_key_map(
    state: Dict[str, Tensor],
    rules: Sequence[Rule],
    dropped: Sequence[Tuple[str, str]] = (),
    transforms: Optional[Dict[str, Callable[[Tensor], Tensor]]] = None,
    source: str = "checkpoint",
) -> Dict[str, Tensor]:
    """Rename every key of ``state`` by the first matching rule.

    Args:
        state: source state dict.
        rules: ``(regex, replacement)``; the regex must match the whole key.
        dropped: ``(regex, reason)`` for keys deliberately not converted.
        transforms: per *target* key regex, a function applied to the tensor (e.g. a reshape).
        source: a name for error messages.

    Raises:
        ConversionError: on a key no rule or drop pattern covers, or two keys mapping to one.
    """
    out: Dict[str, Tensor] = {}
    unknown: List[str] = []
    compiled = [(re.compile(p), r) for p, r in rules]
    drops = [re.compile(p) for p, _ in dropped]
    for key, value in state.items():
        for pat, repl in compiled:
            if pat.fullmatch(key):
                new = pat.sub(repl, key)
                if new in out:
                    raise ConversionError(f"{source}: keys map onto {new!r} twice")
                for tpat, fn in (transforms or {}).items():
                    if re.fullmatch(tpat, new):
                        value = fn(value)
                out[new] = value
                break
        else:
            if not any(d.fullmatch(key) for d in drops):
                unknown.append(key)
    if unknown:
        raise ConversionError(
            f"{source}: {len(unknown)} key(s) have no mapping (is it another architecture?): {unknown[:8]}"
        )
    return out


FAIRSEQ_RULES: List[Rule] = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"frontend.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(weight|bias)", r"frontend.conv_layers.\1.norm.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"frontend.conv_layers.\1.norm.\2"),
    (r"layer_norm\.(weight|bias)", r"feature_layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.\1"),
    (r"encoder\.pos_conv\.0\.bias", r"encoder.pos_conv.conv.bias"),
    (r"encoder\.pos_conv\.0\.weight_g", r"encoder.pos_conv.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.weight_v", r"encoder.pos_conv.conv.parametrizations.weight.original1"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn\.grep_a", r"encoder.layers.\1.attention.gru_rel_pos_const"),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)",
        r"encoder.layers.\1.attention.gru_rel_pos_linear.\2",
    ),
    (
        r"encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight",
        r"encoder.layers.\1.attention.rel_pos.rel_attn_embed.weight",
    ),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.attention_layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.(fc1|fc2)\.(weight|bias)", r"encoder.layers.\1.feed_forward.\2.\3"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
]

MASK_EMB_RULES: List[Rule] = [(r"mask_emb", r"mask_emb")]

HUBERT_HEAD_RULES: List[Rule] = [
    (r"final_proj\.(weight|bias)", r"head.final_proj.\1"),
    (r"label_embs_concat", r"head.label_embs_concat"),
]

DISTILLER_HEAD_RULES: List[Rule] = [
    (r"output_layer\.0\.(weight|bias)", r"head.expand.\1"),
    (r"output_layer\.2\.weight", r"head.weight"),
    (r"output_layer\.2\.bias", r"head.bias"),
]

WAV2VEC2_DROPPED = [
    (r"quantizer\..*", "wav2vec 2.0's quantizer is a pre-training module, not part of the upstream"),
    (r"project_q\..*", "wav2vec 2.0's target projection (pre-training only)"),
    (r"final_proj\..*", "wav2vec 2.0's contrastive output projection (pre-training only)"),
    (r"target_glu\..*", "wav2vec 2.0's optional target GLU (pre-training only)"),
]

HF_RULES: List[Rule] = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"frontend.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", r"frontend.conv_layers.\1.norm.\2"),
    (r"feature_projection\.layer_norm\.(weight|bias)", r"feature_layer_norm.\1"),
    (r"feature_projection\.projection\.(weight|bias)", r"feature_projection.\1"),
    (r"encoder\.pos_conv_embed\.conv\.bias", r"encoder.pos_conv.conv.bias"),
    (
        r"encoder\.pos_conv_embed\.conv\.(?:parametrizations\.weight\.original0|weight_g)",
        r"encoder.pos_conv.conv.parametrizations.weight.original0",
    ),
    (
        r"encoder\.pos_conv_embed\.conv\.(?:parametrizations\.weight\.original1|weight_v)",
        r"encoder.pos_conv.conv.parametrizations.weight.original1",
    ),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.attention\.(q|k|v|out)_proj\.(weight|bias)", r"encoder.layers.\1.attention.\2_proj.\3"),
    (r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_const", r"encoder.layers.\1.attention.gru_rel_pos_const"),
    (
        r"encoder\.layers\.(\d+)\.attention\.gru_rel_pos_linear\.(weight|bias)",
        r"encoder.layers.\1.attention.gru_rel_pos_linear.\2",
    ),
    (
        r"encoder\.layers\.(\d+)\.attention\.rel_attn_embed\.weight",
        r"encoder.layers.\1.attention.rel_pos.rel_attn_embed.weight",
    ),
    (r"encoder\.layers\.(\d+)\.layer_norm\.(weight|bias)", r"encoder.layers.\1.attention_layer_norm.\2"),
    (
        r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(weight|bias)",
        r"encoder.layers.\1.feed_forward.fc1.\2",
    ),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.(weight|bias)", r"encoder.layers.\1.feed_forward.fc2.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
]

HF_DROPPED = [
    (r"(lm_head|projector|classifier|project_hid|project_q|quantizer|adapter|layer_weights)(\..*)?", "task head"),
    (r"encoder\.pos_conv_embed\.conv\.weight", "materialised weight-norm weight (recomputed from g and v)"),
]


def _torchaudio_pattern(pattern: str) -> str:
    """torchaudio names HF's modules alike but nests them: ``encoder.feature_projection``,
    ``encoder.transformer.{pos_conv_embed,layer_norm,layers}``."""
    if pattern.startswith(r"feature_projection\."):
        return r"encoder\." + pattern
    if pattern.startswith(r"encoder\."):
        return r"encoder\.transformer\." + pattern[len(r"encoder\.") :]
    return pattern


TORCHAUDIO_RULES: List[Rule] = [(_torchaudio_pattern(p), r) for p, r in HF_RULES]
TORCHAUDIO_DROPPED = [(r"aux\..*", "torchaudio's CTC output layer (fine-tuning head)")]


def parse_conv_layers(spec: Any) -> List[Tuple[int, int, int]]:
    """Parse fairseq's ``conv_feature_layers`` string (``"[(512,10,5)] + [(512,3,2)] * 4"``) safely.

    Only list/tuple literals of integers combined with ``+`` and ``*`` are accepted (no ``eval``).
    """
    if isinstance(spec, (list, tuple)):
        return [tuple(int(v) for v in s) for s in spec]  # type: ignore[misc]

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ConversionError(f"unsupported conv_feature_layers expression: {spec!r}")

    try:
        value = ev(ast.parse(str(spec), mode="eval"))
    except SyntaxError as e:
        raise ConversionError(f"cannot parse conv_feature_layers {spec!r}: {e}") from e
    return [tuple(int(v) for v in s) for s in value]  # type: ignore[misc]
