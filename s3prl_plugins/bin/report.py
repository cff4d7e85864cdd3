"""Report of a recipe: size and cost of each model (parameters, MACs, MACs-C, frame rate, CPU RTF) next to
what it scored -- the in-process probes, s3prl's own SUPERB runner with the SUPERB scores, ESPnet ASR-5k --
as a table on stdout, JSON, Markdown with PNG plots (trade-offs, loss curves from TensorBoard).

Usage::

    python -m s3prl_plugins.bin.report --models teacher=hubert_base student=exp/star/model.pt \
        --probes teacher=exp/probe/teacher/result.json student=exp/star/probe/result.json \
        [--utt-probes ks:student=exp/probe_ks/student/result.json ...] \
        [--superb student=exp/superb/student] [--asr5k student=exp/asr5k/result.json] \
        [--tensorboard student=exp/star/tensorboard] --out exp/star/report.json --markdown exp/star/report.md

The library behind it: :mod:`s3prl_plugins.eval.report.report`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Dict, List

from s3prl_plugins.eval.report.report import (
    build_report,
    format_report,
    loss_curves,
    plot_loss_curves,
    plot_rate_tradeoff,
    plot_tradeoff,
    write_markdown,
)


def _pairs(items: List[str], what: str) -> Dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--{what} expects name=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=[])
    p.add_argument("--probes", nargs="*", default=[], help="name=PER result.json of bin.probe")
    p.add_argument(
        "--utt-probes", nargs="*", default=[], help="task:name=result.json of bin.probe_utt (e.g. ks:student=...)"
    )
    p.add_argument(
        "--superb", nargs="*", default=[], help="name=experiments folder (superb_test*.json) or results.json"
    )
    p.add_argument("--asr5k", nargs="*", default=[], help="name=result.json of bin/espnet_asr")
    p.add_argument("--tensorboard", nargs="*", default=[], help="name=TensorBoard log folder of its training")
    p.add_argument("--out", help="report.json")
    p.add_argument("--markdown", help="report.md (plots are written beside it)")
    p.add_argument("--title", default="Report")
    p.add_argument("--no-rtf", action="store_true", help="skip timing the CPU real-time factor")
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
        report = build_report(
            _pairs(args.models, "models"),
            _pairs(args.probes, "probes"),
            utt,
            superb=_pairs(args.superb, "superb"),
            asr5k=_pairs(args.asr5k, "asr5k"),
            rtf=not args.no_rtf,
        )
        curves = {n: loss_curves(d) for n, d in _pairs(args.tensorboard, "tensorboard").items()}
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.plot and plot_rate_tradeoff(report, args.plot):
        print(f"plot: {args.plot}")
    if args.markdown:
        stem = os.path.splitext(args.markdown)[0]
        plots = {
            "Trade-off: metric against MACs and parameters": plot_tradeoff(report, stem + "_tradeoff.png", args.title),
            "Phone error against frame rate": plot_rate_tradeoff(report, stem + "_rate.png"),
            "Training losses": plot_loss_curves(curves, stem + "_losses.png"),
        }
        write_markdown(report, args.markdown, args.title, plots)
        print(f"markdown: {args.markdown} (plots: {', '.join(p for p in plots.values() if p) or 'none'})")
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
