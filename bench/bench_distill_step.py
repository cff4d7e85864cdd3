"""Distillation throughput at the paper's sizes: one update of STaRHuBERT from a HuBERT BASE teacher
(random weights; speed does not depend on them), forward of the frozen teacher + forward/backward of
the student + AdamW step, as ``DistillationTask`` and the trainer run it.

Reports the median time per micro-batch, audio seconds per second, peak GPU memory, and what that
means for the paper's recipe (LibriSpeech 100 h x 200 epochs). Compares the final STaR loss with
its two TGM forms (``gram`` D x D and ``direct`` N x N) and the DistilHuBERT-style L1+cos objective
in the same run, so the ratios are like for like.

Usage::

    python bench/bench_distill_step.py --device cuda --batch 12 --seconds 15.6      # the recipe's micro-batch
    python bench/bench_distill_step.py --device cpu --batch 1 --seconds 2 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

HOURS_100 = 100.6  # train-clean-100
EPOCHS = 200


def build(objective: str, method: str, device: str):
    from s3prl_plugins.models.factories import hubert_config, preset_config, star_hubert_config
    from s3prl_plugins.models.ssl_model import SSLModel
    from s3prl_plugins.tasks.distillation import DistillationTask

    torch.manual_seed(0)
    teacher = SSLModel(hubert_config(with_head=False))
    if objective == "l1_cos":
        student = SSLModel(star_hubert_config(head={"type": "distil", "layers": [4, 8, 12], "out_dim": 768}))
        task = DistillationTask(teacher, student, {"l1_cos": 1.0})
    else:
        student = SSLModel(preset_config("star_hubert"))
        task = DistillationTask(teacher, student, {"layer_wise": {"method": method}, "intra_layer": {"method": method}})
    return task.to(device)


def measure(
    objective: str, method: str, device: str, batch: int, seconds: float, repeats: int, amp: bool, padded: bool = False
) -> dict:
    task = build(objective, method, device)
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    n = int(seconds * 16000)
    g = torch.Generator().manual_seed(0)
    lengths = torch.full((batch,), n)
    if padded:  # a real batch: lengths spread over half to all of the longest (padding and a mask)
        lengths = torch.linspace(n / 2, n, batch).long()
    wavs = 0.1 * torch.randn(batch, n, generator=g) * (torch.arange(n)[None, :] < lengths[:, None])
    batch_data = {"wavs": wavs.to(device), "lengths": lengths.to(device)}

    def step() -> float:
        ctx = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if (amp and device == "cuda")
            else torch.autocast("cpu", enabled=False)
        )
        with ctx:
            loss, _ = task(batch_data)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())

    step()  # warm-up (cuDNN autotuning, allocator)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    out = {
        "objective": objective,
        "method": method,
        "batch": batch,
        "seconds": seconds,
        "time_s": t,
        "audio_s_per_s": float(lengths.sum()) / 16000 / t,
        "loss": loss,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }
    out["recipe_hours_1gpu"] = HOURS_100 * 3600 * EPOCHS / out["audio_s_per_s"] / 3600
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--seconds", type=float, default=15.6)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-amp", action="store_true", help="float32 on the GPU too")
    p.add_argument("--padded", action="store_true", help="utterances of different lengths (half to all of --seconds)")
    p.add_argument("--cases", nargs="+", default=["star:gram", "star:direct", "l1_cos:-"], help="objective:method")
    p.add_argument("--json")
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for case in args.cases:
        objective, method = case.split(":")
        rows.append(
            measure(
                objective,
                method if method != "-" else "auto",
                args.device,
                args.batch,
                args.seconds,
                args.repeats,
                not args.no_amp,
                args.padded,
            )
        )
        if args.device == "cuda":
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    amp = "bf16 autocast" if (args.device == "cuda" and not args.no_amp) else "float32"
    shape = (
        f"{args.batch} x {args.seconds / 2:g}-{args.seconds:g} s (padded)"
        if args.padded
        else f"{args.batch} x {args.seconds} s"
    )
    print(f"HuBERT BASE -> STaRHuBERT, {name}, {amp}, micro-batch {shape}, median of {args.repeats}")
    base = rows[0]["time_s"]
    print(
        f"{'objective':<10} {'TGM form':<8} {'s/update':>9} {'ratio':>6} {'audio s/s':>10} {'peak GiB':>9} "
        f"{'100 h x 200 ep, 1 device':>22}"
    )
    for r in rows:
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        print(
            f"{r['objective']:<10} {r['method']:<8} {r['time_s']:>9.3f} {r['time_s'] / base:>6.2f} "
            f"{r['audio_s_per_s']:>10.0f} {peak:>9} {r['recipe_hours_1gpu']:>20.1f} h"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
