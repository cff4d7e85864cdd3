"""Our checkpoint format: a plain dict, written atomically and read with ``weights_only=True``.

``{"format_version": 1, "model_config": {...}, "model_weight": {...}, ...extra}`` -- no pickled
objects, so ``torch.load(path, weights_only=True)`` reads it and a checkpoint can be inspected with
nothing but torch.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import zipfile
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
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    except OSError as e:  # a read-only or missing folder: name what was to be written, not a temporary name
        raise type(e)(e.errno, f"cannot write {path}: {e.strerror} ({folder}); choose another folder") from e
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would make a shared model.pt unreadable to colleagues
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_full(e):
            raise DiskFullError(
                errno.ENOSPC,
                f"no space left on {folder} while writing {os.path.basename(path)} "
                f"({shutil.disk_usage(folder).free / 2**20:.1f} MiB free); the previous file is intact: "
                "free space and run again",
            ) from e
        raise


class DiskFullError(OSError):
    """A checkpoint could not be written for lack of space (nothing was replaced)."""


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC, or torch's zip writer's own words for it, raised as RuntimeError: "file write failed", or
    "unexpected pos N vs M" (seen on a full tmpfs: the writer's position check fails first)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(e, RuntimeError) and ("write failed" in str(e) or "unexpected pos" in str(e))


def make_checkpoint(model: SSLModel, **extra: Any) -> Dict[str, Any]:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"format_version": FORMAT_VERSION, "model_config": model.config.to_dict(), "model_weight": state, **extra}


def save_checkpoint(path: str, model: SSLModel, **extra: Any) -> None:
    """Write ``model`` (and plain-typed ``extra`` entries) to ``path`` atomically."""
    atomic_save(make_checkpoint(model, **extra), path)


# Objects that training frameworks pickle next to the weights (PyTorch Lightning's hyper-parameter
# dicts and callback paths, omegaconf containers) and that no loader of ours reads. Not argparse.Namespace:
# old fairseq checkpoints keep their architecture in one, so a placeholder would lose what is needed.
# ``torch.load(weights_only=True)`` refuses them; we let them through as :class:`InertObject`
# placeholders -- the real classes are never imported or run, so this stays a weights-only load.
INERT_GLOBALS_ENV = "S3PRL_PLUGINS_INERT_GLOBALS"
INERT_GLOBAL_PREFIXES = (
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "omegaconf.",
    "pathlib.",
)


class InertObject(dict):
    """Stands in for a pickled object a checkpoint holds but no loader needs: it accepts any
    constructor arguments and state and keeps them as data, and runs no code of the original class."""

    _inert_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any):
        return dict.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.__dict__["inert_args"] = args

    def __setstate__(self, state: Any) -> None:
        self.__dict__["inert_state"] = state

    def __repr__(self) -> str:
        return f"<inert {self._inert_name}>"


def _inert_class(full_name: str) -> type:
    return type(f"Inert[{full_name}]", (InertObject,), {"_inert_name": full_name})


def pickled_globals(path: str) -> set:
    """Every ``module.name`` a torch (zip-format) checkpoint's pickle refers to, read without unpickling."""
    import collections
    import pickletools
    import zipfile

    names = set()
    if not zipfile.is_zipfile(path):
        return names
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")]
        if not pkl:
            return names
        data = z.read(pkl[0])
    strings: collections.deque = collections.deque(maxlen=2)  # STACK_GLOBAL (protocol 4+) takes the last two
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":  # torch.save's default protocol 2: "module name"
            names.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL" and len(strings) == 2:
            names.add(f"{strings[0]}.{strings[1]}")
        if isinstance(arg, str):
            strings.append(arg)
    return names


def _foreign_globals(path: str) -> set:
    """The globals of ``path`` that torch's weights-only unpickler does not allow on its own."""
    from torch import _weights_only_unpickler as wo  # private, but the allow-list itself (torch is pinned)

    allowed = set(wo._get_allowed_globals()) | set(wo._get_user_allowed_globals())
    return {n for n in pickled_globals(path) if n not in allowed}


def _is_inert(name: str, extra: set) -> bool:
    return name in extra or any(name == p or name.startswith(p) for p in INERT_GLOBAL_PREFIXES)


