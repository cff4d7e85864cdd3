"""CPU inference benchmark (batch 1, warmed up, median of runs).

1. Ours vs s3prl's implementation of the same architecture, same weights (outputs checked equal):
   HuBERT BASE (s3prl ``hubert`` expert) and DistilHuBERT (s3prl ``distiller`` expert).
2. Students vs HuBERT BASE (ours): DistilHuBERT, STaRHuBERT, STaRHuBERT-L.
3. The CPU fast path (``cpu_fast_path``: chunked CNN with the GroupNorm folded, FFT positional
   convolution) against the plain forms, per preset, with where the time goes (CNN, positional
   convolution, transformer layers) in each.
4. ``cpu_bf16`` (the layers under bf16 autocast, on a CPU with bf16 arithmetic) against float32, per preset,
   with the agreement of the states (lowest per-layer mean cosine).
5. HuBERT BASE through the interface users call, ``S3PRLUpstream``: s3prl's ``hubert_local`` against ours
   (``star_hubert_local`` on the checkpoint ``bin.convert`` writes from the same s3prl file), float32 and with
   the default ``cpu_bf16``, and where ours spends time outside the model (raw model, expert, S3PRLUpstream).

Sections 1-3 compare float32 forms (``cpu_bf16="off"``).

Reports ratios measured in the same run (>1 means faster than the baseline). Usage:
    python bench/bench_inference.py [--seconds 10] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from refs import s3prl_distiller_ckpt, s3prl_hubert_ckpt  # noqa: E402

from s3prl_plugins.models import build_model, preset_config  # noqa: E402
from s3prl_plugins.models.loading import load_pretrained  # noqa: E402
from s3prl_plugins.nn.frontends import cpu_bf16_supported  # noqa: E402

HUBERT_CONV = "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"


def interleaved(fns, repeats, warmup=1, burst=3):
    """Median time of each function, run in turns of ``burst`` calls (AAA BBB AAA ...) so that drifts of
    a shared machine hit every candidate alike while each turn runs warm, as a user's repeated calls do
    (alternating single calls gives each the other's allocator and cache state). The first call of each
    turn is not timed."""
    times = [[] for _ in fns]
    with torch.inference_mode():
        for i in range(warmup + -(-repeats // burst)):
            for j, fn in enumerate(fns):
                fn()
                for _ in range(burst):
                    t0 = time.perf_counter()
                    fn()
                    if i >= warmup:
                        times[j].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def breakdown(model, wav, repeats):
    """Seconds per call in the CNN (or log-Mel front-end), the positional convolution and the transformer
    layers (forward hooks; median over ``repeats`` calls)."""
    parts = {"frontend": [model.frontend], "pos_conv": [model.encoder.pos_conv], "layers": list(model.encoder.layers)}
    spent = {k: 0.0 for k in parts}
    handles = []
    for name, modules in parts.items():
        for m in modules:
            if m is None:
                continue
            handles.append(m.register_forward_pre_hook(lambda m, i: setattr(m, "_t0", time.perf_counter())))
            handles.append(
                m.register_forward_hook(
                    lambda m, i, o, name=name: spent.__setitem__(name, spent[name] + time.perf_counter() - m._t0)
                )
            )
    samples = {k: [] for k in parts}
    with torch.inference_mode():
        model(wav)
        for _ in range(repeats):
            for k in spent:
                spent[k] = 0.0
            model(wav)
            for k in spent:
                samples[k].append(spent[k])
    for h in handles:
        h.remove()
    return {k: statistics.median(v) for k, v in samples.items()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import importlib

    wav = torch.randn(int(args.seconds * 16000)) * 0.1
    results = {}
    tmp = tempfile.mkdtemp()
    base = dict(embed_dim=768, heads=12, ffn=3072, conv=HUBERT_CONV, conv_pos=128, conv_pos_groups=16)
    pairs = {
        # name: (s3prl expert module, checkpoint in s3prl's format, index of the first comparable state)
        "hubert_base": ("hubert", s3prl_hubert_ckpt(layers=12, **base), 0),
        "distilhubert": ("distiller", s3prl_distiller_ckpt(layers=2, **base), 1),
    }
    for name, (module, ckpt, first) in pairs.items():
        path = os.path.join(tmp, f"{module}.pt")
        torch.save(ckpt, path)
        ref = importlib.import_module(f"s3prl.upstream.{module}.expert").UpstreamExpert(path).eval()
        ours = load_pretrained(path).eval().set_speed_options(cpu_bf16="off")
        with torch.inference_mode():
            a = ref([wav])["hidden_states"]
            b = ours(wav[None]).hidden_states
            diff = max((x - y).abs().max().item() for x, y in zip(a[first : len(b)], b[first:]))
        t_ref, t_ours = interleaved([lambda: ref([wav]), lambda: ours(wav[None])], args.repeats)
        results[f"{name}: ours vs s3prl"] = {
            "s3prl_s": t_ref,
            "ours_s": t_ours,
            "speedup": t_ref / t_ours,
            "max_abs_diff": diff,
        }

    models = {
        n: build_model(preset_config(n)).eval().set_speed_options(cpu_bf16="off")
        for n in ("hubert_base", "distilhubert", "star_hubert", "star_hubert_l")
    }
    t = dict(zip(models, interleaved([lambda m=m: m(wav[None]) for m in models.values()], args.repeats)))
    for n in ("distilhubert", "star_hubert", "star_hubert_l"):
        results[f"{n} vs hubert_base"] = {
            "hubert_s": t["hubert_base"],
            "student_s": t[n],
            "speedup": t["hubert_base"] / t[n],
        }

    fast = {}
    for n in ("hubert_base", "distilhubert", "star_hubert", "star_hubert_l", "melhubert_base_20ms"):
        model = models.get(n) or build_model(preset_config(n)).eval().set_speed_options(cpu_bf16="off")
        on = functools.partial(model.set_speed_options, cpu_fast_path=True)
        off = functools.partial(model.set_speed_options, cpu_fast_path=False)
        with torch.inference_mode():
            a = on()(wav[None]).hidden_states
            b = off()(wav[None]).hidden_states
            rel = max(((x - y).abs().max() / y.abs().max()).item() for x, y in zip(a, b))
        t_fast, t_plain = interleaved([lambda: on()(wav[None]), lambda: off()(wav[None])], args.repeats)
        parts = {"fast": breakdown(on(), wav[None], args.repeats), "plain": breakdown(off(), wav[None], args.repeats)}
        on()
        fast[n] = {
            "fast_s": t_fast,
            "plain_s": t_plain,
            "speedup": t_plain / t_fast,
            "max_rel_diff": rel,
            "parts": parts,
        }
    results["cpu_fast_path"] = fast

    bf16 = {}
    if cpu_bf16_supported():
        for n in ("hubert_base", "distilhubert", "star_hubert", "star_hubert_l", "melhubert_base_20ms"):
            model = models.get(n) or build_model(preset_config(n)).eval()
            f32 = functools.partial(model.set_speed_options, cpu_bf16="off")
            b16 = functools.partial(model.set_speed_options, cpu_bf16="on")
            with torch.inference_mode():
                a, b = f32()(wav[None]).hidden_states, b16()(wav[None]).hidden_states
            cos = min(torch.nn.functional.cosine_similarity(x, y, dim=-1).mean().item() for x, y in zip(a, b))
            t_f32, t_b16 = interleaved([lambda: f32()(wav[None]), lambda: b16()(wav[None])], args.repeats)
            f32()
            bf16[n] = {"fp32_s": t_f32, "bf16_s": t_b16, "speedup": t_f32 / t_b16, "lowest_layer_cos": cos}
    results["cpu_bf16"] = bf16

    # 5. HuBERT BASE through S3PRLUpstream, same weights
    from s3prl.nn import S3PRLUpstream

    from s3prl_plugins.models.checkpoint import save_checkpoint
    from s3prl_plugins.upstream.expert import UpstreamExpert

    s3prl_file = os.path.join(tmp, "hubert.pt")  # written above, s3prl's format
    converted = os.path.join(tmp, "hubert_converted.pt")
    save_checkpoint(converted, load_pretrained(s3prl_file))
    theirs = S3PRLUpstream("hubert_local", path_or_url=s3prl_file).eval()
    ours_up = S3PRLUpstream("star_hubert_local", path_or_url=converted).eval()
    ours_model = ours_up.upstream.model
    ours_expert = UpstreamExpert(model=ours_model)
    w, wl = wav[None], torch.tensor([wav.numel()])
    through = {}
    for mode in ("off", "auto"):
        ours_model.set_speed_options(cpu_bf16=mode)
        fns = [
            lambda: theirs(w, wl),
            lambda: ours_up(w, wl),
            lambda: ours_expert([wav]),
            lambda: ours_model(w),
        ]
        t_theirs, t_up, t_expert, t_raw = interleaved(fns, args.repeats)
        through[mode] = {
            "s3prl_s": t_theirs,
            "ours_s": t_up,
            "ours_expert_s": t_expert,
            "ours_raw_s": t_raw,
            "speedup": t_theirs / t_up,
        }
    ours_model.set_speed_options(cpu_bf16="auto")
    results["through S3PRLUpstream"] = through

    print(f"CPU, {args.threads} threads, batch 1, {args.seconds:.0f} s utterance, median of {args.repeats}")
    for k, v in results.items():
        if k in ("cpu_fast_path", "cpu_bf16", "through S3PRLUpstream"):
            continue
        extra = f"  (outputs max |diff| {v['max_abs_diff']:.1e})" if "max_abs_diff" in v else ""
        print(f"{k:<32} speedup {v['speedup']:.2f}x{extra}")
    print("cpu_fast_path vs plain forms (ms per call: total | CNN, positional conv, layers)")
    for n, v in fast.items():
        cells = " / ".join(
            f"{v[k + '_s'] * 1e3:.0f} | " + ", ".join(f"{t * 1e3:.0f}" for t in v["parts"][k].values())
            for k in ("plain", "fast")
        )
        print(f"  {n:<16} {v['speedup']:.2f}x  plain / fast: {cells}  (max rel diff {v['max_rel_diff']:.1e})")
    if bf16:
        print("cpu_bf16 (layers under bf16 autocast) vs float32 (ms per call; lowest per-layer mean cosine)")
        for n, v in bf16.items():
            print(
                f"  {n:<20} {v['speedup']:.2f}x  {v['fp32_s'] * 1e3:.0f} -> {v['bf16_s'] * 1e3:.0f} ms  "
                f"cos {v['lowest_layer_cos']:.6f}"
            )
    else:
        print("cpu_bf16: not measured, this CPU reports no bf16 arithmetic (the option runs float32 here)")
    print(
        "HuBERT BASE through S3PRLUpstream, same weights (ms: s3prl hubert_local | ours: S3PRLUpstream / expert / raw)"
    )
    for mode, v in through.items():
        print(
            f"  ours cpu_bf16={mode:<5} {v['speedup']:.2f}x  {v['s3prl_s'] * 1e3:.0f} | {v['ours_s'] * 1e3:.0f} / "
            f"{v['ours_expert_s'] * 1e3:.0f} / {v['ours_raw_s'] * 1e3:.0f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
