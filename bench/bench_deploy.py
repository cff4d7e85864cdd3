"""Deployment speed: torch float32 against the exported ONNX graph under onnxruntime, float32 and int8.

For every preset (random weights; pass --checkpoints for trained students / pruned chains): parameters,
file size (float32 and int8 .onnx), and the real-time factor at batch 1 x 10 s on N threads (default 2)
of torch float32 (``SSLModel`` in inference mode), ORT float32 and ORT int8 (per-channel dynamic int8
of the transformer's matrix multiplications), all in one process, interleaved, median of repeats. The int8
column's agreement with float32 is the mean cosine of the last layer's frames (a sanity figure; the probe
change needs trained weights).

    python bench/bench_deploy.py                                     # hubert_base star_hubert melhubert_base_20ms
    python bench/bench_deploy.py --presets distilhubert --checkpoints exp/star/student.pt
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from s3prl_plugins.deploy.graph import quantize_int8  # noqa: E402
from s3prl_plugins.deploy.onnx import to_onnx  # noqa: E402
from s3prl_plugins.models import build_model, count_parameters  # noqa: E402
from s3prl_plugins.models.factories import preset_config  # noqa: E402
from s3prl_plugins.models.loading import load_pretrained  # noqa: E402


def _session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_one(name, model, seconds, threads, repeats, folder):
    model = model.float().eval()
    fp32 = to_onnx(model, os.path.join(folder, f"{name}.onnx"))
    int8 = quantize_int8(fp32, os.path.join(folder, f"{name}.int8.onnx"))
    wav = torch.randn(1, int(16000 * seconds)) * 0.1
    lengths = torch.tensor([wav.size(1)])
    feeds = {"waveforms": wav.numpy(), "lengths": lengths.numpy()}
    s32, s8 = _session(fp32, threads), _session(int8, threads)

    def run_torch():
        with torch.inference_mode():
            return model(wav).hidden_states[-1]

    runs = {"torch": run_torch, "ort_fp32": lambda: s32.run(None, feeds)[0], "ort_int8": lambda: s8.run(None, feeds)[0]}
    times = {k: [] for k in runs}
    for k, fn in runs.items():
        fn()  # warm-up
    for _ in range(repeats):  # interleaved, so a burst of load on the shared machine hits every column alike
        for k, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    rtf = {k: statistics.median(v) / seconds for k, v in times.items()}
    a, b = s32.run(None, feeds)[0][-1, 0], s8.run(None, feeds)[0][-1, 0]
    cos = float(np.mean((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))))
    return {
        "name": name,
        "params": count_parameters(model, include_head=False),
        "mb_fp32": os.path.getsize(fp32) / 1e6,
        "mb_int8": os.path.getsize(int8) / 1e6,
        **rtf,
        "cos": cos,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="*", default=["hubert_base", "star_hubert", "melhubert_base_20ms"])
    p.add_argument("--checkpoints", nargs="*", default=[], help="trained models (anything load_pretrained reads)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = [
        (n, lambda n=n: build_model(preset_config(n).replace(head=None, mask_embedding=False))) for n in args.presets
    ]
    models += [(os.path.basename(c), lambda c=c: load_pretrained(c)) for c in args.checkpoints]
    print(f"batch 1 x {args.seconds:g} s, {args.threads} threads, median of {args.repeats}; RTF = time / audio")
    print(
        "| model | params | MB fp32 / int8 | RTF torch fp32 | RTF ORT fp32 | RTF ORT int8 | ORT fp32 / torch | "
        "int8 / torch | int8 cos |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, make in models:
            r = bench_one(name, make(), args.seconds, args.threads, args.repeats, folder)
            print(
                f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['mb_fp32']:.0f} / {r['mb_int8']:.0f} | "
                f"{r['torch']:.3f} | "
                f"{r['ort_fp32']:.3f} | {r['ort_int8']:.3f} | {r['torch'] / r['ort_fp32']:.2f}x | "
                f"**{r['torch'] / r['ort_int8']:.2f}x** | {r['cos']:.4f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
