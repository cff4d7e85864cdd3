"""Hub entries added to ``s3prl.hub`` (s3prl's contract: ``fn(ckpt, model_config, refresh, **kwargs)``).

=========================  ===============================================================
entry                      what it loads
=========================  ===============================================================
star_hubert                the published STaRHuBERT (22.3 M), downloaded once into s3prl's
                           cache (:mod:`s3prl_plugins.upstream.published`)
star_hubert_l              the published STaRHuBERT-L (26.6 M)
star_hubert_s              the published STaRHuBERT-S (14.1 M)
star_hubert_xs             explains why the published -XS files cannot be told from -S
star_hubert_local          a STaRHuBERT-family checkpoint of ours (any width/depth), or a
                           published ``.ckpt`` with its ``.yaml`` as ``model_config``
star_hubert_url            the same from a URL (downloaded through s3prl's cache)
distilhubert_cif_local     a DistilHuBERT(-CIF) checkpoint of ours
melhubert_local            a MelHuBERT checkpoint of ours (log-Mel front-end)
melhubert_pruned_local     a compressed MelHuBERT (s3prl_plugins.compress: pruned heads / FFN
                           units / layers, replaced heads, weight zeros -- the shape lives in
                           its config; waveform models compressed alike load with star_hubert_local)
onnx_local                 an exported ONNX graph (python -m s3prl_plugins.bin.export, float32
                           or int8) run by onnxruntime: what is deployed, measured by s3prl
=========================  ===============================================================

Every entry takes ``hidden_states="layers"`` for the STaR authors' layout (the layer outputs without
the transformer input); see :class:`~s3prl_plugins.upstream.expert.UpstreamExpert`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import types
from typing import Any, Callable, Dict, Optional

logger = logging.getLogger(__name__)


def _expert(family: Optional[str]):
    def entry(ckpt: Optional[str] = None, model_config: Optional[str] = None, refresh: bool = False, **kwargs: Any):
        from s3prl_plugins.upstream.expert import UpstreamExpert

        return UpstreamExpert(ckpt=ckpt, model_config=model_config, family=family, **kwargs)

    return entry


def _remove_stale_lock(url: str) -> None:
    """The ``.lock`` s3prl's ``_urls_to_filepaths`` leaves beside a download that failed (no file to guard)."""
    from s3prl.util.download import _urls_to_filepaths

    with contextlib.suppress(Exception):  # best effort: the download's own error is the one to report
        target = _urls_to_filepaths(url, download=False)
        if not os.path.exists(target):
            os.unlink(target + ".lock")


def _url_expert(family: Optional[str]):
    def entry(ckpt: str, model_config: Optional[str] = None, refresh: bool = False, **kwargs: Any):
        from s3prl.util.download import _urls_to_filepaths

        from s3prl_plugins.models.loading import OfflineError
        from s3prl_plugins.upstream.expert import UpstreamExpert

        if "://" not in str(ckpt):  # a local file: nothing to download (s3prl would leave a .lock in its cache)
            if not os.path.isfile(str(ckpt)):
                raise OfflineError(
                    f"{ckpt}: not a URL, and no such file; a local checkpoint goes to the *_local entry "
                    "(star_hubert_local(ckpt=PATH))"
                )
            path = str(ckpt)
        else:
            try:
                path = _urls_to_filepaths(ckpt, refresh=refresh)
            except Exception as e:  # noqa: BLE001 - network failure -> one actionable message
                _remove_stale_lock(ckpt)
                logger.debug("%s: download failed", ckpt, exc_info=True)  # the traceback, for who asks for it
                raise OfflineError(
                    f"cannot download {ckpt} ({type(e).__name__}: {e}); download it elsewhere and use the "
                    "*_local entry with ckpt=PATH"
                ) from None
        return UpstreamExpert(ckpt=path, model_config=model_config, family=family, **kwargs)

    return entry


def _published(entry: str):
    def fn(ckpt: Optional[str] = None, model_config: Optional[str] = None, refresh: bool = False, **kwargs: Any):
        from s3prl_plugins.upstream.expert import UpstreamExpert
        from s3prl_plugins.upstream.published import fetch

        if ckpt:  # a local copy of the published pair (e.g. run_downstream -k/-g) wins over the cache
            return UpstreamExpert(ckpt=ckpt, model_config=model_config, family="star_hubert", **kwargs)
        path, yaml_path = fetch(entry, refresh=refresh)
        return UpstreamExpert(ckpt=path, model_config=yaml_path, family="star_hubert", **kwargs)

    return fn


def onnx_local(ckpt: Optional[str] = None, model_config: Optional[str] = None, refresh: bool = False, **kwargs: Any):
    """An exported ONNX graph (float32 or int8) run by onnxruntime."""
    from s3prl_plugins.upstream.onnx_expert import OnnxUpstreamExpert

    return OnnxUpstreamExpert(ckpt=ckpt, model_config=model_config, **kwargs)


def star_hubert_xs(*args: Any, **kwargs: Any):
    """STaRHuBERT-XS: the published links are those of -S, so this explains instead of guessing."""
    from s3prl_plugins.upstream.published import XS_NOTE, NotIdentifiable

    raise NotIdentifiable(XS_NOTE)


def _named(fn: Callable, name: str, doc: str) -> Callable:
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


ENTRIES: Dict[str, Callable] = {
    "star_hubert_local": _named(_expert("star_hubert"), "star_hubert_local", "STaRHuBERT from a local checkpoint"),
    "star_hubert_url": _named(_url_expert("star_hubert"), "star_hubert_url", "STaRHuBERT from a URL"),
    "star_hubert": _named(
        _published("star_hubert"), "star_hubert", "the published STaRHuBERT (22.3 M), downloaded once"
    ),
    "star_hubert_l": _named(
        _published("star_hubert_l"), "star_hubert_l", "the published STaRHuBERT-L (26.6 M), downloaded once"
    ),
    "star_hubert_s": _named(
        _published("star_hubert_s"), "star_hubert_s", "the published STaRHuBERT-S (14.1 M), downloaded once"
    ),
    "star_hubert_xs": star_hubert_xs,
    "distilhubert_cif_local": _named(
        _expert("distilhubert"), "distilhubert_cif_local", "DistilHuBERT(-CIF) from a local checkpoint"
    ),
    "melhubert_local": _named(_expert("melhubert"), "melhubert_local", "MelHuBERT from a local checkpoint"),
    "melhubert_pruned_local": _named(
        _expert("melhubert"), "melhubert_pruned_local", "pruned MelHuBERT from a local checkpoint"
    ),
    "onnx_local": onnx_local,
}


def register(hub: Optional[types.ModuleType] = None) -> None:
    """Add our entries to ``s3prl.hub`` (idempotent; existing entries of the same name are kept)."""
    if hub is None:
        import s3prl.hub as hub  # noqa: PLW0127
    for name, fn in ENTRIES.items():
        current = getattr(hub, name, None)
        if current is None:
            setattr(hub, name, fn)
        elif current is not fn:
            logger.warning("s3prl.hub already has %s; not replacing it", name)
