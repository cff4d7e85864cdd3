"""Does structured pruning make the model faster in proportion to the work removed? (Lin et al. 2024 §V-B)

MelHuBERT BASE (12 layers, width 768, 12 heads, FFN 3072; random weights), batch 1, 10 s of audio, CPU,
one thread by default. In the same run, interleaved: the unpruned model, 50% and 75% of the heads
removed (the same heads of every layer), 50% and 75% of the FFN units removed, and both at 50%. For each:
the measured speed-up over the unpruned model, the ideal speed-up by MACs (``torch.utils.flop_counter``),
and their ratio (the goal: >= 0.8).

    python bench/bench_pruning.py [--seconds 10] [--repeats 7] [--threads 1] [--frame-ms 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from s3prl_plugins.compress import prune_ffn, prune_heads  # noqa: E402
from s3prl_plugins.eval.probe.profile import count_macs  # noqa: E402
from s3prl_plugins.models import melhubert_config  # noqa: E402
from s3prl_plugins.models.ssl_model import SSLModel  # noqa: E402


def variants(model: SSLModel):
    c = model.config
    heads = c.num_heads[0]
    ffn = c.ffn_dims[0]
    layers = range(c.num_layers)
    out = {"unpruned": model}
    for frac in (0.5, 0.75):
        out[f"heads -{int(frac * 100)}%"] = prune_heads(model, {i: list(range(int(heads * frac))) for i in layers})
        out[f"ffn -{int(frac * 100)}%"] = prune_ffn(model, {i: list(range(int(ffn * frac))) for i in layers})
    out["heads -50% + ffn -50%"] = prune_ffn(out["heads -50%"], {i: list(range(ffn // 2)) for i in layers})
    return {k: v.eval() for k, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frame-ms", type=int, default=10, choices=(10, 20))
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SSLModel(melhubert_config(stack_frames=args.frame_ms // 10, num_clusters=None)).eval()
    models = {k: v.to(args.device) for k, v in variants(model).items()}
    wav = torch.randn(1, int(args.seconds * 16000), device=args.device) * 0.1
    macs = {k: count_macs(lambda m=m: m(wav)) for k, m in models.items()}
    times = {k: [] for k in models}

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        for m in models.values():  # warm-up
            m(wav)
        for _ in range(args.repeats):  # interleaved, so that drift of the machine hits every variant alike
            for k, m in models.items():
                sync()
                t0 = time.perf_counter()
                m(wav)
                sync()
                times[k].append(time.perf_counter() - t0)
    base_t, base_m = statistics.median(times["unpruned"]), macs["unpruned"]
    rows = []
    print(
        f"MelHuBERT BASE {args.frame_ms} ms, batch 1, {args.seconds:g} s, {args.device}, {args.threads} thread(s), "
        f"median of {args.repeats}"
    )
    print(f"{'variant':<24}{'GMACs':>8}{'time s':>9}{'speed-up':>10}{'ideal':>8}{'ratio':>8}")
    for k in models:
        t = statistics.median(times[k])
        measured, ideal = base_t / t, base_m / macs[k]
        rows.append(
            {
                "variant": k,
                "gmacs": macs[k] / 1e9,
                "seconds": t,
                "speedup": measured,
                "ideal": ideal,
                "ratio": measured / ideal,
            }
        )
        print(f"{k:<24}{macs[k] / 1e9:>8.1f}{t:>9.3f}{measured:>10.2f}{ideal:>8.2f}{measured / ideal:>8.2f}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
