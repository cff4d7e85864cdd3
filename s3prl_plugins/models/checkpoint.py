"""Our checkpoint format: a plain dict, written atomically and read with ``weights_only=True``.

``{"format_version": 1, "model_config": {...}, "model_weight": {...}, ...extra}`` -- no pickled
objects, so ``torch.load(path, weights_only=True)`` reads it and a checkpoint can be inspected with
nothing but torch.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from s3prl_plugins.models.config import SSLModelConfig
from s3prl_plugins.models.ssl_model import SSLModel

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is not ours, is damaged, or holds another architecture."""


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def make_checkpoint(model: SSLModel, **extra: Any) -> Dict[str, Any]:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"format_version": FORMAT_VERSION, "model_config": model.config.to_dict(), "model_weight": state, **extra}


def save_checkpoint(path: str, model: SSLModel, **extra: Any) -> None:
    """Write ``model`` (and plain-typed ``extra`` entries) to ``path`` atomically."""
    atomic_save(make_checkpoint(model, **extra), path)


def read_checkpoint(path: str) -> Dict[str, Any]:
    """Load any checkpoint dict with ``weights_only=True``, with an error naming the file on failure."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name and the fix
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: cannot be read as a plain (weights-only) checkpoint ({msg}). If it is a fairseq "
            "checkpoint that pickles Python objects, convert it once with s3prl's converter "
            "(python -m s3prl.upstream.hubert.convert CKPT, on a machine with fairseq) and pass the result."
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def validate_checkpoint(ckpt: Mapping[str, Any], path: str = "checkpoint") -> SSLModelConfig:
    """Check the fields of our format and return the model config."""
    missing = [k for k in ("format_version", "model_config", "model_weight") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not an s3prl-plugins checkpoint (missing {missing})")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {ckpt['format_version']} (this release reads {FORMAT_VERSION})")
    try:
        return SSLModelConfig.from_dict(dict(ckpt["model_config"]))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model_config: {e}") from e


def load_state_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with shape checks first, and errors that say which architecture
    mismatched."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not fit this architecture (missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}): it was saved from another model"
        )
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"{source}: weights of another architecture (shape mismatch: {bad[:3]})")
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str, expect: Optional[str] = None) -> Tuple[SSLModel, Dict[str, Any]]:
    """Rebuild the model of one of our checkpoints.

    Args:
        path: the file.
        expect: if given, the preset/architecture family the caller needs (e.g. ``"star_hubert"``
            for a ``star_hubert_local`` entry); a checkpoint whose config says otherwise is refused.

    Returns:
        ``(model in eval mode, the checkpoint dict)``.
    """
    ckpt = read_checkpoint(path)
    config = validate_checkpoint(ckpt, path)
    if expect is not None and not config_matches(config, expect):
        raise CheckpointError(
            f"{path}: holds a {config.name or config.frontend!r} model ({config.num_layers} layers, width "
            f"{config.embed_dim}, {config.frontend} front-end), not a {expect!r} model"
        )
    model = SSLModel(config)
    load_state_strict(model, ckpt["model_weight"], path)
    return model.eval(), ckpt


def config_matches(config: SSLModelConfig, family: str) -> bool:
    """Whether a config belongs to a model family named by a hub entry."""
    if family in ("melhubert",):
        return config.frontend == "logmel"
    if family in ("star_hubert", "distilhubert", "hubert", "ssl"):
        return config.frontend == "conv"
    return True
