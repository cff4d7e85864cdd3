"""STaR loss benchmark: the D x D ("gram") form against the direct N x N form of the layer-wise +
intra-layer TGM losses (Jang, Kim and Kim 2024 eq. 4 + 6), forward + backward.

13 states (layer 0..12), teacher width 768, student width 432, N frames per utterance. Each
(method, N) runs in its own subprocess so that its peak memory can be read from the process's peak
resident set (CPU) or ``torch.cuda.max_memory_allocated`` (GPU), minus what the inputs already took.
Times: median of ``--repeats`` runs after a warm-up. Ratios are against the direct form in the same run.

Usage::

    python bench/bench_star_loss.py [--frames 250 500 1500] [--batch 1] [--threads 2] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(method: str, frames: int, batch: int, repeats: int, threads: int, device: str) -> dict:
    import torch

    from s3prl_plugins.losses.star import tgm_losses

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    teacher = [torch.randn(batch, frames, 768, generator=g).to(device) for _ in range(13)]
    student = [torch.randn(batch, frames, 432, generator=g).to(device).requires_grad_(True) for _ in range(13)]
    lengths = torch.full((batch,), frames, device=device)

    def step():
        terms = tgm_losses(teacher, student, lengths, method=method)  # both, as DistillationTask computes them
        loss = terms["layer_wise"] + terms["intra_layer"]
        loss.backward()
        for s in student:
            s.grad = None
        if device == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())

    if device == "cuda":
        torch.cuda.synchronize()
        base_mem = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    value = step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base_mem
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_mem
    return {
        "method": method,
        "frames": frames,
        "time_s": statistics.median(times),
        "peak_extra_bytes": int(peak),
        "loss": value,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[250, 500, 1500])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "FRAMES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.batch, args.repeats, args.threads, args.device)))
        return
    rows = []
    for n in args.frames:
        for method in ("direct", "gram"):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                method,
                str(n),
                "--batch",
                str(args.batch),
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
                "--device",
                args.device,
            ]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"STaR loss (layer-wise + intra-layer), 13 states, widths 768/432, batch {args.batch}, {args.device}, "
        f"{args.threads} threads, forward+backward, median of {args.repeats}"
    )
    print(
        f"{'N':>6} {'direct s':>10} {'gram s':>10} {'speed-up':>9} {'direct MiB':>11} {'gram MiB':>9} {'rel. diff':>10}"
    )
    summary = []
    for n in args.frames:
        d = next(r for r in rows if r["frames"] == n and r["method"] == "direct")
        g = next(r for r in rows if r["frames"] == n and r["method"] == "gram")
        rel = abs(d["loss"] - g["loss"]) / abs(d["loss"])
        summary.append({"frames": n, "direct": d, "gram": g, "speedup": d["time_s"] / g["time_s"], "rel_diff": rel})
        print(
            f"{n:>6} {d['time_s']:>10.4f} {g['time_s']:>10.4f} {d['time_s'] / g['time_s']:>8.2f}x "
            f"{d['peak_extra_bytes'] / 2**20:>11.1f} {g['peak_extra_bytes'] / 2**20:>9.1f} {rel:>10.1e}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
