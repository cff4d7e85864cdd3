"""Deployment speed: torch float32 (the CPU fast path) and bf16 against the exported ONNX graph under
onnxruntime, float32 and int8 in each mode.

For every preset (random weights; pass --checkpoints for trained students / pruned chains): file sizes and
the real-time factor at batch 1 x 10 s on N threads (default 2) of torch float32 (``SSLModel`` in inference
mode, ``cpu_fast_path``), torch bf16 (``cpu_bf16``: the layers under bf16 autocast; only where the CPU has bf16), ORT
float32, ORT int8 ``matmul`` and ORT int8 ``all`` (s3prl_plugins.deploy.quantize: the CNN's convolutions
too, calibrated on --calibration audio or speech-like stand-in audio, accuracy-aware), all in one process,
interleaved, median of repeats; then where each graph's time goes (CNN, positional convolution, layers)
from onnxruntime's profiler. Agreement: mean cosine of the last layer's frames against float32 (a sanity
figure; the probe change needs trained weights).

    python bench/bench_deploy.py                                     # hubert_base star_hubert melhubert_base_20ms
    python bench/bench_deploy.py --presets distilhubert --checkpoints exp/star/student.pt
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from s3prl_plugins.data.audio import audio_sample  # noqa: E402
from s3prl_plugins.deploy.onnx import to_onnx  # noqa: E402
from s3prl_plugins.deploy.quantize import CALIBRATION_SECONDS, CALIBRATION_UTTERANCES, quantize_int8  # noqa: E402
from s3prl_plugins.models import build_model, count_parameters  # noqa: E402
from s3prl_plugins.models.factories import preset_config  # noqa: E402
from s3prl_plugins.models.loading import load_pretrained  # noqa: E402
from s3prl_plugins.nn.frontends import cpu_bf16_supported  # noqa: E402


def _session(path, threads, profile=None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _part(node: str) -> str:
    """Which part of the model an onnxruntime node belongs to, by the exporter's names (fused nodes keep
    their first node's name): the transformer layers, the positional convolution, the CNN (incl. its
    normalisation, GELUs and the int8 (de)quantisation around its convolutions), or the rest."""
    if "/layers." in node:
        return "layers"
    if "pos_conv" in node:
        return "pos_conv"
    if node.startswith(("/conv", "/norm", "/Gelu")):
        return "cnn"
    return "other"


def profile_parts(path, feeds, threads, runs=3):
    """Milliseconds per call in each part (:func:`_part`), from onnxruntime's own profiler."""
    import json

    with tempfile.TemporaryDirectory() as folder:
        session = _session(path, threads, profile=os.path.join(folder, "p"))
        for _ in range(runs + 1):
            session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    calls = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    warm = calls[0][1]  # the first call (the warm-up) is left out
    spent = {"cnn": 0.0, "pos_conv": 0.0, "layers": 0.0, "other": 0.0}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > warm:
            spent[_part(e["name"][: -len("_kernel_time")])] += e["dur"]
    return {k: v / 1e3 / (len(calls) - 1) for k, v in spent.items()}


def _calibration(seconds=4.0, n=4, seed=0):
    """Speech-like stand-in audio (harmonics with a syllable-rate envelope, noise) when no --calibration is given."""
    g = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    out = []
    for i in range(n):
        f0 = 110 + 40 * i + 13 * seed
        x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
        out.append((0.05 * x + 0.01 * g.standard_normal(t.size)).astype(np.float32))
    return out


def _cos(a, b):
    return float(np.mean((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))))


