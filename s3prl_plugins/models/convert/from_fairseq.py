"""fairseq checkpoints (HuBERT, wav2vec 2.0), read through s3prl's equivalent formats."""

from __future__ import annotations

from typing import Any, Mapping

from s3prl_plugins.models.convert.common import Converted, as_dict
from s3prl_plugins.models.convert.from_s3prl import from_s3prl_hubert, from_s3prl_wav2vec2
from s3prl_plugins.models.convert.keymap import (
    ConversionError,
)


def from_fairseq(ckpt: Mapping[str, Any]) -> Converted:
    """A fairseq HuBERT / wav2vec 2.0 / WavLM-style checkpoint ``{cfg: {model, task}, model}`` (or old ``args``)."""
    if "model" not in ckpt or ("cfg" not in ckpt and "args" not in ckpt):
        raise ConversionError("not a fairseq checkpoint: needs 'model' and 'cfg' (or 'args')")
    if ckpt.get("cfg") is not None:
        cfg = as_dict(ckpt["cfg"])
        model_cfg, task_cfg = as_dict(cfg.get("model")), as_dict(cfg.get("task"))
    else:
        model_cfg = task_cfg = as_dict(ckpt["args"])
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
