"""Load any supported checkpoint into an :class:`SSLModel`.

Sources (:func:`load_pretrained`):

* an s3prl hub name of a teacher -- ``hubert_base``, ``wav2vec2`` (``wav2vec2_base_960``),
  ``wavlm_base`` -- fetched through s3prl's own download cache (offline: a clear error, or the
  cached file when it is there);
* a checkpoint file: ours, the published STaRHuBERT Lightning ``.ckpt`` (with its ``.yaml``), s3prl
  ``hubert_local`` / ``wav2vec2_local`` / ``wavlm_local`` / ``distiller_local``, or a fairseq checkpoint
  with plain-typed contents;
* a Hugging Face ``transformers`` model folder (HuBERT, wav2vec 2.0, WavLM).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Tuple

from s3prl_plugins.config import nearest
from s3prl_plugins.models import convert
from s3prl_plugins.models.checkpoint import CheckpointError, load_state_strict, read_checkpoint, validate_checkpoint
from s3prl_plugins.models.config import SSLModelConfig
from s3prl_plugins.models.ssl_model import SSLModel

logger = logging.getLogger(__name__)

# s3prl 0.4.18's own URLs for its converted (non-legacy) checkpoints, and the format of each.
HUB_CHECKPOINTS: Dict[str, Tuple[str, str]] = {
    "hubert_base": ("https://huggingface.co/s3prl/converted_ckpts/resolve/main/hubert_base_ls960.pt", "s3prl_hubert"),
    "hubert": ("https://huggingface.co/s3prl/converted_ckpts/resolve/main/hubert_base_ls960.pt", "s3prl_hubert"),
    "wav2vec2": ("https://huggingface.co/s3prl/converted_ckpts/resolve/main/wav2vec_small.pt", "s3prl_wav2vec2"),
    "wav2vec2_base_960": (
        "https://huggingface.co/s3prl/converted_ckpts/resolve/main/wav2vec_small.pt",
        "s3prl_wav2vec2",
    ),
    "wavlm_base": ("https://huggingface.co/s3prl/converted_ckpts/resolve/main/wavlm_base.pt", "s3prl_wavlm"),
}

OFFLINE_ENV = "S3PRL_PLUGINS_OFFLINE"


class OfflineError(RuntimeError):
    """A hub checkpoint is needed but cannot be downloaded here."""


def offline() -> bool:
    return any(os.environ.get(v, "0") not in ("", "0") for v in (OFFLINE_ENV, "HF_HUB_OFFLINE"))


def hub_checkpoint_path(name: str, refresh: bool = False) -> str:
    """Local path of an s3prl hub teacher's checkpoint, downloading it through s3prl if needed."""
    from s3prl.util.download import _urls_to_filepaths

    url, _ = HUB_CHECKPOINTS[name]
    cached = _urls_to_filepaths(url, download=False)
    if os.path.isfile(cached) and not refresh:
        return cached
    how = (
        f"download it on a machine with internet ({url}) and pass the file instead, e.g. "
        f"`--teacher /path/to/{os.path.basename(url)}` (any s3prl/fairseq/Hugging Face checkpoint works), "
        f"or copy it to s3prl's cache as {cached}"
    )
    if offline():
        raise OfflineError(f"{name}: not in s3prl's cache and downloads are off ({OFFLINE_ENV}/HF_HUB_OFFLINE); {how}")
    try:
        return _urls_to_filepaths(url, refresh=refresh)
    except Exception as e:  # noqa: BLE001 - any network failure becomes one actionable message
        logger.debug("%s: download failed", name, exc_info=True)  # the traceback, for who asks for it
        raise OfflineError(f"{name}: cannot download the checkpoint ({type(e).__name__}: {e}); {how}") from None


def published_model_config(path: str, obj: Dict[str, Any], model_config: Optional[str]) -> Optional[Dict[str, Any]]:
    """The ``distiller:`` section for a published STaRHuBERT checkpoint: from ``model_config``, else
    from the checkpoint's Lightning hyper-parameters, else from a ``.yaml`` of the same name beside it."""
    from s3prl_plugins.models.convert.star_lightning import distiller_from_checkpoint, read_distiller_yaml

    if model_config:
        return read_distiller_yaml(model_config)
    saved = distiller_from_checkpoint(obj)
    if saved is not None:
        return saved
    sibling = os.path.splitext(path)[0] + ".yaml"
    if os.path.isfile(sibling):
        logger.info("%s: architecture from %s", path, sibling)
        return read_distiller_yaml(sibling)
    return None


