"""CIF segment pooling: our vectorised ``cif`` against the per-frame loop and the ``torch-cif`` package.

Same inputs for all three (B = 8, D = 768, T = 500 / 1000 / 1500 frames, α from a sigmoid, utterance
lengths spread over 70-100% of T), forward + backward, median of repeats, in one process.

    python bench/bench_cif.py                      # CPU
    python bench/bench_cif.py --device cuda
    pip install torch-cif==0.2.0                   # to include it (not a dependency of the project)

The loop (``cif_reference``) reads α as Python floats, so its backward covers the features only; it is
timed anyway as the slow, obvious baseline. All three keep a tail of weight >= 0.5 (torch-cif's inference
rule without target lengths); torch-cif's output is also compared with ours (max abs diff, when the
segment counts agree).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from s3prl_plugins.nn.subsampling import cif, cif_reference  # noqa: E402


def _inputs(B, T, D, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, D, generator=g).to(device)
    alpha = torch.sigmoid(torch.randn(B, T, generator=g) - 1.0).to(device)  # ~0.3 per frame: ~1 segment / 3 frames
    lengths = (torch.linspace(0.7, 1.0, B) * T).long().to(device)
    return x, alpha, lengths


def _time(fn, repeats, device):
    times = []
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first call warms up
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, nargs="+", default=[500, 1000, 1500])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loop-repeats", type=int, default=1)
    args = p.parse_args()
    try:
        from torch_cif import cif_function
    except ImportError:
        cif_function = None
    print(
        f"device {args.device}, B = {args.batch}, D = {args.dim}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
        f", torch-cif {'present' if cif_function else 'not installed'}"
    )
    print(f"{'T':>6}{'ours s':>10}{'loop s':>10}{'x loop':>9}{'torch-cif s':>13}{'ours / tcif':>13}{'max |diff|':>12}")
    for T in args.frames:
        x, alpha, lengths = _inputs(args.batch, T, args.dim, args.device)
        pad = torch.arange(T, device=args.device)[None, :] >= lengths[:, None]

        def ours():
            xx, aa = x.detach().requires_grad_(True), alpha.detach().requires_grad_(True)
            seg, _ = cif(xx, aa, lengths, tail_threshold=0.5)  # like torch-cif without target lengths
            seg.sum().backward()
            return seg

        def loop():
            xx = x.detach().cpu().requires_grad_(True)
            seg, _ = cif_reference(xx, alpha.detach().cpu(), lengths.cpu(), tail_threshold=0.5)
            seg.sum().backward()

        def tcif():
            xx, aa = x.detach().requires_grad_(True), alpha.detach().requires_grad_(True)
            out = cif_function(xx, aa, padding_mask=pad)
            out["cif_out"][0].sum().backward()
            return out

        t_ours = _time(ours, args.repeats, args.device)
        t_loop = _time(loop, args.loop_repeats, args.device)
        row = f"{T:>6}{t_ours:>10.4f}{t_loop:>10.3f}{t_loop / t_ours:>9.1f}"
        if cif_function is not None:
            t_tc = _time(tcif, args.repeats, args.device)
            seg, n = cif(x, alpha, lengths, tail_threshold=0.5)
            ref = cif_function(x, alpha, padding_mask=pad)
            ref_seg, ref_n = ref["cif_out"][0], ref["cif_lengths"][0]
            same = bool((ref_n == n).all())
            diff = (
                max(float((seg[b, : n[b]] - ref_seg[b, : n[b]]).abs().max()) for b in range(args.batch))
                if same
                else float("nan")
            )
            row += f"{t_tc:>13.4f}{t_ours / t_tc:>13.2f}{diff:>12.2e}"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
