"""Which format a loaded checkpoint dict is in: detection in one place."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from s3prl_plugins.models.convert.star_lightning import is_star_lightning


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