def convert_checkpoint(
    obj: Dict[str, Any], path: str, keep_head: bool = False, model_config: Optional[str] = None
) -> Tuple[SSLModelConfig, Dict[str, Any]]:
    """(config, state) of a loaded checkpoint dict of any supported format.

    ``model_config``: the published ``.yaml`` of a STaRHuBERT Lightning checkpoint (other formats
    carry their architecture and ignore it)."""
    fmt = convert.detect_format(obj)
    if fmt == "star_lightning":
        from s3prl_plugins.models.convert.star_lightning import from_star_lightning

        return from_star_lightning(obj, published_model_config(path, obj, model_config), source=path)
    if fmt == "ours":
        config = validate_checkpoint(obj, path)
        state = dict(obj["model_weight"])
        if not keep_head and config.head is not None:
            config = config.replace(head=None, mask_embedding=False)
            state = {k: v for k, v in state.items() if not (k.startswith("head.") or k == "mask_emb")}
        return config, state
    if fmt in convert.READERS:
        return convert.READERS[fmt](obj, keep_head)
    raise CheckpointError(
        f"{path}: unrecognised checkpoint (top-level keys {sorted(obj)[:8]}); expected ours "
        "{format_version, model_config, model_weight}, the published STaRHuBERT Lightning .ckpt, "
        "s3prl hubert/wav2vec2/wavlm/distiller, or fairseq"
    )


def model_from_checkpoint(
    obj: Dict[str, Any], path: str, keep_head: bool = False, model_config: Optional[str] = None
) -> SSLModel:
    """The model (eval mode) of a checkpoint dict already read from ``path`` (any supported format)."""
    config, state = convert_checkpoint(obj, path, keep_head=keep_head, model_config=model_config)
    model = SSLModel(config)
    load_state_strict(model, state, path)
    logger.info("loaded %s (%s, %d layers, width %d)", path, config.name, config.num_layers, config.embed_dim)
    return model.eval()


def load_pretrained(
    source: str, refresh: bool = False, keep_head: bool = False, model_config: Optional[str] = None
) -> SSLModel:
    """Build a model with pre-trained weights from a hub name, a checkpoint file or a HF folder.

    Args:
        source: see the module docstring.
        refresh: re-download a hub checkpoint.
        keep_head: keep pre-training heads (HuBERT's ``final_proj``/label embeddings, DistilHuBERT's
            prediction heads) instead of dropping them.
        model_config: the published ``.yaml`` of a STaRHuBERT Lightning ``.ckpt`` (optional when the
            checkpoint's hyper-parameters hold it, or a ``.yaml`` of the same name lies beside it).

    Returns:
        The model in eval mode.
    """
    if source in HUB_CHECKPOINTS and not os.path.exists(source):
        path = hub_checkpoint_path(source, refresh)
    else:
        path = source
    if os.path.isdir(path):
        config, state = convert.from_transformers(path)
    elif os.path.isfile(path):
        return model_from_checkpoint(read_checkpoint(path), path, keep_head=keep_head, model_config=model_config)
    elif os.sep in source or os.path.splitext(source)[1]:  # meant as a path: say that it is not there
        parent = os.path.dirname(os.path.abspath(source))
        where = "" if os.path.isdir(parent) else f" (nor is its folder {parent})"
        raise CheckpointError(
            f"{source}: no such file{where}: give an existing checkpoint or Hugging Face folder -- a recipe's "
            f"model is exp/NAME/model.pt once its training stage has run -- or a hub name "
            f"({', '.join(sorted(HUB_CHECKPOINTS))})"
        )
    else:
        raise CheckpointError(
            f"{source!r} is neither a checkpoint file, a Hugging Face model folder, nor a hub name "
            f"({', '.join(sorted(HUB_CHECKPOINTS))}){nearest(source, HUB_CHECKPOINTS)}"
        )
    model = SSLModel(config)
    load_state_strict(model, state, path)
    logger.info("loaded %s (%s, %d layers, width %d)", path, config.name, config.num_layers, config.embed_dim)
    return model.eval()
