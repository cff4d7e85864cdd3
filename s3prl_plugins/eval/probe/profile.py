"""Parameters, MACs per second of speech (with and without the CNN), and real-time factor.

MACs are counted by :mod:`s3prl_plugins.models.macs` (``torch.utils.flop_counter``, MACs = FLOPs / 2, over
convolutions, matrix products and attention; our own models on the ``meta`` device, so a whole corpus is
profiled in seconds) -- the one count the compression chain's budgets use too.

SUPERB@SLT's protocol sums MACs over 32 LibriSpeech test-clean utterances of 1-20 s (224.86 s);
without the corpus we use 32 deterministic lengths spread over 1-20 s with the same total
(:func:`superb_like_lengths`), and report MACs per second of speech so any corpus compares.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from s3prl_plugins.models.macs import (  # noqa: F401 - count_macs, register_cpu_attention_flops: re-exported
    count_macs,
    register_cpu_attention_flops,
    ssl_macs,
    superb_like_lengths,
)
from s3prl_plugins.models.ssl_model import SSLModel, count_parameters, zero_weight_macs_per_frame

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


@dataclass
class Profile:
    name: str
    params: int
    params_backbone: int
    macs_total: int
    macs_c_total: Optional[int]
    seconds: float
    macs_per_second: float
    macs_c_per_second: Optional[float]
    rtf_cpu: float
    rtf_gpu: Optional[float]
    num_utterances: int
    frame_rate_hz: Optional[float] = None  # encoder frames per second of speech (ours only)
    # weight pruning's "theoretical" counts (ours only): nonzero parameters, and MACs without the products
    # of the transformer's zero weights (what a sparse kernel would do; Lin et al. 2024 §II-B)
    params_nonzero: Optional[int] = None
    macs_nonzero_per_second: Optional[float] = None

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def measure_rtf(
    run: Callable[[torch.Tensor], object], seconds: float, device: str, repeats: int = 5, warmup: int = 2
) -> float:
    """The real-time factor of ``run(waveform)`` on ``seconds`` of noise at batch 1 (the median of ``repeats``
    timed runs after ``warmup``): compute time / audio time. Also what the report times a checkpoint or an
    exported graph with."""
    wav = torch.randn(1, int(seconds * SAMPLE_RATE), device=device) * 0.1
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run(wav)
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times) / seconds


def profile_model(
    model: nn.Module,
    name: str = "model",
    durations: Optional[Sequence[float]] = None,
    rtf_seconds: float = 10.0,
    rtf_repeats: int = 5,
    gpu: Optional[bool] = None,
    frames_per_segment: Optional[float] = None,
) -> Profile:
    """Profile an :class:`SSLModel` or any s3prl expert (``forward(list of waveforms)``).

    Args:
        model: the model.
        name: label in the report.
        durations: utterance durations in seconds (default: :func:`superb_like_lengths`).
        rtf_seconds: length of the utterance timed for the real-time factor (batch 1).
        rtf_repeats: timed runs (median reported) after 2 warm-up runs.
        gpu: also time on CUDA (default: when available).
        frames_per_segment: a variable-length subsampled model's front-end frames per segment for the
            MACs count (default: its config's nominal stride; see :func:`ssl_macs`).
    """
    durations = list(durations) if durations else superb_like_lengths()
    seconds = float(sum(durations))
    model = model.eval()
    ours = isinstance(model, SSLModel)
    macs = 0
    macs_c: Optional[int] = 0 if ours else None
    encoder_frames = 0
    for d in durations:
        n = int(round(d * SAMPLE_RATE))
        if ours:
            m = ssl_macs(model, n, frames_per_segment)
            encoder_frames += m["encoder_frames"]
            macs += m["macs"]
            macs_c += m["macs"] - m["macs_frontend"]  # type: ignore[operator]
        else:
            wav = torch.zeros(n)
            with torch.no_grad():
                macs += count_macs(lambda: model([wav]))
    if ours:
        run_cpu = lambda w: model(w)  # noqa: E731
        sub = model.subsampler
        if sub is not None and sub.kind == "segments":  # the topline needs segments: the nominal ones
            stride = max(1, int(round(float(sub.stride))))
            run_cpu = lambda w: model(
                w, segment_ids=torch.arange(w.size(1) // model.downsample_rate + 1, device=w.device)[None] // stride
            )  # noqa: E731
    else:
        run_cpu = lambda w: model([w[0]])  # noqa: E731
    rtf_cpu = measure_rtf(run_cpu, rtf_seconds, "cpu", rtf_repeats)
    rtf_gpu = None
    if gpu is None:
        gpu = torch.cuda.is_available()
    if gpu:
        model.cuda()
        rtf_gpu = measure_rtf(run_cpu, rtf_seconds, "cuda", rtf_repeats)
        model.cpu()
    params = sum(p.numel() for p in model.parameters())
    sparse: Dict[str, object] = {}
    if ours:
        saved = zero_weight_macs_per_frame(model) * encoder_frames
        nonzero = sum(
            int((p != 0).sum()) for n, p in model.named_parameters() if not (n.startswith("head.") or n == "mask_emb")
        )
        sparse = {"params_nonzero": nonzero, "macs_nonzero_per_second": (macs - saved) / seconds}
    return Profile(
        name=name,
        params=params,
        params_backbone=count_parameters(model, include_head=False) if ours else params,
        macs_total=int(macs),
        macs_c_total=None if macs_c is None else int(macs_c),
        seconds=seconds,
        macs_per_second=macs / seconds,
        macs_c_per_second=None if macs_c is None else macs_c / seconds,
        rtf_cpu=rtf_cpu,
        rtf_gpu=rtf_gpu,
        num_utterances=len(durations),
        frame_rate_hz=encoder_frames / seconds if ours else None,
        **sparse,
    )


def resolve(name: str, model_config: Optional[str] = None) -> nn.Module:
    """A preset name (random weights), a checkpoint file / HF folder (``model_config``: the published
    ``.yaml`` of a STaRHuBERT ``.ckpt``), or a registered s3prl hub name."""
    import os

    from s3prl_plugins.models import PRESETS, build_model, preset_config
    from s3prl_plugins.models.loading import load_pretrained

    if name in PRESETS and not os.path.exists(name):
        return build_model(preset_config(name))
    if os.path.exists(name):
        return load_pretrained(name, keep_head=True, model_config=model_config)
    import s3prl.hub as hub

    if not hasattr(hub, name):
        raise KeyError(
            f"{name!r} is not a preset ({', '.join(sorted(PRESETS))}), an existing path, or an s3prl hub entry"
        )
    expert = getattr(hub, name)()
    inner = getattr(expert, "model", None)
    return inner if isinstance(inner, SSLModel) else expert


def format_table(profiles: Sequence[Profile]) -> str:
    head = (
        f"{'model':<22}{'params (M)':>12}{'backbone (M)':>14}{'GMACs/s':>10}{'GMACs-C/s':>11}"
        f"{'total GMACs':>13}{'RTF cpu':>10}"
    )
    rows = [head, "-" * len(head)]
    for p in profiles:
        mc = "-" if p.macs_c_per_second is None else f"{p.macs_c_per_second / 1e9:.3f}"
        rows.append(
            f"{p.name:<22}{p.params / 1e6:>12.3f}{p.params_backbone / 1e6:>14.3f}{p.macs_per_second / 1e9:>10.3f}"
            f"{mc:>11}{p.macs_total / 1e9:>13.1f}{p.rtf_cpu:>10.4f}"
        )
    return "\n".join(rows)


def durations_from_wav_list(path: str) -> List[float]:
    """Durations of the audio files listed one per line (or Kaldi ``wav.scp`` lines ``id path``)."""
    import soundfile as sf

    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            audio = parts[-1]
            try:
                info = sf.info(audio)
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"{path}:{lineno}: cannot read {audio}: {e}") from e
            if info.frames == 0:
                raise ValueError(f"{path}:{lineno}: {audio} is empty")
            out.append(info.frames / info.samplerate)
    if not out:
        raise ValueError(f"{path}: no audio files listed")
    return out
