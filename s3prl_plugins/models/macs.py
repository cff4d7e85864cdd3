"""MACs of a model, counted with ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2) over
convolutions, matrix products and attention: what the profiler (``eval.probe.profile``) reports and what a
compute budget (``compress.dp``) constrains -- one count, here below both.

Torch has no FLOP formula for the CPU attention kernel (``aten._scaled_dot_product_flash_attention_for_cpu``)
and would count attention as 0; we register the same formula torch uses for its GPU kernels
(:func:`register_cpu_attention_flops`). Our own models are counted on the ``meta`` device (no arithmetic, exact
shapes), so a whole corpus is counted in seconds.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.nn.frontends import conv_output_lengths

_REGISTERED = False


def register_cpu_attention_flops() -> None:
    """Give the CPU flash-attention op the FLOP formula of the other SDPA kernels (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from torch.utils import flop_counter as fc

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu

    if op not in fc.flop_registry and op.default not in fc.flop_registry:

        @fc.register_flop_formula(op)
        def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    _REGISTERED = True


def count_macs(fn: Callable[[], object]) -> int:
    """MACs of running ``fn()`` (FLOPs of matmul/conv/attention divided by 2)."""
    register_cpu_attention_flops()
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def superb_like_lengths(n: int = 32, total_s: float = 224.86, lo: float = 1.0, hi: float = 20.0) -> List[float]:
    """``n`` deterministic durations in [lo, hi] seconds summing to ``total_s``: ``lo + (hi-lo) (i/(n-1))^p``
    with ``p`` found by bisection."""
    target = (total_s - n * lo) / (hi - lo)

    def mass(p: float) -> float:
        return sum((i / (n - 1)) ** p for i in range(n))

    a, b = 0.05, 20.0
    for _ in range(100):
        mid = (a + b) / 2
        a, b = (mid, b) if mass(mid) > target else (a, mid)
    p = (a + b) / 2
    return [lo + (hi - lo) * (i / (n - 1)) ** p for i in range(n)]


def _meta_copy(model: SSLModel) -> SSLModel:
    with torch.device("meta"):
        return SSLModel(model.config).eval()


def ssl_macs(model: SSLModel, num_samples: int, frames_per_segment: Optional[float] = None) -> Dict[str, int]:
    """MACs of one utterance of ``num_samples`` samples through ``model`` (and through its front-end), and
    the encoder's frames.

    A variable-length subsampled model (CIF, given segments) has as many encoder frames as its α fires,
    which depends on the audio: it is counted at ``frames_per_segment`` front-end frames per segment
    (default: the config's nominal ``subsampling.stride``) -- front-end, CIF module and pooling at the
    front-end's rate, then projection and encoder on ``ceil(T / frames_per_segment)`` segments."""
    meta = _meta_copy(model)
    sub = meta.subsampler
    with torch.no_grad():
        if model.config.frontend == "conv":
            wav = torch.zeros(1, num_samples, device="meta")
            macs_fe = count_macs(lambda: meta.frontend(wav))
            frames = int(conv_output_lengths(torch.tensor([num_samples]), model.config.conv_layers)[0])
            if sub is None or not sub.variable:
                out = {"macs": count_macs(lambda: meta(wav)), "macs_frontend": macs_fe}
                out["encoder_frames"] = -(-frames // (model.config.subsampling_stride or 1))
                return out
        else:
            # Log-Mel: the filterbank (an FFT) has no MACs in this count; start from its output shape.
            macs_fe = 0
            frames = int(model.frontend.num_frames(torch.tensor([num_samples]))[0])
            if sub is None or not sub.variable:
                feats = torch.zeros(1, frames, model.config.frontend_dim, device="meta")
                stride = model.config.subsampling_stride or 1
                if sub is not None:
                    feats = sub(feats, torch.tensor([frames], device="meta")).x
                return {
                    "macs": count_macs(lambda: meta.encode(meta.project(feats)[0])),
                    "macs_frontend": 0,
                    "encoder_frames": -(-frames // stride),
                }
        rate = float(frames_per_segment or sub.stride)
        segments = max(1, math.ceil(frames / rate))
        dim = model.config.frontend_dim
        feats = torch.zeros(1, frames, dim, device="meta")
        macs = macs_fe + frames * dim  # CIF pooling: one weighted add per frame and channel
        if sub.weights is not None:
            macs += count_macs(lambda: sub.weights(feats, None))
        seg = torch.zeros(1, segments, dim, device="meta")
        macs += count_macs(lambda: meta.encode(meta.project(seg)[0]))
        return {"macs": macs, "macs_frontend": macs_fe, "encoder_frames": segments}
