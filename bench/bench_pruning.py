"""Does structured pruning make the model faster in proportion to the work removed? (Lin et al. 2024 §V-B)

``--model melhubert`` (default): MelHuBERT BASE (12 layers, width 768, 12 heads, FFN 3072; random weights);
variants: the unpruned model, 50% and 75% of the heads removed (the same heads of every layer), 50% and 75%
of the FFN units removed, and both at 50%. ``--model hubert_base`` / ``star_hubert``: a waveform model;
variants: 50% of every CNN layer's channels removed (``compress.prune_conv_channels``, issue 31), the same
without the last layer (the features the transformer reads keep their width), and the CNN's 50% with heads
and FFN at 50%; the CNN alone is timed too (its own speed-up against its own MACs).

Batch 1, 10 s of audio, CPU, one thread by default, the transformer in float32 (``--bf16`` for the default
``cpu_bf16`` speed option), every variant interleaved in one run. For each: the measured speed-up over the
unpruned model, the ideal speed-up by MACs (``torch.utils.flop_counter``), and their ratio (the goal: >= 0.8).

    python bench/bench_pruning.py [--model melhubert|hubert_base|star_hubert] [--seconds 10] [--repeats 7]
        [--threads 1] [--frame-ms 10] [--device cpu] [--bf16]
    python bench/bench_pruning.py --model hubert_base --shape-of PRUNED.pt --shape-source TEACHER.pt --threads 2
        # HuBERT BASE at the shape the dp step learned on a small teacher, beside BASE and STaRHuBERT
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

from s3prl_plugins.compress import prune_conv_channels, prune_ffn, prune_heads  # noqa: E402
from s3prl_plugins.eval.probe.profile import count_macs  # noqa: E402
from s3prl_plugins.models import melhubert_config  # noqa: E402
from s3prl_plugins.models.factories import hubert_base, star_hubert  # noqa: E402
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


def cnn_variants(model: SSLModel):
    """The waveform CNN's channels halved (every layer; every layer but the last), and with heads and FFN."""
    c = model.config
    half = {i: list(range(ch // 2)) for i, (ch, _, _) in enumerate(c.conv_layers)}
    but_last = {i: v for i, v in half.items() if i < len(c.conv_layers) - 1}
    layers = range(c.num_layers)
    out = {"unpruned": model}
    out["cnn -50%"] = prune_conv_channels(model, half)
    out["cnn -50% but last"] = prune_conv_channels(model, but_last)
    both = prune_heads(out["cnn -50%"], {i: list(range(c.num_heads[i] // 2)) for i in layers})
    out["cnn, heads, ffn -50%"] = prune_ffn(both, {i: list(range(c.ffn_dims[i] // 2)) for i in layers})
    return {k: v.eval() for k, v in out.items()}


def scaled_variants(base: SSLModel, pruned_path: str, source_path: str):
    """HuBERT BASE with the shape a pruning learned on a small model: each CNN layer keeps the fraction of channels
    the pruned model kept of its source's, each transformer layer (mapped onto the source's by depth) the
    fraction of heads and FFN units -- a BASE-sized model of the learned shape (random weights: timing only)."""
    from s3prl_plugins.models.checkpoint import load_checkpoint

    pruned, source = load_checkpoint(pruned_path)[0].config, load_checkpoint(source_path)[0].config
    c = base.config
    if len(pruned.conv_layers) != len(c.conv_layers):
        raise SystemExit(f"{pruned_path}: its CNN has {len(pruned.conv_layers)} layers, HuBERT BASE's 7")
    conv = {}
    for i, ((ch, _, _), (kept, _, _), (was, _, _)) in enumerate(
        zip(c.conv_layers, pruned.conv_layers, source.conv_layers)
    ):
        conv[i] = list(range(ch - max(1, round(ch * kept / was))))
    heads, ffn = {}, {}
    for layer in range(c.num_layers):
        j = layer * source.num_layers // c.num_layers
        h = c.heads_per_layer()[layer]
        heads[layer] = list(range(h - round(h * pruned.heads_per_layer()[j] / source.heads_per_layer()[j])))
        u = c.ffn_dims[layer]
        ffn[layer] = list(range(u - round(u * pruned.ffn_dims[j] / source.ffn_dims[j])))
    scaled = prune_ffn(prune_heads(prune_conv_channels(base, conv), heads), ffn)
    return {"unpruned": base, "learned shape": scaled.eval(), "STaRHuBERT": SSLModel(star_hubert()).eval()}


def _timed(models, run, repeats, sync):
    times = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():  # warm-up
            run(m)
        for _ in range(repeats):  # interleaved, so that drift of the machine hits every variant alike
            for k, m in models.items():
                sync()
                t0 = time.perf_counter()
                run(m)
                sync()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _table(title, models, macs, times):
    base_t, base_m = times["unpruned"], macs["unpruned"]
    rows = []
    print(title)
    print(f"{'variant':<24}{'GMACs':>8}{'time s':>9}{'speed-up':>10}{'ideal':>8}{'ratio':>8}")
    for k in models:
        t = times[k]
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
        print(f"{k:<24}{macs[k] / 1e9:>8.2f}{t:>9.3f}{measured:>10.2f}{ideal:>8.2f}{measured / ideal:>8.2f}")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--frame-ms", type=int, default=10, choices=(10, 20))
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="melhubert", choices=("melhubert", "hubert_base", "star_hubert"))
    p.add_argument("--bf16", action="store_true", help="the transformer under the default cpu_bf16 (auto)")
    p.add_argument("--shape-of", metavar="PRUNED.pt", help="with --model hubert_base: BASE at the learned shape of")
    p.add_argument("--shape-source", metavar="SOURCE.pt", help="... this pruned model relative to its source")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model == "melhubert":
        model = SSLModel(melhubert_config(stack_frames=args.frame_ms // 10, num_clusters=None))
        name = f"MelHuBERT BASE {args.frame_ms} ms"
    else:
        model = SSLModel(hubert_base(with_head=False) if args.model == "hubert_base" else star_hubert())
        name = {"hubert_base": "HuBERT BASE", "star_hubert": "STaRHuBERT"}[args.model]
    if args.shape_of:
        if args.model != "hubert_base" or not args.shape_source:
            raise SystemExit("--shape-of needs --model hubert_base and --shape-source")
        found = scaled_variants(model.eval(), args.shape_of, args.shape_source)
    elif args.model == "melhubert":
        found = variants(model.eval())
    else:
        found = cnn_variants(model.eval())
    models = {k: v.set_speed_options(cpu_bf16="auto" if args.bf16 else "off").to(args.device) for k, v in found.items()}
    wav = torch.randn(1, int(args.seconds * 16000), device=args.device) * 0.1

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def whole(m):
        return m(wav)

    def cnn(m):
        return m.frontend(wav)

    setting = (
        f"batch 1, {args.seconds:g} s, {args.device}, {args.threads} thread(s), median of {args.repeats}, "
        f"transformer {'cpu_bf16 auto' if args.bf16 else 'float32'}"
    )
    macs = {k: count_macs(lambda m=m: whole(m)) for k, m in models.items()}
    rows = _table(f"{name}, {setting}", models, macs, _timed(models, whole, args.repeats, sync))
    if args.model != "melhubert" and not args.shape_of:
        macs = {k: count_macs(lambda m=m: cnn(m)) for k, m in models.items()}
        cnn_rows = _table(f"\n{name}'s CNN alone", models, macs, _timed(models, cnn, args.repeats, sync))
        rows += [{**r, "variant": f"CNN alone: {r['variant']}"} for r in cnn_rows]
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
