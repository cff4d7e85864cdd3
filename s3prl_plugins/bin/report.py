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


def model_summary(source: str, seconds: float = 10.0) -> Dict[str, object]:
    """Parameters (without pre-training heads) and MACs per second of speech of a model."""
    from s3prl_plugins.eval.profile import ssl_macs
    from s3prl_plugins.models.loading import load_pretrained
    from s3prl_plugins.models.ssl_model import count_parameters

    model = load_pretrained(source)
    macs = ssl_macs(model, int(seconds * 16000))
    return {
        "source": source,
        "architecture": model.config.name,
        "layers": model.config.num_layers,
        "width": model.config.embed_dim,
        "params": count_parameters(model, include_head=False),
        "gmacs_per_second": macs["macs"] / seconds / 1e9,
    }


def build_report(models: Dict[str, str], probes: Dict[str, str], utt_probes: Optional[Dict[str, Dict[str, str]]] = None) -> Dict[str, Dict[str, object]]:
    """``probes``: model -> PER result.json; ``utt_probes``: task -> model -> accuracy result.json
    (entries ``<task>_acc``; None where the file is missing)."""
    report: Dict[str, Dict[str, object]] = {}
    for name, source in models.items():
        report[name] = model_summary(source)
    for name, path in probes.items():
        entry = report.setdefault(name, {})
        if os.path.isfile(path):
            with open(path) as f:
                entry["probe_per"] = json.load(f)["per"]
        else:
            entry["probe_per"] = None
            logging.warning("no probe result at %s", path)
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

    head = f"{'model':<18} {'params':>12} {'GMACs/s':>9} {'probe PER':>10}" + "".join(f" {t.upper() + ' acc':>8}" for t in tasks)
    rows = [head + "  source"]
    for name, r in report.items():
        params = f"{r['params']:,}" if "params" in r else "-"
        macs = f"{r['gmacs_per_second']:.3f}" if "gmacs_per_second" in r else "-"
        accs = "".join(f" {pct(r.get(f'{t}_acc')):>8}" for t in tasks)  # type: ignore[arg-type]
        rows.append(f"{name:<18} {params:>12} {macs:>9} {pct(r.get('probe_per')):>10}{accs}  {r.get('source', '')}")  # type: ignore[arg-type]
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=[])
    p.add_argument("--probes", nargs="*", default=[], help="name=PER result.json of bin.probe")
    p.add_argument("--utt-probes", nargs="*", default=[], help="task:name=result.json of bin.probe_utt (e.g. ks:student=...)")
    p.add_argument("--out")
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
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
