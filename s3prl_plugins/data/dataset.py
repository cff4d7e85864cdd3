"""Datasets and batching over Kaldi data dirs: audio (+ frame labels), random crops, length bucketing.

One dataset class serves every objective: it yields waveforms and, when a label file is given, the
frame-level targets aligned to them. Batches are formed by total audio seconds (``batch_seconds``)
over utterances sorted into buckets of similar length, shuffled per epoch from a seed, and sharded
across DDP ranks -- so an epoch's order is a pure function of (seed, epoch) and resumes exactly.
"""

from __future__ import annotations

import logging
import math
import os
import random
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset, Sampler

from s3prl_plugins.data.audio import AudioError, load_audio
from s3prl_plugins.data.kaldi import DataDir, read_data_dir

logger = logging.getLogger(__name__)


def read_labels(path: str) -> Dict[str, List[int]]:
    """``utt l1 l2 ...`` per line (frame labels at the model's frame rate)."""
    out: Dict[str, List[int]] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                out[parts[0]] = [int(x) for x in parts[1:]]
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: labels must be integers") from e
    return out


def write_labels(path: str, labels: Dict[str, Sequence[int]]) -> None:
    import os

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for utt in sorted(labels):
            f.write(utt + " " + " ".join(str(int(x)) for x in labels[utt]) + "\n")
    os.replace(tmp, path)


class AudioDataset(Dataset):
    """Utterances of a data dir, optionally with frame labels.

    Args:
        data_dir: a Kaldi data dir (``wav.scp``, ``utt2dur``).
        labels: ``{utt: frame labels}``; utterances without labels are dropped with a count logged.
        max_seconds: random crop length during training (None: whole utterances).
        frame_stride: samples per label frame (to crop labels with the audio).
        min_samples: shorter utterances are dropped (listed in ``skipped``).
    """

    def __init__(
        self,
        data_dir: str,
        labels: Optional[Dict[str, List[int]]] = None,
        max_seconds: Optional[float] = None,
        frame_stride: int = 320,
        min_samples: int = 400,
        utts: Optional[Sequence[str]] = None,
    ):
        self.dir: DataDir = read_data_dir(data_dir)
        keep = list(utts) if utts is not None else self.dir.utts
        self.skipped: List[str] = []
        if labels is not None:
            missing = [u for u in keep if u not in labels]
            if missing:
                logger.warning(
                    "%s: %d utterance(s) have no labels and are left out, e.g. %s", data_dir, len(missing), missing[:3]
                )
                self.skipped += missing
            keep = [u for u in keep if u in labels]
        durs = self.dir.utt2dur
        if durs:
            short = [u for u in keep if durs[u] * 16000 < min_samples]
            self.skipped += short
            keep = [u for u in keep if u not in set(short)]
        self.utts = keep
        self.labels = labels
        self.max_samples = int(max_seconds * 16000) if max_seconds else None
        self.frame_stride = frame_stride
        self.min_samples = min_samples
        self.epoch = 0
        self.seed = 0

    def __len__(self) -> int:
        return len(self.utts)

    def duration(self, i: int) -> float:
        d = self.dir.utt2dur.get(self.utts[i])
        return min(d, self.max_samples / 16000) if (d and self.max_samples) else (d or 1.0)

    def __getitem__(self, i: int) -> Dict[str, object]:
        utt = self.utts[i]
        try:
            wav = load_audio(self.dir.wav[utt], min_samples=self.min_samples)
        except AudioError as e:  # e.g. corrupt mid-file: name it and let collate leave it out
            logger.warning("skipping utterance %s: %s", utt, e)
            return {"utt": utt, "error": str(e)}
        labels = torch.tensor(self.labels[utt], dtype=torch.long) if self.labels is not None else None
        if self.max_samples and wav.numel() > self.max_samples:
            # crop on a label-frame boundary, deterministic for (seed, epoch, utterance)
            rng = random.Random(f"{self.seed}-{self.epoch}-{utt}")
            n_frames = (wav.numel() - self.max_samples) // self.frame_stride
            start = rng.randint(0, n_frames) * self.frame_stride
            wav = wav[start : start + self.max_samples]
            if labels is not None:
                f0 = start // self.frame_stride
                labels = labels[f0 : f0 + self.max_samples // self.frame_stride + 1]
        return {"utt": utt, "wav": wav, "labels": labels}


def collate(items: List[Dict[str, object]]) -> Dict[str, object]:
    """Pad waveforms (and labels with -100, the ignore index) into a batch with lengths.

    Utterances the dataset could not read are left out and listed in ``batch["skipped"]`` as
    ``(utt, reason)`` (the trainer counts them); a batch with none left raises :class:`AudioError`.
    """
    skipped = [(it["utt"], it["error"]) for it in items if "error" in it]
    items = [it for it in items if "error" not in it]
    if not items:
        raise AudioError(
            f"every utterance of a batch is unreadable: {skipped[:3]}; re-run data preparation (it checks "
            "each file) or remove them from wav.scp"
        )
    wavs = [it["wav"] for it in items]
    batch: Dict[str, object] = {
        "utts": [it["utt"] for it in items],
        "wavs": torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True),
        "lengths": torch.tensor([w.numel() for w in wavs], dtype=torch.long),
        "skipped": skipped,
    }
    if items[0]["labels"] is not None:
        batch["labels"] = torch.nn.utils.rnn.pad_sequence(
            [it["labels"] for it in items], batch_first=True, padding_value=-100
        )
    return batch


