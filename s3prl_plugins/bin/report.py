"""Report of a recipe: parameters and MACs of each model, next to its probe results (phone error
rate of ``bin.probe``; accuracies of ``bin.probe_utt`` for utterance tasks such as KS and SID).

Usage::

    python -m s3prl_plugins.bin.report --models teacher=hubert_base student=exp/star/model.pt \
        --probes teacher=exp/probe/teacher/result.json student=exp/star/probe/result.json \
        [--utt-probes ks:student=exp/probe_ks/student/result.json ...] --out exp/star/report.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional


def _pairs(items: List[str], what: str) -> Dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--{what} expects name=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def model_summary(source: str, seconds: float = 10.0, frame_rate_hz: Optional[float] = None) -> Dict[str, object]:
    """Parameters (without pre-training heads), MACs and MACs-C (without the CNN) per second of speech,
    and the encoder's frame rate of a model. A variable-rate model (CIF, given segments) is counted at
    ``frame_rate_hz`` (measured by its probe) when given, else at its config's nominal rate."""
    from s3prl_plugins.eval.profile import ssl_macs
    from s3prl_plugins.models.loading import load_pretrained
    from s3prl_plugins.models.ssl_model import count_parameters

    model = load_pretrained(source)
    fps = None
    variable = model.subsampler is not None and model.subsampler.variable
    if variable and frame_rate_hz:
        fps = (16000 / model.downsample_rate) / frame_rate_hz
    macs = ssl_macs(model, int(seconds * 16000), fps)
    return {
        "source": source,
        "architecture": model.config.name,
        "layers": model.config.num_layers,
        "width": model.config.embed_dim,
        "params": count_parameters(model, include_head=False),
        "gmacs_per_second": macs["macs"] / seconds / 1e9,
        "gmacs_c_per_second": (macs["macs"] - macs["macs_frontend"]) / seconds / 1e9,
        "frame_rate_hz": frame_rate_hz if variable and frame_rate_hz else macs["encoder_frames"] / seconds,
    }


def build_report(models: Dict[str, str], probes: Dict[str, str], utt_probes: Optional[Dict[str, Dict[str, str]]] = None) -> Dict[str, Dict[str, object]]:
    """``probes``: model -> PER result.json; ``utt_probes``: task -> model -> accuracy result.json
    (entries ``<task>_acc``; None where the file is missing)."""
    report: Dict[str, Dict[str, object]] = {}
    measured: Dict[str, float] = {}
    per: Dict[str, Optional[float]] = {}
    for name, path in probes.items():
        if os.path.isfile(path):
            with open(path) as f:
                res = json.load(f)
            per[name] = res["per"]
            if res.get("frame_rate_hz"):
                measured[name] = float(res["frame_rate_hz"])
        else:
            per[name] = None
            logging.warning("no probe result at %s", path)
    for name, source in models.items():
        report[name] = model_summary(source, frame_rate_hz=measured.get(name))
    for name, value in per.items():
        report.setdefault(name, {})["probe_per"] = value
    for task, paths in (utt_probes or {}).items():
        for name, path in paths.items():
            entry = report.setdefault(name, {})
            if os.path.isfile(path):
                with open(path) as f:
                    entry[f"{task}_acc"] = json.load(f)["accuracy"]
            else:
                entry[f"{task}_acc"] = None
                logging.warning("no %s probe result at %s", task, path)
    return report


def format_report(report: Dict[str, Dict[str, object]]) -> str:
    tasks = sorted({k[: -len("_acc")] for r in report.values() for k in r if k.endswith("_acc")})

    def pct(v: Optional[float]) -> str:
        return f"{100 * v:.1f}%" if v is not None else "-"

    width = max([18] + [len(n) for n in report])
    head = f"{'model':<{width}} {'params':>12} {'GMACs/s':>9} {'GMACs-C/s':>10} {'rate Hz':>8} {'probe PER':>10}" + "".join(f" {t.upper() + ' acc':>8}" for t in tasks)
    rows = [head + "  source"]
    for name, r in report.items():
        params = f"{r['params']:,}" if "params" in r else "-"
        macs = f"{r['gmacs_per_second']:.3f}" if "gmacs_per_second" in r else "-"
        macs_c = f"{r['gmacs_c_per_second']:.3f}" if "gmacs_c_per_second" in r else "-"
        rate = f"{r['frame_rate_hz']:.1f}" if r.get("frame_rate_hz") else "-"
        accs = "".join(f" {pct(r.get(f'{t}_acc')):>8}" for t in tasks)  # type: ignore[arg-type]
        rows.append(f"{name:<{width}} {params:>12} {macs:>9} {macs_c:>10} {rate:>8} {pct(r.get('probe_per')):>10}{accs}  {r.get('source', '')}")  # type: ignore[arg-type]
    return "\n".join(rows)


def plot_rate_tradeoff(report: Dict[str, Dict[str, object]], path: str, title: str = "") -> Optional[str]:
    """Phone error against the encoder's average frame rate and against MACs-C per second (one PNG,
    two panels; Meng et al. 2022 Table 2's trade-off): every model with a probe PER. Returns the path,
    or None when fewer than two models have both."""
    from s3prl_plugins.eval.plots import pyplot, save_png

    plt = pyplot()

    pts = [(n, r) for n, r in report.items() if r.get("probe_per") is not None and r.get("frame_rate_hz")]
    if len(pts) < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "frame_rate_hz", "average frame rate of the encoder (Hz)"), (axes[1], "gmacs_c_per_second", "GMACs-C per second of speech (without the CNN)")):
        for n, r in pts:
            ax.scatter(float(r[key]), 100 * float(r["probe_per"]), s=36)
            ax.annotate(n, (float(r[key]), 100 * float(r["probe_per"])), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("phone error rate, linear probe (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "phone error vs frame rate and compute")
    fig.tight_layout()
    return save_png(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=[])
    p.add_argument("--probes", nargs="*", default=[], help="name=PER result.json of bin.probe")
    p.add_argument("--utt-probes", nargs="*", default=[], help="task:name=result.json of bin.probe_utt (e.g. ks:student=...)")
    p.add_argument("--out")
    p.add_argument("--plot", help="PNG: phone error vs frame rate and MACs-C")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        utt: Dict[str, Dict[str, str]] = {}
        for key, path in _pairs(args.utt_probes, "utt-probes").items():
            if ":" not in key:
                raise ValueError(f"--utt-probes expects task:name=path, got {key}={path}")
            task, name = key.split(":", 1)
            utt.setdefault(task, {})[name] = path
        report = build_report(_pairs(args.models, "models"), _pairs(args.probes, "probes"), utt)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.plot and plot_rate_tradeoff(report, args.plot):
        print(f"plot: {args.plot}")
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
