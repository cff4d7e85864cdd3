"""Frame targets for masked prediction: k-means codes of MFCC / log-Mel frames (iteration 1) or of a
hidden layer of the previous model (iteration 2), at the model's frame rate.

Features at 100 Hz (MFCC: Kaldi 13 + deltas + delta-deltas; fbank: 40 log-Mel, MelHuBERT's input)
are reduced to the model's rate by keeping every ``frame_step``-th frame starting at the first:
HuBERT's CNN frame ``i`` covers samples ``[320 i, 320 i + 400)``, exactly the 100 Hz frame ``2 i``;
MelHuBERT-20ms predicts ``c_1, c_3, ...`` (Lin et al. §II-A). Clustering is scikit-learn's
MiniBatchKMeans on a random subset of frames.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from s3prl_plugins.data.audio import load_audio
from s3prl_plugins.data.dataset import write_labels
from s3prl_plugins.data.kaldi import read_data_dir

logger = logging.getLogger(__name__)


def acoustic_features(wav: Tensor, kind: str) -> Tensor:
    """(samples,) 16 kHz -> (frames at 100 Hz, dim): ``mfcc`` (39) or ``fbank`` (40)."""
    import torchaudio

    x = wav[None] * 32768.0
    if kind == "mfcc":
        mfcc = torchaudio.compliance.kaldi.mfcc(x, num_ceps=13, dither=0.0, energy_floor=0.0, sample_frequency=16000.0)
        d1 = torchaudio.functional.compute_deltas(mfcc.T[None])[0]
        d2 = torchaudio.functional.compute_deltas(d1[None])[0]
        return torch.cat([mfcc.T, d1, d2], dim=0).T
    if kind == "fbank":
        return torchaudio.compliance.kaldi.fbank(
            x, num_mel_bins=40, dither=0.0, energy_floor=0.0, sample_frequency=16000.0
        )
    raise ValueError(f"feature kind must be mfcc or fbank, not {kind!r}")


class FeatureReader:
    """Frames of one utterance at the model's rate: acoustic features or a hidden layer of a model."""

    def __init__(self, kind: str, frame_step: int = 1, ckpt: Optional[str] = None, layer: Optional[int] = None):
        self.kind, self.frame_step, self.layer = kind, frame_step, layer
        self.model = None
        if kind == "hidden":
            from s3prl_plugins.models.loading import load_pretrained

            if ckpt is None or layer is None:
                raise ValueError("hidden-layer features need ckpt and layer")
            self.model = load_pretrained(ckpt)
            if not 0 <= layer <= self.model.config.num_layers:
                raise ValueError(f"layer {layer} out of range 0..{self.model.config.num_layers}")

    @torch.no_grad()
    def __call__(self, wav: Tensor) -> np.ndarray:
        if self.model is not None:
            out = self.model(wav[None], num_layers=max(self.layer, 1))
            feats = out.hidden_states[self.layer][0]
        else:
            feats = acoustic_features(wav, self.kind)
        return feats[:: self.frame_step].numpy().astype("float32")


def fit_kmeans(frames: np.ndarray, k: int, seed: int = 0, batch_size: int = 10000):
    from sklearn.cluster import MiniBatchKMeans

    if frames.shape[0] < k:
        raise ValueError(f"{frames.shape[0]} frames cannot make {k} clusters")
    km = MiniBatchKMeans(
        n_clusters=k, random_state=seed, batch_size=min(batch_size, frames.shape[0]), n_init=3, max_iter=100
    )
    km.fit(frames)
    return km


def make_targets(
    train_dir: str,
    out_dir: str,
    kind: str = "mfcc",
    num_clusters: int = 100,
    frame_step: int = 2,
    label_dirs: Sequence[str] = (),
    ckpt: Optional[str] = None,
    layer: Optional[int] = None,
    max_frames: int = 200_000,
    seed: int = 0,
    progress: bool = True,
) -> Dict[str, object]:
    """Fit k-means on ``train_dir``'s frames and write labels for it and every dir in ``label_dirs``.

    Writes ``out_dir/centroids.npy``, ``out_dir/<name>.km`` (``utt l1 l2 ...`` per line, one file per
    data dir, named after its folder) and ``out_dir/info.json``.
    """
    from tqdm import tqdm

    reader = FeatureReader(kind, frame_step, ckpt, layer)
    rng = np.random.default_rng(seed)
    train = read_data_dir(train_dir)
    feats: Dict[str, np.ndarray] = {}
    for utt in tqdm(train.utts, desc=f"{kind} features of {train_dir} (k-means)", unit="utt", disable=not progress):
        feats[utt] = reader(load_audio(train.wav[utt]))
    allf = np.concatenate(list(feats.values()))
    if allf.shape[0] > max_frames:
        allf = allf[rng.choice(allf.shape[0], max_frames, replace=False)]
    km = fit_kmeans(allf, num_clusters, seed)
    os.makedirs(out_dir, exist_ok=True)
    np.save(os.path.join(out_dir, "centroids.npy"), km.cluster_centers_.astype("float32"))
    info: Dict[str, object] = {
        "kind": kind,
        "clusters": num_clusters,
        "frame_step": frame_step,
        "layer": layer,
        "ckpt": ckpt,
        "inertia_per_frame": float(km.inertia_) / allf.shape[0],
    }
    for d in [train_dir, *label_dirs]:
        data = read_data_dir(d)
        labels: Dict[str, List[int]] = {}
        for utt in tqdm(data.utts, desc=f"k-means labels of {d}", unit="utt", disable=not progress):
            f = feats[utt] if (d == train_dir and utt in feats) else reader(load_audio(data.wav[utt]))
            labels[utt] = km.predict(f).tolist()
        write_labels(os.path.join(out_dir, os.path.basename(os.path.normpath(d)) + ".km"), labels)
        counts = np.bincount(np.concatenate([np.asarray(v) for v in labels.values()]), minlength=num_clusters)
        p = counts / counts.sum()
        info[f"perplexity_{os.path.basename(os.path.normpath(d))}"] = float(
            np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())
        )
    with open(os.path.join(out_dir, "info.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info
