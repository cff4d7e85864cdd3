"""The recipe's input pipeline: audio seconds per second its DataLoader delivers, against what one
distillation update consumes.

Builds a LibriSpeech-layout folder of FLAC files (speech-like: a formant-filtered pulse train with
pauses and noise, 16 kHz, 16 bit; lengths drawn like train-clean-100's, 2-24.5 s), prepares it with the
library's own ``prepare_librispeech``, and reads it through exactly what ``bin/distill`` builds from
``egs/librispeech/star/conf/star.yaml``: ``AudioDataset`` (random 15.6 s crops), ``BucketBatchSampler``
(12 utterances / 190 s per batch) and the trainer's ``make_loader`` -- once with ``num_workers=0``
(decoding in the training process, the baseline) and with the worker counts asked for.

    python bench/bench_input_pipeline.py                       # 0, 1, 2 workers (this machine has 2 cores)
    python bench/bench_input_pipeline.py --workers 0 4 8 --hours 2

The consumption figure is the H100 bf16 STaRHuBERT update of bench/RESULTS.md (1,162 audio s / s,
padded batches); pass ``--consumed`` for another. "training s/s" holds each batch for as long as that
update takes (the GPU computes, the CPU waits), so it is what a run would achieve; "GPU busy" is its
ratio to the consumption.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def speech_like(seconds: float, rng: np.random.Generator, rate: int = 16000) -> np.ndarray:
    """Voiced segments (a pulse train through two formant resonators) with pauses, plus noise: FLAC
    compresses it about as well as read speech (white noise would be the incompressible worst case)."""
    from scipy.signal import lfilter

    n = int(seconds * rate)
    out = np.zeros(n)
    t = 0
    while t < n:
        seg = int(rng.uniform(0.1, 0.4) * rate)
        if rng.random() < 0.8:
            f0 = rng.uniform(90, 220)
            pulses = np.zeros(seg)
            pulses[:: max(1, int(rate / f0))] = 1.0
            x = pulses
            for f in (rng.uniform(300, 900), rng.uniform(900, 2500)):
                r = 0.97
                x = lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * f / rate), r * r], x)
            out[t : t + seg] = x[: n - t] / (np.abs(x).max() + 1e-9) * rng.uniform(0.2, 0.6)
        t += seg
    out += rng.standard_normal(n) * 0.003
    return np.clip(out, -1, 1)


def make_corpus(root: str, hours: float, seed: int = 0) -> float:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    total, i = 0.0, 0
    while total < hours * 3600:
        spk, ch = 100 + i // 50, 1
        folder = os.path.join(root, "train-clean-100", str(spk), str(ch))
        os.makedirs(folder, exist_ok=True)
        dur = float(np.clip(rng.normal(12.7, 3.5), 2.0, 24.5))  # train-clean-100: mean 12.7 s
        utt = f"{spk}-{ch}-{i % 50:04d}"
        sf.write(os.path.join(folder, f"{utt}.flac"), speech_like(dur, rng), 16000, subtype="PCM_16")
        with open(os.path.join(folder, f"{spk}-{ch}.trans.txt"), "a") as f:
            f.write(f"{utt} HELLO WORLD\n")
        total += dur
        i += 1
    return total


def measure(data_dir: str, conf: dict, workers: int, epochs: int, consumed: float = 0.0) -> float:
    """Audio s / s through the loader; with ``consumed`` > 0 each batch is then held for as long as
    the update takes (``audio seconds / consumed``: the GPU computes while the CPU waits), so the
    figure is what training would achieve: decoding in the training process adds to every update."""
    from s3prl_plugins.data.dataset import AudioDataset, BucketBatchSampler, collate
    from s3prl_plugins.train.trainer import TrainerConfig, make_loader

    data = conf["data"]
    tcfg = TrainerConfig(
        exp_dir=tempfile.mkdtemp(), num_workers=workers, prefetch_factor=conf["trainer"].get("prefetch_factor", 2)
    )
    ds = AudioDataset(data_dir, None, data["max_seconds"], frame_stride=320, min_samples=400)
    sampler = BucketBatchSampler(
        [ds.duration(i) for i in range(len(ds))], data["batch_seconds"], shuffle=True, max_batch_size=data["batch_size"]
    )
    seconds, elapsed = 0.0, 0.0
    for epoch in range(epochs + 1):  # epoch 0 warms the page cache
        start = time.perf_counter()
        got = 0.0
        for batch in make_loader((ds, sampler, collate), epoch, tcfg):
            audio = float(batch["lengths"].sum()) / 16000
            got += audio
            if consumed:
                time.sleep(audio / consumed)
        if epoch > 0:
            seconds += got
            elapsed += time.perf_counter() - start
    return seconds / elapsed


def main() -> int:
    import yaml

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--hours", type=float, default=0.5, help="audio in the synthetic corpus")
    p.add_argument("--epochs", type=int, default=2, help="timed passes over it (after one warm-up pass)")
    p.add_argument(
        "--conf",
        default=os.path.join(os.path.dirname(__file__), "..", "egs", "librispeech", "star", "conf", "star.yaml"),
    )
    p.add_argument("--consumed", type=float, default=1162.0, help="audio s / s one update consumes (H100 STaRHuBERT)")
    args = p.parse_args()
    with open(args.conf) as f:
        conf = yaml.safe_load(f)
    from s3prl_plugins.data.librispeech import prepare_librispeech

    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        total = make_corpus(root, args.hours)
        prepare_librispeech(root, "train-clean-100", os.path.join(root, "data"))
        print(
            f"corpus: {total / 3600:.2f} h of FLAC in {time.perf_counter() - t:.0f} s; {os.cpu_count()} CPUs; "
            f"conf {os.path.relpath(args.conf)}"
        )
        print(f"loader alone, then with each batch held for the update ({args.consumed:.0f} audio s / s):")
        print(f"{'workers':>8}{'loader s/s':>12}{'x w=0':>8}{'training s/s':>14}{'x w=0':>8}{'GPU busy':>10}")
        base = None
        for w in args.workers:
            alone = measure(os.path.join(root, "data"), conf, w, args.epochs)
            fed = measure(os.path.join(root, "data"), conf, w, args.epochs, args.consumed)
            base = base or (alone, fed)
            print(
                f"{w:>8}{alone:>12.0f}{alone / base[0]:>8.2f}{fed:>14.0f}{fed / base[1]:>8.2f}"
                f"{fed / args.consumed:>10.0%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
