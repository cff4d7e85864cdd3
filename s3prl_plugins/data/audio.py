"""The one audio loader: reads a file, checks it, and converts it to mono 16 kHz float32.

Conversions are explicit and logged: multi-channel audio is averaged to mono (``mono="mix"``,
default) or refused (``mono="error"``); another sample rate is resampled with
``torchaudio.functional.resample`` (``resample=True``, default) or refused. Empty, unreadable or
too-short files raise :class:`AudioError` naming the file and the fix.
"""

from __future__ import annotations

import logging
import os
from typing import List

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """An audio file that cannot be used as it is."""


def load_audio(
    path: str,
    sample_rate: int = SAMPLE_RATE,
    mono: str = "mix",
    resample: bool = True,
    min_samples: int = 1,
) -> Tensor:
    """Read ``path`` as a mono float32 waveform (samples,) at ``sample_rate``.

    Args:
        path: any format libsndfile reads (wav, flac, ogg, ...).
        sample_rate: the rate models expect (16 kHz).
        mono: ``"mix"`` averages channels, ``"first"`` keeps channel 0, ``"error"`` refuses multi-channel.
        resample: resample other rates (else raise).
        min_samples: refuse shorter audio (e.g. a model's receptive field, 400 samples for HuBERT's CNN).
    """
    import soundfile as sf

    if not os.path.isfile(path):
        raise AudioError(f"{path}: no such audio file")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - libsndfile's errors become one message with the file name
        raise AudioError(f"{path}: cannot decode audio ({e}); is the file corrupt or truncated?") from e
    wav = torch.from_numpy(data.T.copy())  # (channels, samples)
    if wav.size(1) == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if wav.size(0) > 1:
        if mono == "error":
            raise AudioError(f"{path}: {wav.size(0)} channels; models take mono audio (load with mono='mix')")
        logger.info("%s: %d channels -> mono (%s)", path, wav.size(0), mono)
        wav = wav.mean(0, keepdim=True) if mono == "mix" else wav[:1]
    if rate != sample_rate:
        if not resample:
            raise AudioError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz (load with resample=True)")
        import torchaudio

        logger.info("%s: resampling %d Hz -> %d Hz", path, rate, sample_rate)
        wav = torchaudio.functional.resample(wav, rate, sample_rate)
    wav = wav[0]
    if not torch.isfinite(wav).all():
        raise AudioError(f"{path}: contains NaN/Inf samples")
    if wav.numel() < min_samples:
        raise AudioError(
            f"{path}: {wav.numel()} samples ({wav.numel() / sample_rate * 1000:.1f} ms) is shorter than the "
            f"{min_samples} samples the model needs; drop it from the list"
        )
    return wav


def check_audio_file(path: str, tail_seconds: float = 0.1) -> float:
    """Duration in seconds of a readable audio file, checked cheaply for truncation.

    ``soundfile.info`` reads only the header, which a truncated file (a FLAC cut short by a failed
    copy) still has; decoding every file of LibriSpeech 960 h would take ~40 CPU-minutes. So the
    header is read, then the last ``tail_seconds`` are decoded by seeking there: a file whose samples
    end before its header says fails the seek or the read. (Corruption in the middle of a file is
    caught when training reads it: :class:`~s3prl_plugins.data.dataset.AudioDataset` skips it by name.)

    Raises:
        AudioError: unreadable header, no samples, or truncated.
    """
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            frames, rate = f.frames, f.samplerate
            if frames <= 0 or rate <= 0:
                raise AudioError(f"{path}: empty audio (0 samples)")
            tail = min(frames, max(1, int(tail_seconds * rate)))
            f.seek(frames - tail)
            got = f.read(tail, dtype="float32", always_2d=True).shape[0]
    except AudioError:
        raise
    except Exception as e:  # noqa: BLE001 - libsndfile's errors become one message naming the file
        raise AudioError(
            f"{path}: cannot decode the end of the file ({e}); it is truncated or corrupt: copy it again"
        ) from e
    if got < tail:
        raise AudioError(
            f"{path}: truncated (the header says {frames} samples, the data ends {tail - got} samples early); "
            "copy it again"
        )
    return frames / rate


AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "sph", "mp3")


def audio_sample(path: str, utterances: int, seconds: float, option: str = "--calibration") -> List[np.ndarray]:
    """A few utterances of 16 kHz audio as float32 arrays, for measuring a model on (int8 calibration): from a
    Kaldi data dir (its speakers in turn, so that one speaker's voice does not set the ranges), a folder of
    audio files (by name) or one file, each cut to ``seconds``; utterances shorter than a HuBERT frame (400
    samples) are skipped. Another sample rate is refused, not resampled: a deployed graph takes 16 kHz audio,
    and ranges measured through a resampler are not those of what it is given.

    Raises:
        AudioError: nothing there, a file that cannot be read, or a rate other than 16 kHz -- naming
            ``option``, the file and the fix.
    """
    from s3prl_plugins.data.kaldi import DataDirError, read_data_dir

    if not os.path.exists(path):
        raise AudioError(f"{option} {path}: no such data dir or audio file (give the recipe's dev set, e.g. data/dev)")
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "wav.scp")):
        try:
            d = read_data_dir(path)
        except DataDirError as e:
            raise AudioError(f"{option} {path}: {e}") from e
        by_speaker = list(d.spk2utt.values())
        turns = max(len(u) for u in by_speaker)
        files = [d.wav[u[i]] for i in range(turns) for u in by_speaker if i < len(u)]  # speakers in turn
    elif os.path.isdir(path):
        files = sorted(
            os.path.join(path, f) for f in os.listdir(path) if f.rsplit(".", 1)[-1].lower() in AUDIO_EXTENSIONS
        )
    else:
        files = [path]
    if not files:
        raise AudioError(f"{option} {path}: holds no wav.scp and no audio files (.{', .'.join(AUDIO_EXTENSIONS)})")
    out = []
    for f in files:
        if len(out) == utterances:
            break
        import soundfile as sf

        try:
            rate = sf.info(f).samplerate
        except Exception as e:  # noqa: BLE001 - libsndfile's errors become one message with the file name
            raise AudioError(f"{option}: {f}: cannot decode audio ({e}); is the file corrupt or truncated?") from e
        if rate != SAMPLE_RATE:
            raise AudioError(
                f"{option}: {f}: sample rate {rate} Hz; {option} takes {SAMPLE_RATE // 1000} kHz audio, what the "
                "model is given (resample the data dir first, e.g. with sox)"
            )
        wav = load_audio(f, resample=False)
        if wav.numel() < 400:
            logger.info("%s: %s is %d samples, shorter than a frame: skipped", option, f, wav.numel())
            continue
        out.append(wav[: int(seconds * SAMPLE_RATE)].numpy())
    if not out:
        raise AudioError(f"{option} {path}: every utterance is shorter than a frame (400 samples)")
    return out