def read_checkpoint(path: str) -> Dict[str, Any]:
    """Load any checkpoint dict with ``weights_only=True``, with an error naming the file on failure.

    Bookkeeping objects of training frameworks (see :data:`INERT_GLOBAL_PREFIXES`, and the
    ``S3PRL_PLUGINS_INERT_GLOBALS`` environment variable: comma-separated ``module.Name`` for more)
    are loaded as :class:`InertObject` placeholders; any other pickled object is refused by name.
    """
    if not os.path.isfile(path):
        where = "" if os.path.isabs(path) else f" (looked for {os.path.abspath(path)})"
        raise CheckpointError(f"{path}: no such checkpoint file{where}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name and the fix
        obj = _read_with_inert_globals(path, e)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _read_with_inert_globals(path: str, first_error: Exception) -> Any:
    msg = str(first_error).splitlines()[0] if str(first_error) else type(first_error).__name__
    try:
        foreign = _foreign_globals(path)
    except Exception:  # noqa: BLE001 - not a zip-format torch file: nothing more to try
        foreign = set()
    extra = {n.strip() for n in os.environ.get(INERT_GLOBALS_ENV, "").split(",") if n.strip()}
    refused = sorted(n for n in foreign if not _is_inert(n, extra))
    if refused:
        raise CheckpointError(
            f"{path}: pickles Python objects a weights-only load refuses: {', '.join(refused)}. If they are "
            f"not part of the model's weights (training bookkeeping), load them as inert placeholders with "
            f"{INERT_GLOBALS_ENV}={','.join(refused)} (their code is never run); otherwise convert the "
            "checkpoint to plain data where it was made (a fairseq checkpoint: python -m "
            "s3prl.upstream.hubert.convert CKPT, on a machine with fairseq, and pass the result)."
        ) from first_error
    if not foreign:
        raise CheckpointError(f"{path}: {_not_a_checkpoint(path, msg)}") from first_error
    logger.info("%s: loading %s as inert placeholders", path, ", ".join(sorted(foreign)))
    with torch.serialization.safe_globals([(_inert_class(n), n) for n in sorted(foreign)]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(
                f"{path}: cannot be read even with inert placeholders for {sorted(foreign)}: {e}"
            ) from e


def _not_a_checkpoint(path: str, msg: str) -> str:
    """Why ``path`` cannot be read, with the fix -- never torch's "weights_only=False will likely succeed"
    (an unsafe load is not a fix for a damaged or foreign file)."""
    redownload = "if it was downloaded, download it again (an s3prl hub entry: pass refresh=True)"
    with open(path, "rb") as f:
        head = f.read(64)
    if zipfile.is_zipfile(path):
        return f"a PyTorch file that cannot be read ({msg.split('. In PyTorch')[0]}): {redownload}, or use another copy"
    if head.startswith(b"PK"):
        return (
            f"a truncated or damaged PyTorch file (its zip directory is missing): {redownload}, "
            "or use an earlier checkpoint"
        )
    if head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml", b"{", b"<")):
        return (
            f"not a checkpoint but a text/web page (it starts with {head.lstrip()[:20]!r}): a failed download "
            f"(a login or quota page?); {redownload}"
        )
    if head.startswith(b"\x80"):
        return (
            "a pickle of the legacy (pre-zip) format that a weights-only load cannot read "
            f"({msg.split('. In PyTorch')[0]}). "
            "If it is a fairseq checkpoint, convert it once with s3prl's converter (python -m "
            "s3prl.upstream.hubert.convert CKPT, on a machine with fairseq) and pass the result."
        )
    return f"not a PyTorch checkpoint (it starts with {head[:8]!r}): {redownload}"


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
            f"{source}: weights do not fit this architecture "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}): it was saved from another model"
        )
    bad = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise CheckpointError(f"{source}: weights of another architecture (shape mismatch: {bad[:3]})")
    check_finite(state, source)
    model.load_state_dict(state, strict=True)


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or Inf (a diverged run, a corrupt file): they would give NaN features
    without a word. :class:`CheckpointError` names the tensors."""
    bad = []
    for k, v in state.items():
        if torch.is_tensor(v) and v.is_floating_point():
            n = int(v.numel() - torch.isfinite(v).sum())
            if n:
                bad.append(f"{k} ({n} of {v.numel()})")
    if bad:
        raise CheckpointError(
            f"{source}: {len(bad)} tensor(s) hold NaN or Inf values: {', '.join(bad[:5])}"
            f"{', ...' if len(bad) > 5 else ''}. "
            "The run that wrote it diverged or the file is damaged: use an earlier checkpoint "
            "(checkpoints/step*.pt of the run)."
        )


def load_checkpoint(
    path: str, expect: Optional[str] = None, ckpt: Optional[Dict[str, Any]] = None
) -> Tuple[SSLModel, Dict[str, Any]]:
    """Rebuild the model of one of our checkpoints.

    Args:
        path: the file.
        expect: if given, the preset/architecture family the caller needs (e.g. ``"star_hubert"``
            for a ``star_hubert_local`` entry); a checkpoint whose config says otherwise is refused.
        ckpt: the file's contents when the caller has read them already (:func:`read_checkpoint`).

    Returns:
        ``(model in eval mode, the checkpoint dict)``.
    """
    if ckpt is None:
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