def bench_one(name, model, seconds, threads, repeats, folder, calibration, min_cosine):
    model = model.float().eval()
    fp32 = to_onnx(model, os.path.join(folder, f"{name}.onnx"))
    paths = {"ort_fp32": fp32, "ort_matmul": os.path.join(folder, f"{name}.matmul.onnx")}
    quantize_int8(fp32, paths["ort_matmul"], mode="matmul")
    paths["ort_all"] = os.path.join(folder, f"{name}.all.onnx")
    report = quantize_int8(fp32, paths["ort_all"], mode="all", calibration=calibration, min_cosine=min_cosine)
    wav = torch.from_numpy(_calibration(seconds, 1, seed=7)[0])[None]  # not one of the calibration utterances
    feeds = {"waveforms": wav.numpy(), "lengths": np.array([wav.size(1)])}
    sessions = {k: _session(p, threads) for k, p in paths.items()}

    def run_torch():
        with torch.inference_mode():
            return model.set_speed_options(cpu_bf16="off")(wav).hidden_states[-1]

    def run_bf16():  # the layers under bf16 autocast (cpu_bf16), the CNN in the float32 fast path
        with torch.inference_mode():
            return model.set_speed_options(cpu_bf16="on")(wav).hidden_states[-1]

    runs = {"torch": run_torch}
    if cpu_bf16_supported():
        runs["torch_bf16"] = run_bf16
    runs.update({k: (lambda s=s: s.run(None, feeds)[0]) for k, s in sessions.items()})
    times = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):  # interleaved, so a burst of load on the shared machine hits every column alike
        for k, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    rtf = {k: statistics.median(v) / seconds for k, v in times.items()}
    ref = sessions["ort_fp32"].run(None, feeds)[0][-1, 0]
    cos = {k: _cos(sessions[k].run(None, feeds)[0][-1, 0], ref) for k in ("ort_matmul", "ort_all")}
    if "torch_bf16" in runs:
        cos["torch_bf16"] = _cos(run_bf16().float()[0].numpy(), run_torch()[0].numpy())
    parts = {k: profile_parts(paths[k], feeds, threads) for k in ("ort_fp32", "ort_matmul", "ort_all")}
    return {
        "name": name,
        "params": count_parameters(model, include_head=False),
        "mb": {k: os.path.getsize(p) / 1e6 for k, p in paths.items()},
        "rtf": rtf,
        "cos": cos,
        "parts": parts,
        "int8_convs": report.int8_convs,
        "float_convs": report.float_convs,
        "all_mode": report.mode,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="*", default=["hubert_base", "star_hubert", "melhubert_base_20ms"])
    p.add_argument("--checkpoints", nargs="*", default=[], help="trained models (anything load_pretrained reads)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--calibration", help="int8 all: calibration audio (a data dir; default: speech-like stand-in audio)"
    )
    p.add_argument(
        "--min-cosine",
        type=float,
        default=1e-9,
        help="int8 all's accuracy target (default: none, every CNN convolution in int8: the speed of the form; "
        "random weights say nothing of which convolutions a trained model needs in float32)",
    )
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = [
        (n, lambda n=n: build_model(preset_config(n).replace(head=None, mask_embedding=False))) for n in args.presets
    ]
    models += [(os.path.basename(c), lambda c=c: load_pretrained(c)) for c in args.checkpoints]
    print(f"batch 1 x {args.seconds:g} s, {args.threads} threads, median of {args.repeats}; RTF = time / audio")
    print(f"torch bf16 (cpu_bf16): {'measured' if cpu_bf16_supported() else 'not measured: the CPU has no bf16'}")
    calibration = (
        audio_sample(args.calibration, CALIBRATION_UTTERANCES, CALIBRATION_SECONDS)
        if args.calibration
        else _calibration()
    )
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name, make in models:
            results.append(
                bench_one(name, make(), args.seconds, args.threads, args.repeats, folder, calibration, args.min_cosine)
            )
    print(
        "| model | MB fp32 / matmul / all | RTF torch fp32 | torch bf16 | ORT fp32 | ORT int8 matmul | ORT int8 all | "
        "bf16 / torch | matmul / torch | all / torch | cos bf16 / matmul / all |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        t, c = r["rtf"], r["cos"]
        bf = t.get("torch_bf16")
        bf_ratio = f"{t['torch'] / bf:.2f}x" if bf else "n/a"
        print(
            f"| {r['name']} | {' / '.join(f'{v:.0f}' for v in r['mb'].values())} | {t['torch']:.3f} | "
            f"{f'{bf:.3f}' if bf else 'n/a'} | {t['ort_fp32']:.3f} | {t['ort_matmul']:.3f} | {t['ort_all']:.3f} | "
            f"{bf_ratio} | {t['torch'] / t['ort_matmul']:.2f}x | "
            f"**{t['torch'] / t['ort_all']:.2f}x** | {c.get('torch_bf16', float('nan')):.4f} / "
            f"{c['ort_matmul']:.4f} / {c['ort_all']:.4f} |",
            flush=True,
        )
    print("\nWhere the time goes (onnxruntime's profiler, ms per call: CNN / positional conv / layers / rest):")
    print("| model | ORT fp32 | ORT int8 matmul | ORT int8 all | CNN convolutions kept float32 by `all` |")
    print("|---|---|---|---|---|")
    for r in results:
        cells = [" / ".join(f"{v:.0f}" for v in r["parts"][k].values()) for k in ("ort_fp32", "ort_matmul", "ort_all")]
        kept = ", ".join(f"{k} ({v:.4f})" for k, v in r["float_convs"].items()) or "none"
        print(f"| {r['name']} | {' | '.join(cells)} | {kept} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