class BucketBatchSampler(Sampler[List[int]]):
    """Batches of similar-length utterances holding at most ``batch_seconds`` of audio (padded), in an
    order that depends only on (seed, epoch), split across ``num_replicas`` ranks (every rank gets
    the same number of batches)."""

    def __init__(
        self,
        durations: Sequence[float],
        batch_seconds: float,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        max_batch_size: int = 1000,
    ):
        self.durations = list(durations)
        self.batch_seconds = batch_seconds
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.max_batch_size = max_batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> List[List[int]]:
        order = sorted(range(len(self.durations)), key=lambda i: self.durations[i])
        batches, cur, longest = [], [], 0.0
        for i in order:
            longest_new = max(longest, self.durations[i])
            if cur and (longest_new * (len(cur) + 1) > self.batch_seconds or len(cur) >= self.max_batch_size):
                batches.append(cur)
                cur, longest_new = [], self.durations[i]
            cur.append(i)
            longest = longest_new
        if cur:
            batches.append(cur)
        if self.shuffle:
            rng = random.Random(self.seed * 100003 + self.epoch)
            rng.shuffle(batches)
        n = int(math.ceil(len(batches) / self.num_replicas)) * self.num_replicas
        batches += batches[: n - len(batches)]  # pad so every rank has as many batches
        return batches[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[List[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


# ----------------------------------------------------------------- the trainers' data, from a data section
def split_dataset(
    data: Mapping[str, Any],
    split: str,
    labels: Optional[Dict[str, List[int]]] = None,
    *,
    frame_stride: int,
    min_samples: int,
) -> Optional[AudioDataset]:
    """``data[split]`` (a config's ``data`` section: Kaldi dirs under ``train`` / ``valid``) as a dataset:
    ``train`` cropped to ``data.max_seconds`` (default 8; None: whole utterances), other splits whole;
    ``labels``: per-utterance k-means codes or frame labels. None when the section has no such split. The
    one builder of pre-training, distillation and the compression chain's recovery runs."""
    if not data.get(split):
        return None
    max_seconds = data.get("max_seconds", 8.0) if split == "train" else None
    return AudioDataset(str(data[split]), labels, max_seconds, frame_stride=frame_stride, min_samples=min_samples)


def batch_loader(
    dataset: AudioDataset,
    data: Mapping[str, Any],
    *,
    shuffle: bool,
    seed: int = 0,
    shard: bool = True,
) -> Tuple[AudioDataset, "BucketBatchSampler", Callable]:
    """What the trainer takes for one split, ``(dataset, batch sampler, collate)``: batches of similar-length
    utterances holding at most ``data.batch_seconds`` of audio (default 60) and ``data.batch_size``
    utterances (default 1000), shuffled by ``seed`` or in order; one shard per torchrun rank (``RANK`` /
    ``WORLD_SIZE``), or the whole split with ``shard=False`` (a job of one process)."""
    rank, world = (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))) if shard else (0, 1)
    sampler = BucketBatchSampler(
        [dataset.duration(i) for i in range(len(dataset))],
        float(data.get("batch_seconds", 60.0)),
        shuffle=shuffle,
        seed=seed,
        num_replicas=world,
        rank=rank,
        max_batch_size=int(data.get("batch_size", 1000)),
    )
    return dataset, sampler, collate
