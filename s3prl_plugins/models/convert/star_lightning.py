"""The published STaRHuBERT checkpoints: a PyTorch Lightning ``.ckpt`` and a ``.yaml`` per model.

STaR (Jang, Kim and Kim, "STaR: Distilling Speech Temporal Relation for Lightweight Speech
Self-Supervised Learning Models", ICASSP 2024) released STaRHuBERT-L / STaRHuBERT / -S through the
README of ``sungnyun/ARMHuBERT``. Facts of that format, read from the authors' repository (no code of
theirs is used here):

* the ``.ckpt`` is a Lightning checkpoint; ``state_dict`` holds the whole distillation module: the
  student under ``student_model.`` in fairseq wav2vec 2.0 / HuBERT key names, the frozen teacher under
  ``teacher_model.`` (not needed), and a ``final_proj`` the authors' expert deletes;
* the ``.yaml`` has a ``distiller:`` section with the fairseq-style architecture (``conv_feature_layers``
  as a Python-literal string, ``encoder_layers``, ``encoder_embed_dim``, ...), plus training-only keys;
  Lightning also keeps the training config in ``hyper_parameters["cfg"]``, so a checkpoint whose
  hyper-parameters hold ``distiller`` needs no yaml;
* the student is fairseq's post-LN wav2vec 2.0 encoder: CNN -> LayerNorm -> projection (when the
  widths differ) -> positional convolution -> LayerNorm -> layers. The authors' expert returns the 12
  layer outputs; ours returns 13 (the transformer input first), the published layout on request.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml
from torch import Tensor

from s3prl_plugins.models.config import HUBERT_CONV, SSLModelConfig
from s3prl_plugins.models.convert.keymap import FAIRSEQ_RULES, ConversionError, Rule, apply_key_map, parse_conv_layers

logger = logging.getLogger(__name__)

STUDENT_PREFIX = "student_model."
TEACHER_PREFIX = "teacher_model."

# The defaults of the authors' student config dataclass, for keys a yaml leaves out.
DISTILLER_DEFAULTS: Dict[str, Any] = {
    "extractor_mode": "default",
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "layer_norm_first": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "pos_conv_depth": 1,
    "crop_seq_to_multiple": 1,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "feature_grad_mult": 1.0,
}

# Settings that change what the network computes; anything else in ``distiller:`` is training-only.
_MUST_BE = {"activation_fn": "gelu", "layer_type": "transformer", "pos_conv_depth": 1, "crop_seq_to_multiple": 1}

STAR_RULES: List[Rule] = FAIRSEQ_RULES + [
    (
        r"encoder\.pos_conv\.0\.parametrizations\.weight\.original0",
        r"encoder.pos_conv.conv.parametrizations.weight.original0",
    ),
    (
        r"encoder\.pos_conv\.0\.parametrizations\.weight\.original1",
        r"encoder.pos_conv.conv.parametrizations.weight.original1",
    ),
]
STAR_DROPPED = [(r"final_proj\..*", "the distillation-time output projection (the authors' expert deletes it)")]


class _TolerantLoader(yaml.SafeLoader):
    """``yaml.safe_load`` plus PyYAML's ``!!python/tuple`` (read as a list); any other ``!!python/...``
    tag becomes an :class:`UnreadableYamlValue` instead of running code or failing the whole file."""


class UnreadableYamlValue:
    def __init__(self, tag: str):
        self.tag = tag

    def __repr__(self) -> str:
        return f"<unreadable yaml value {self.tag}>"


def _tuple(loader: yaml.SafeLoader, node: yaml.Node) -> list:
    return loader.construct_sequence(node)  # type: ignore[arg-type]


def _unreadable(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> UnreadableYamlValue:
    return UnreadableYamlValue(node.tag)


_TolerantLoader.add_constructor("tag:yaml.org,2002:python/tuple", _tuple)
_TolerantLoader.add_multi_constructor("tag:yaml.org,2002:python/", _unreadable)


def read_yaml(path: str) -> Any:
    """A YAML file read safely: ``!!python/tuple`` as a list, other Python tags as
    :class:`UnreadableYamlValue` (the authors' files are written by ``yaml.dump``, which may emit them)."""
    with open(path) as f:
        return yaml.load(f, Loader=_TolerantLoader)  # noqa: S506 - a SafeLoader subclass


def read_distiller_yaml(path: str) -> Dict[str, Any]:
    """The ``distiller:`` section of a published ``.yaml`` (read safely: no Python objects built)."""
    try:
        doc = read_yaml(path)
    except OSError as e:
        raise ConversionError(f"{path}: cannot read the model config ({e})") from e
    except yaml.YAMLError as e:
        raise ConversionError(f"{path}: not a YAML file ({e}); is it the published .yaml of the checkpoint?") from e
    if not isinstance(doc, Mapping) or not isinstance(doc.get("distiller"), Mapping):
        raise ConversionError(
            f"{path}: no 'distiller:' section; the published STaRHuBERT .yaml has one (top-level keys here: "
            f"{sorted(doc)[:8] if isinstance(doc, Mapping) else type(doc).__name__})"
        )
    return dict(doc["distiller"])


def is_star_lightning(obj: Any) -> bool:
    """Whether a loaded checkpoint dict is a Lightning checkpoint with a ``student_model.`` inside."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        return False
    return any(str(k).startswith(STUDENT_PREFIX) for k in obj["state_dict"])


def distiller_from_checkpoint(obj: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The ``distiller`` section Lightning saved in ``hyper_parameters`` (``cfg.distiller``), if any."""
    hp = obj.get("hyper_parameters")
    for candidate in (hp.get("cfg") if isinstance(hp, Mapping) else None, hp):
        if isinstance(candidate, Mapping) and isinstance(candidate.get("distiller"), Mapping):
            return dict(candidate["distiller"])
    return None


def star_lightning_config(distiller: Mapping[str, Any], source: str = "model config") -> SSLModelConfig:
    """Our :class:`SSLModelConfig` for the authors' ``distiller:`` section."""
    cfg = {**DISTILLER_DEFAULTS, **{k: v for k, v in distiller.items() if v is not None}}
    needed = list(_MUST_BE) + [
        "extractor_mode",
        "conv_feature_layers",
        "conv_bias",
        "encoder_layers",
        "encoder_embed_dim",
        "encoder_ffn_embed_dim",
        "encoder_attention_heads",
        "layer_norm_first",
        "conv_pos",
        "conv_pos_groups",
    ]
    unreadable = [k for k in needed if isinstance(cfg[k], UnreadableYamlValue)]
    if unreadable:
        raise ConversionError(f"{source}: distiller keys {unreadable} hold Python objects that cannot be read safely")
    for key, want in _MUST_BE.items():
        if str(cfg[key]) != str(want):
            raise ConversionError(
                f"{source}: distiller.{key} = {cfg[key]!r}; only {want!r} is supported (this is not a STaRHuBERT model)"
            )
    mode = str(cfg["extractor_mode"])
    if mode not in ("default", "layer_norm"):
        raise ConversionError(f"{source}: distiller.extractor_mode {mode!r} is not 'default' or 'layer_norm'")
    layers, dim, heads = int(cfg["encoder_layers"]), int(cfg["encoder_embed_dim"]), int(cfg["encoder_attention_heads"])
    if dim % heads:
        raise ConversionError(f"{source}: encoder_embed_dim {dim} is not divisible by encoder_attention_heads {heads}")
    return SSLModelConfig(
        frontend="conv",
        conv_layers=parse_conv_layers(cfg["conv_feature_layers"] or HUBERT_CONV),
        conv_norm={"default": "group_norm", "layer_norm": "layer_norm"}[mode],
        conv_bias=bool(cfg["conv_bias"]),
        normalize_waveform=False,  # the authors' expert feeds raw samples (HuBERT BASE teacher: no normalisation)
        feature_layer_norm=True,
        feature_projection=None,  # fairseq's rule: a projection when the CNN width differs
        embed_dim=dim,
        num_layers=layers,
        num_heads=[heads] * layers,
        head_dim=dim // heads,
        ffn_dims=[int(cfg["encoder_ffn_embed_dim"])] * layers,
        pos_conv_kernel=int(cfg["conv_pos"]),
        pos_conv_groups=int(cfg["conv_pos_groups"]),
        layer_norm_first=bool(cfg["layer_norm_first"]),
        dropout=float(cfg["dropout"]),
        attention_dropout=float(cfg["attention_dropout"]),
        activation_dropout=float(cfg["activation_dropout"]),
        feature_grad_mult=float(cfg["feature_grad_mult"]),
        name="star_hubert",
    )


def from_star_lightning(
    obj: Mapping[str, Any], distiller: Optional[Mapping[str, Any]] = None, source: str = "checkpoint"
) -> Tuple[SSLModelConfig, Dict[str, Tensor]]:
    """``(config, state)`` of a published STaRHuBERT Lightning checkpoint.

    Args:
        obj: the loaded ``.ckpt`` dict.
        distiller: the yaml's ``distiller:`` section (:func:`read_distiller_yaml`); ``None`` uses the
            one Lightning saved in ``hyper_parameters``.
        source: a name for error messages.

    Raises:
        ConversionError: no architecture config, keys that are neither student nor teacher, student keys
            without a mapping.
    """
    if not is_star_lightning(obj):
        raise ConversionError(f"{source}: not a Lightning checkpoint with a 'student_model.' in its state_dict")
    if distiller is None:
        distiller = distiller_from_checkpoint(obj)
        if distiller is None:
            raise ConversionError(
                f"{source}: the checkpoint does not record its architecture; pass the published .yaml beside it "
                "(model_config=PATH.yaml; run_downstream.py -g PATH.yaml; bin/convert --config PATH.yaml)"
            )
    config = star_lightning_config(distiller, source)
    student: Dict[str, Tensor] = {}
    other: List[str] = []
    for key, value in obj["state_dict"].items():
        key = str(key)
        if key.startswith(STUDENT_PREFIX):
            student[key[len(STUDENT_PREFIX) :]] = value
        elif not key.startswith(TEACHER_PREFIX):  # the frozen teacher is not part of the student
            other.append(key)
    if other:
        raise ConversionError(
            f"{source}: state_dict keys that belong neither to student_model nor teacher_model: {other[:8]}"
        )
    not_tensors = [k for k, v in student.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise ConversionError(f"{source}: student entries that are not tensors: {not_tensors[:8]}")
    state = apply_key_map(student, STAR_RULES, STAR_DROPPED, source=f"{source} (student_model)")
    logger.info(
        "%s: published STaRHuBERT, %d layers, width %d, FFN %d",
        source,
        config.num_layers,
        config.embed_dim,
        config.ffn_dims[0],
    )
    return config, state
