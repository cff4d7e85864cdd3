"""LibriSpeech (and the mini corpus, which shares its layout) -> Kaldi data directories.

``prepare_librispeech(root, subset, out_dir)`` reads ``root/<subset>/<spk>/<chapter>/*.flac`` (or ``.wav``) and
``*.trans.txt``; every audio file is opened to get its duration and its last 0.1 s decoded (a truncated
FLAC keeps a readable header; :func:`~s3prl_plugins.data.audio.check_audio_file`), and utterances that
cannot be used -- unreadable, truncated, empty, shorter than ``min_seconds``, no transcript, a transcript with
characters outside ``A-Z'`` and space, audio without transcript or transcript without audio -- are
listed with the reason in ``out_dir/skipped.txt`` (and logged), never dropped silently. The data dir
is written atomically.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from typing import Dict, List, Tuple

from s3prl_plugins.data.audio import AudioError, check_audio_file
from s3prl_plugins.data.kaldi import DataDir, DataDirError, write_data_dir

logger = logging.getLogger(__name__)

VALID_TEXT = re.compile(r"^[A-Z' ]+$")


# the audio read beside the transcripts (LibriSpeech is FLAC; a WAV copy is read too, by soundfile)
AUDIO_SUFFIXES = (".flac", ".wav")


def prepare_librispeech(
    root: str, subset: str, out_dir: str, min_seconds: float = 0.1
) -> Tuple[DataDir, List[Tuple[str, str]]]:
    """Write a Kaldi data dir for one LibriSpeech subset.

    Args:
        root: the folder holding ``<subset>/`` (e.g. ``/data/LibriSpeech``).
        subset: e.g. ``train-clean-100``, ``dev-clean`` (or ``train``/``dev``/``test`` in the mini corpus).
        out_dir: the data dir to write.
        min_seconds: shorter utterances are skipped (listed).

    Returns:
        The data dir and the ``(utterance, reason)`` skip list.
    """
    base = os.path.join(root, subset)
    if not os.path.isdir(base):
        raise DataDirError(f"{base}: no such corpus folder (check the LibriSpeech root in db.sh)")
    texts: Dict[str, str] = {}
    for trans in sorted(glob.glob(os.path.join(base, "*", "*", "*.trans.txt"))):
        with open(trans, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    utt, _, text = line.strip().partition(" ")
                    texts[utt] = text.strip()
    audio: Dict[str, str] = {}
    unread: Dict[str, str] = {}  # utterance -> an audio file of a type not read
    for p in sorted(glob.glob(os.path.join(base, "*", "*", "*.*"))):
        utt, ext = os.path.splitext(os.path.basename(p))
        if ext.lower() in AUDIO_SUFFIXES:
            if utt not in audio or ext.lower() == ".flac":  # LibriSpeech's own FLAC wins over a converted copy
                audio[utt] = os.path.abspath(p)
        elif not p.endswith(".trans.txt"):
            unread.setdefault(utt, p)
    if not audio:
        raise DataDirError(f"{base}: no {' or '.join(AUDIO_SUFFIXES)} files under <speaker>/<chapter>/")
    d = DataDir()
    skipped: List[Tuple[str, str]] = []
    for utt in sorted(set(audio) | set(texts)):
        if utt not in audio:
            if utt in unread:
                skipped.append((utt, f"{unread[utt]}: this file type is not read (use {' or '.join(AUDIO_SUFFIXES)})"))
            else:
                skipped.append((utt, "transcript without audio file"))
            continue
        if utt not in texts:
            skipped.append((utt, f"no transcript for {audio[utt]}"))
            continue
        text = texts[utt]
        if not VALID_TEXT.match(text):
            bad = sorted(set(re.sub(r"[A-Z' ]", "", text)))
            skipped.append((utt, f"transcript has characters outside A-Z' : {bad}"))
            continue
        try:
            dur = check_audio_file(audio[utt])
        except AudioError as e:
            skipped.append((utt, f"unreadable audio: {e}"))
            continue
        if dur < min_seconds:
            skipped.append((utt, f"too short ({dur:.3f} s < {min_seconds} s): {audio[utt]}"))
            continue
        spk = utt.split("-")[0]
        d.wav[utt], d.text[utt], d.utt2spk[utt], d.utt2dur[utt] = audio[utt], text, spk, dur
    if not d.wav:
        raise DataDirError(f"{base}: no usable utterance ({len(skipped)} skipped, e.g. {skipped[:2]})")
    write_data_dir(d, out_dir)
    with open(os.path.join(out_dir, "skipped.txt"), "w") as f:
        for utt, reason in skipped:
            f.write(f"{utt} {reason}\n")
    if skipped:
        logger.warning("%s: skipped %d utterance(s), listed in %s/skipped.txt", subset, len(skipped), out_dir)
    return d, skipped
