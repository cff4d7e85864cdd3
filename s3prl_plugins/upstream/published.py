"""The published STaRHuBERT checkpoints, downloaded once into s3prl's download cache.

The STaR authors (Jang, Kim and Kim, ICASSP 2024) publish a ``.ckpt`` + ``.yaml`` pair per model on
Google Drive, linked from the README of ``sungnyun/ARMHuBERT`` (section "STaR", "Checkpoints"); all are
distilled from HuBERT BASE:

==============  =======  =================================  =================================
entry           params   ckpt (Google Drive file id)         yaml
==============  =======  =================================  =================================
star_hubert_l   26.6 M   1La5jh0jPv-JCk2ECT2raRHtXMYYJNtsF  1NpHhMVj7EE1Sx5eG3tX5fMCa4UUlrnwI
star_hubert     22.3 M   1Zu1idRx-sVaqMvRsUKtttzkSn4df6TUr  1C6ZcYM4Fcxj0vurid5N02BAANj4smr8U
star_hubert_s   14.1 M   1sUpbDupbDtlCvN-49TblUn8GDmhV8MT8  1OFjIo1UjxNrxEboKaT8Z-vtuL6xmyNsu
==============  =======  =================================  =================================

STaRHuBERT-XS (9.39 M): the README links the very same two files as STaRHuBERT-S, so which file is
XS cannot be told; ``star_hubert_xs`` says so instead of guessing.

The files go into s3prl's download folder (``s3prl.util.download.get_dir()``) under readable names:
downloaded with ``gdown`` (Drive answers a plain GET of a file this size with a virus-scan page) to a
temporary file, checked (a checkpoint, a yaml with ``distiller:``, not an HTML page) and renamed into
place under a file lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zipfile
from dataclasses import dataclass
from typing import Dict, Tuple

from s3prl_plugins.models.loading import OfflineError, offline

logger = logging.getLogger(__name__)

CACHE_SUBDIR = "star_hubert"


@dataclass(frozen=True)
class PublishedCheckpoint:
    entry: str
    title: str
    params: str
    ckpt_id: str
    yaml_id: str


PUBLISHED: Dict[str, PublishedCheckpoint] = {
    p.entry: p
    for p in (
        PublishedCheckpoint(
            "star_hubert_l",
            "STaRHuBERT-L",
            "26.6 M",
            "1La5jh0jPv-JCk2ECT2raRHtXMYYJNtsF",
            "1NpHhMVj7EE1Sx5eG3tX5fMCa4UUlrnwI",
        ),
        PublishedCheckpoint(
            "star_hubert",
            "STaRHuBERT",
            "22.3 M",
            "1Zu1idRx-sVaqMvRsUKtttzkSn4df6TUr",
            "1C6ZcYM4Fcxj0vurid5N02BAANj4smr8U",
        ),
        PublishedCheckpoint(
            "star_hubert_s",
            "STaRHuBERT-S",
            "14.1 M",
            "1sUpbDupbDtlCvN-49TblUn8GDmhV8MT8",
            "1OFjIo1UjxNrxEboKaT8Z-vtuL6xmyNsu",
        ),
    )
}


class NotIdentifiable(LookupError):
    """A published checkpoint that cannot be told apart from another one (not a download problem)."""


XS_NOTE = (
    "STaRHuBERT-XS (9.39 M): the README of sungnyun/ARMHuBERT links the same ckpt and yaml "
    f"({PUBLISHED['star_hubert_s'].ckpt_id}, {PUBLISHED['star_hubert_s'].yaml_id}) for STaRHuBERT-S "
    "and STaRHuBERT-XS, so the XS weights are not identifiable; s3prl-plugins does not guess. Use "
    "s3prl.hub.star_hubert_s() for those files, or star_hubert_local(ckpt=XS.ckpt, model_config=XS.yaml) "
    "with files the authors confirm are XS."
)


class DownloadError(RuntimeError):
    """A download finished but did not give the expected file."""


def view_url(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view"


def download_url(file_id: str) -> str:
    return f"https://drive.google.com/uc?id={file_id}"


def cache_dir() -> str:
    from s3prl.util.download import get_dir

    return os.path.join(str(get_dir()), CACHE_SUBDIR)


def cache_paths(entry: str) -> Tuple[str, str]:
    """Where ``entry``'s ``.ckpt`` and ``.yaml`` live in s3prl's download cache."""
    p = PUBLISHED[entry]
    folder = cache_dir()
    return (
        os.path.join(folder, f"{p.title}.{p.ckpt_id}.ckpt"),
        os.path.join(folder, f"{p.title}.{p.yaml_id}.yaml"),
    )


def _check_not_a_web_page(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise DownloadError(
            f"{path}: Google Drive returned a web page, not the file (quota exceeded or access denied?)"
        )


def _check_ckpt(path: str) -> None:
    _check_not_a_web_page(path)
    with open(path, "rb") as f:
        head = f.read(1)
    if not (zipfile.is_zipfile(path) or head == b"\x80"):
        raise DownloadError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")


def _check_yaml(path: str) -> None:
    from s3prl_plugins.models.convert.star_lightning import read_distiller_yaml

    _check_not_a_web_page(path)
    try:
        read_distiller_yaml(path)
    except ValueError as e:
        raise DownloadError(str(e)) from e


def _fetch_one(file_id: str, dest: str, refresh: bool, check) -> None:
    import gdown
    from filelock import FileLock

    os.makedirs(os.path.dirname(dest), exist_ok=True)
    lock = dest + ".lock"
    try:
        with FileLock(lock):
            if os.path.isfile(dest) and not refresh:
                return
            tmp = f"{dest}.part-{os.getpid()}"
            try:
                logger.info("downloading %s -> %s", download_url(file_id), dest)
                out = gdown.download(id=file_id, output=tmp, quiet=False, use_cookies=False)
                if out is None or not os.path.isfile(tmp):
                    raise DownloadError(f"gdown could not download {download_url(file_id)}")
                check(tmp)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    finally:
        # no 0-byte lock files left in s3prl's download folder. A process that was waiting on the removed
        # file and one that creates a new one may then both download: harmless, each writes its own
        # .part-<pid> and renames it atomically.
        with contextlib.suppress(OSError):
            os.unlink(lock)


def offline_message(entry: str, reason: str) -> str:
    p = PUBLISHED[entry]
    ckpt, yml = cache_paths(entry)
    return (
        f"{entry}: cannot download the published {p.title} ({p.params}) checkpoint: {reason}. On a machine "
        f"with internet, download\n  {view_url(p.ckpt_id)}  (ckpt, Google Drive id {p.ckpt_id})\n  "
        f"{view_url(p.yaml_id)}  (yaml, Google Drive id {p.yaml_id})\n(e.g. `gdown {p.ckpt_id}`), then either "
        f"copy them to s3prl's cache as\n  {ckpt}\n  {yml}\nand call s3prl.hub.{entry}() again, or load them "
        f"directly: s3prl.hub.star_hubert_local(ckpt=PATH.ckpt, model_config=PATH.yaml) "
        f"(run_downstream.py -u star_hubert_local -k PATH.ckpt -g PATH.yaml)."
    )


def fetch(entry: str, refresh: bool = False) -> Tuple[str, str]:
    """Local paths of ``entry``'s published ``.ckpt`` and ``.yaml``, downloading what is not cached.

    Raises:
        OfflineError: downloads are off (``S3PRL_PLUGINS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``) or failed;
            the message names the URLs, the exact cache paths and the ``star_hubert_local`` alternative.
    """
    if entry not in PUBLISHED:
        raise KeyError(f"{entry!r}: published checkpoints are {sorted(PUBLISHED)}")
    p = PUBLISHED[entry]
    ckpt, yml = cache_paths(entry)
    if not refresh and os.path.isfile(ckpt) and os.path.isfile(yml):
        logger.info("%s: using the cached %s and %s", entry, ckpt, yml)
        return ckpt, yml
    if offline():
        raise OfflineError(offline_message(entry, "downloads are off (S3PRL_PLUGINS_OFFLINE / HF_HUB_OFFLINE)"))
    try:
        _fetch_one(p.yaml_id, yml, refresh, _check_yaml)
        _fetch_one(p.ckpt_id, ckpt, refresh, _check_ckpt)
    except Exception as e:  # noqa: BLE001 - any network or Drive failure becomes one actionable message
        # the cause is in the message; its traceback (dozens of lines of urllib) only at debug level
        logger.debug("%s: download failed", entry, exc_info=True)
        raise OfflineError(offline_message(entry, f"{type(e).__name__}: {e}")) from None
    return ckpt, yml
