"""The report of a recipe: every model's size and cost next to what it scored, as JSON, Markdown and PNGs.

:func:`build_report` gathers, per model: parameters (without pre-training heads), MACs and MACs-C (without
the CNN) per second of speech, the encoder's frame rate, the CPU real-time factor, the in-process probes
(phone error of ``bin.probe``; KS/SID accuracy of ``bin.probe_utt``), the stock SUPERB runner's metrics
(``superb_<split>.json`` of ``bin/run_downstream -m evaluate``, or a submission's ``results.json``) with
their SUPERB scores, and the ESPnet ASR-5k WER (``result.json`` of ``bin/espnet_asr``).
:func:`write_markdown` writes the comparison table and links the plots: the trade-off of each metric
against MACs and against parameters (:func:`plot_tradeoff`), phone error against frame rate
(:func:`plot_rate_tradeoff`), and the training-loss curves read from the TensorBoard logs with
tensorboard's own event reader (:func:`loss_curves`, :func:`plot_loss_curves`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)


def model_summary(
    source: str, seconds: float = 10.0, frame_rate_hz: Optional[float] = None, rtf: bool = True
) -> Dict[str, object]:
    """Parameters (without pre-training heads), MACs and MACs-C (without the CNN) per second of speech,
    and the encoder's frame rate of a model. A variable-rate model (CIF, given segments) is counted at
    ``frame_rate_hz`` (measured by its probe) when given, else at its config's nominal rate."""
    from s3prl_plugins.models.loading import load_pretrained

    if str(source).endswith(".onnx"):
        return onnx_summary(source, seconds, frame_rate_hz, rtf)
    model = load_pretrained(source)
    summary = _cost(model, seconds, frame_rate_hz)
    rtf_cpu = None
    if rtf:
        import torch

        from s3prl_plugins.eval.probe.profile import measure_rtf

        model.eval()
        rtf_cpu = measure_rtf(lambda w: model(w, torch.tensor([w.shape[1]])), seconds, "cpu", repeats=3, warmup=1)
    return dict(source=source, **summary, rtf_cpu=rtf_cpu)


def _cost(model, seconds: float, frame_rate_hz: Optional[float]) -> Dict[str, object]:
    from s3prl_plugins.eval.probe.profile import ssl_macs
    from s3prl_plugins.models.ssl_model import count_parameters

    fps = None
    variable = model.subsampler is not None and model.subsampler.variable
    if variable and frame_rate_hz:
        fps = (16000 / model.downsample_rate) / frame_rate_hz
    macs = ssl_macs(model, int(seconds * 16000), fps)
    return {
        "architecture": model.config.name,
        "layers": model.config.num_layers,
        "width": model.config.embed_dim,
        "params": count_parameters(model, include_head=False),
        "gmacs_per_second": macs["macs"] / seconds / 1e9,
        "gmacs_c_per_second": (macs["macs"] - macs["macs_frontend"]) / seconds / 1e9,
        "frame_rate_hz": frame_rate_hz if variable and frame_rate_hz else macs["encoder_frames"] / seconds,
    }


def onnx_summary(
    source: str, seconds: float = 10.0, frame_rate_hz: Optional[float] = None, rtf: bool = True
) -> Dict[str, object]:
    """:func:`model_summary` of an exported graph (``bin/export``): parameters and MACs of the model its
    metadata describes (int8 keeps the count, not the width), the real-time factor under onnxruntime on as
    many threads as torch uses, and the file's size."""
    import onnx
    import torch

    from s3prl_plugins.models import build_model
    from s3prl_plugins.models.config import SSLModelConfig

    meta = {p.key: p.value for p in onnx.load(source, load_external_data=False).metadata_props}
    if "s3prl_plugins.config" not in meta:
        raise ValueError(f"{source}: no s3prl_plugins.config in its metadata: not a graph of bin/export")
    with torch.device("meta"):
        model = build_model(SSLModelConfig.from_dict(json.loads(meta["s3prl_plugins.config"])))
    summary = _cost(model, seconds, frame_rate_hz)
    rtf_cpu = None
    if rtf:
        import onnxruntime as ort

        from s3prl_plugins.eval.probe.profile import measure_rtf

        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])

        def run(w):
            session.run(None, {"waveforms": w.numpy(), "lengths": np.array([w.shape[1]], dtype=np.int64)})

        rtf_cpu = measure_rtf(run, seconds, "cpu", repeats=3, warmup=1)
    return dict(source=source, **summary, rtf_cpu=rtf_cpu, file_mb=os.path.getsize(source) / 1e6)


def superb_metrics(path: str) -> Dict[str, float]:
    """SUPERB metrics of one model: a ``results.json`` (``bin/superb_submission``), one ``superb_<split>.json``,
    or a folder searched for the test-split ``superb_*.json`` files ``bin/run_downstream -m evaluate`` writes
    (:func:`s3prl_plugins.eval.superb.score.read_results`, as ``bin/superb_score`` reads them)."""
    from s3prl_plugins.eval.superb.score import read_results

    return read_results([path])[0]


def _overall_cell(r: Dict[str, object], key: str, fmt: str) -> Optional[str]:
    """SUPERB Overall / General. of a report row: the score when all tasks were run; otherwise the partial
    mean with what it averages (``"36.11 (mean of 1/11: KS)"``); None without SUPERB results."""
    if r.get(f"superb_{key}") is not None:
        return format(r[f"superb_{key}"], fmt)  # type: ignore[arg-type]
    if r.get(f"superb_partial_{key}") is None:
        return None
    names = (
        list(r.get("superb") or {})  # type: ignore[call-overload]
        if key == "overall"
        else list(r.get("superb_tasks") or [])  # type: ignore[call-overload]
    )
    total = 11 if key == "overall" else 10
    return (
        f"{format(r[f'superb_partial_{key}'], fmt)} (mean of {len(names)}/{total}: "  # type: ignore[arg-type]
        f"{', '.join(names)})"
    )


def build_report(
    models: Dict[str, str],
    probes: Dict[str, str],
    utt_probes: Optional[Dict[str, Dict[str, str]]] = None,
    superb: Optional[Dict[str, str]] = None,
    asr5k: Optional[Dict[str, str]] = None,
    rtf: bool = True,
) -> Dict[str, Dict[str, object]]:
    """``probes``: model -> PER result.json; ``utt_probes``: task -> model -> accuracy result.json
    (entries ``<task>_acc``; None where the file is missing); ``superb``: model -> what :func:`superb_metrics`
    reads (entries ``superb`` and the scores); ``asr5k``: model -> ``bin/espnet_asr``'s result.json."""
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
        report[name] = model_summary(source, frame_rate_hz=measured.get(name), rtf=rtf)
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
    from s3prl_plugins.eval.superb.score import read_results, superb_scores

    for name, path in (superb or {}).items():
        metrics, _, in_units = read_results([path])
        scores = superb_scores(metrics, path, in_units=in_units)
        entry = {
            "superb": scores.metrics,
            "superb_missing": list(scores.missing),
            "superb_tasks": list(scores.task_scores),
        }
        if scores.complete:  # Overall and General. are defined over all tasks
            entry.update({"superb_overall": scores.overall, "superb_generalizability": scores.generalizability})
        else:
            entry.update(
                {
                    "superb_partial": scores.scope,
                    "superb_partial_overall": scores.overall,
                    "superb_partial_generalizability": scores.generalizability,
                }
            )
        report.setdefault(name, {}).update(entry)
    for name, path in (asr5k or {}).items():
        with open(path, encoding="utf-8") as f:
            res = json.load(f)
        tests = res["test"]
        first = next(iter(tests))
        report.setdefault(name, {}).update(
            {"asr5k_wer": tests[first]["wer"], "asr5k_test": first, "asr5k_nbpe": res.get("nbpe")}
        )
    return report


def format_report(report: Dict[str, Dict[str, object]]) -> str:
    tasks = sorted({k[: -len("_acc")] for r in report.values() for k in r if k.endswith("_acc")})

    def pct(v: Optional[float]) -> str:
        return f"{100 * v:.1f}%" if v is not None else "-"

    width = max([18] + [len(n) for n in report])
    superb_keys = [
        k
        for k in ("PR", "ASR", "KS", "QbE", "SID", "ASV", "SD", "IC", "SF-F1", "SF-CER", "ER")
        if any(k in (r.get("superb") or {}) for r in report.values())
    ]
    has_asr5k = any(r.get("asr5k_wer") is not None for r in report.values())
    has_rtf = any(r.get("rtf_cpu") is not None for r in report.values())
    head = (
        f"{'model':<{width}} {'params':>12} {'GMACs/s':>9} {'GMACs-C/s':>10} {'rate Hz':>8}"
        + (f" {'RTF':>7}" if has_rtf else "")
        + f" {'probe PER':>10}"
        + "".join(f" {t.upper() + ' acc':>8}" for t in tasks)
        + "".join(f" {'S-' + k:>8}" for k in superb_keys)
        + (f" {'Overall':>8}" if superb_keys else "")
        + (f" {'ASR-5k':>7}" if has_asr5k else "")
    )
    rows = [head + "  source"]
    for name, r in report.items():
        params = f"{r['params']:,}" if "params" in r else "-"
        macs = f"{r['gmacs_per_second']:.3f}" if "gmacs_per_second" in r else "-"
        macs_c = f"{r['gmacs_c_per_second']:.3f}" if "gmacs_c_per_second" in r else "-"
        rate = f"{r['frame_rate_hz']:.1f}" if r.get("frame_rate_hz") else "-"
        accs = "".join(f" {pct(r.get(f'{t}_acc')):>8}" for t in tasks)  # type: ignore[arg-type]
        sup = r.get("superb") or {}
        sups = "".join(f" {sup[k]:>8.2f}" if k in sup else f" {'-':>8}" for k in superb_keys)
        if superb_keys:
            sups += f" {_overall_cell(r, 'overall', '.2f') or '-':>8}"
        rtf_s = (f" {r['rtf_cpu']:>7.4f}" if r.get("rtf_cpu") is not None else f" {'-':>7}") if has_rtf else ""
        asr = (f" {r['asr5k_wer']:>6.1f}%" if r.get("asr5k_wer") is not None else f" {'-':>7}") if has_asr5k else ""
        rows.append(
            f"{name:<{width}} {params:>12} {macs:>9} {macs_c:>10} {rate:>8}{rtf_s} {pct(r.get('probe_per')):>10}"
            f"{accs}{sups}{asr}  {r.get('source', '')}"
        )  # type: ignore[arg-type]
    return "\n".join(rows)


def _scatter_labelled(ax, points, colors: Dict[str, str]) -> None:
    """One dot per (name, x, y) in the model's colour, its label beside it; labels of dots that (nearly) coincide
    -- within 12% of the x range and 6% of the y range, e.g. students of one size on the parameter axis --
    are stacked downwards one line each instead of printed over each other."""
    if not points:
        return
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    dx, dy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    placed: List[Tuple[float, float]] = []
    for n, x, y in sorted(points, key=lambda p: (p[1], -p[2])):
        ax.scatter(x, y, s=36, color=colors[n])
        near = sum(abs(x - px) < 0.12 * dx and abs(y - py) < 0.06 * dy for px, py in placed)
        ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4 - 11 * near), fontsize=8)
        placed.append((x, y))


def plot_rate_tradeoff(report: Dict[str, Dict[str, object]], path: str, title: str = "") -> Optional[str]:
    """Phone error against the encoder's average frame rate and against MACs-C per second (one PNG,
    two panels; Meng et al. 2022 Table 2's trade-off): every model with a probe PER. Returns the path,
    or None when fewer than two models have both."""
    from s3prl_plugins.eval.plots import colors_by_name, pyplot, save_png

    plt = pyplot()

    pts = [(n, r) for n, r in report.items() if r.get("probe_per") is not None and r.get("frame_rate_hz")]
    if len(pts) < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in (
        (axes[0], "frame_rate_hz", "average frame rate of the encoder (Hz)"),
        (axes[1], "gmacs_c_per_second", "GMACs-C per second of speech (without the CNN)"),
    ):
        _scatter_labelled(ax, [(n, float(r[key]), 100 * float(r["probe_per"])) for n, r in pts], colors_by_name(report))
        ax.set_xlabel(label)
        ax.set_ylabel("phone error rate, linear probe (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(title or "phone error vs frame rate and compute")
    fig.tight_layout()
    return save_png(fig, path)


#: report entry -> (axis label, scale to %, lower is better)
METRICS = {
    "probe_per": ("probe PER (%)", 100.0, True),
    "ks_acc": ("probe KS acc. (%)", 100.0, False),
    "sid_acc": ("probe SID acc. (%)", 100.0, False),
    "asr5k_wer": ("ASR-5k WER (%)", 1.0, True),
    "superb_overall": ("SUPERB Overall", 1.0, False),
}


def _metric_points(report, key):
    label, scale, _ = METRICS[key]
    return [(n, r, scale * float(r[key])) for n, r in report.items() if r.get(key) is not None and r.get("params")]


def plot_tradeoff(report: Dict[str, Dict[str, object]], path: str, title: str = "") -> Optional[str]:
    """Each metric of the report (rows) against GMACs per second, parameters and -- where measured -- the CPU
    real-time factor (columns), one point per model: the recipe's comparison on one page. Returns the path, or
    None when no metric has two models."""
    from s3prl_plugins.eval.plots import colors_by_name, pyplot, save_png

    keys = [k for k in METRICS if len(_metric_points(report, k)) >= 2]
    if not keys:
        return None
    plt = pyplot()
    colors = colors_by_name(report)
    columns = [
        ("gmacs_per_second", "GMACs per second of speech", 1.0),
        ("params", "parameters (millions, without heads)", 1e-6),
    ]
    if sum(r.get("rtf_cpu") is not None for r in report.values()) >= 2:
        # measured latency: where a deployed graph (int8, ...) differs from its source, which MACs and
        # parameters cannot show
        columns.append(("rtf_cpu", "CPU real-time factor (time / audio; measured)", 1.0))
    fig, axes = plt.subplots(len(keys), len(columns), figsize=(5.5 * len(columns), 3.6 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        pts = _metric_points(report, key)
        for col, (x_key, x_label, x_scale) in enumerate(columns):
            ax = axes[row][col]
            xy = [(n, float(r[x_key]) * x_scale, y) for n, r, y in pts if r.get(x_key) is not None]
            _scatter_labelled(ax, xy, colors)
            ax.set_xlabel(x_label)
            ax.set_ylabel(METRICS[key][0] + (" - lower is better" if METRICS[key][2] else " - higher is better"))
            ax.grid(alpha=0.3)
    fig.suptitle(title or "what each model scores against what it costs")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return save_png(fig, path)


def loss_curves(logdir: str) -> Dict[str, List[Tuple[int, float]]]:
    """Scalar series whose tag has "loss" in it, read with tensorboard's own event reader (every event file
    under ``logdir``); ``{tag: [(step, value), ...]}`` sorted by step."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    files = sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True))
    if not files:
        raise ValueError(f"{logdir}: no TensorBoard event files")
    out: Dict[str, Dict[int, float]] = {}
    for f in files:
        acc = EventAccumulator(f, size_guidance={SCALARS: 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if "loss" in tag.lower():
                for e in acc.Scalars(tag):
                    out.setdefault(tag, {})[int(e.step)] = float(e.value)  # a resumed run rewrites its last steps
    return {tag: sorted(v.items()) for tag, v in out.items()}


def plot_loss_curves(
    curves: Dict[str, Dict[str, List[Tuple[int, float]]]], path: str, title: str = ""
) -> Optional[str]:
    """One panel per model: its loss series against the training step."""
    from s3prl_plugins.eval.plots import pyplot, save_png

    curves = {n: c for n, c in curves.items() if c}
    if not curves:
        return None
    plt = pyplot()
    cols = min(3, len(curves))
    rows = (len(curves) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, series) in zip([a for r in axes for a in r], curves.items()):
        for tag, pts in sorted(series.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=tag, lw=1.2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("update")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in [a for r in axes for a in r][len(curves) :]:
        ax.axis("off")
    fig.suptitle(title or "training losses (TensorBoard)")
    fig.tight_layout()
    return save_png(fig, path)


def write_markdown(
    report: Dict[str, Dict[str, object]],
    path: str,
    title: str = "Report",
    plots: Optional[Dict[str, str]] = None,
    notes: Sequence[str] = (),
) -> str:
    """The comparison table (one row per model) and the plots, as Markdown; written atomically."""

    def cell(v, fmt):
        return "-" if v is None else format(v, fmt)

    superb_keys = [
        k
        for k in ("PR", "ASR", "KS", "QbE", "SID", "ASV", "SD", "IC", "SF-F1", "SF-CER", "ER")
        if any(k in (r.get("superb") or {}) for r in report.values())
    ]
    tasks = sorted({k[: -len("_acc")] for r in report.values() for k in r if k.endswith("_acc")})
    head = ["model", "params (M)", "GMACs/s", "GMACs-C/s", "rate (Hz)", "RTF (CPU)", "probe PER %"]
    head += [f"{t.upper()} acc %" for t in tasks] + [f"SUPERB {k}" for k in superb_keys]
    head += (["Overall", "General."] if superb_keys else []) + (
        ["ASR-5k WER %"] if any(r.get("asr5k_wer") is not None for r in report.values()) else []
    )
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in report.items():
        row = [
            name,
            cell(None if r.get("params") is None else r["params"] / 1e6, ".3f"),
            cell(r.get("gmacs_per_second"), ".3f"),
            cell(r.get("gmacs_c_per_second"), ".3f"),
            cell(r.get("frame_rate_hz"), ".1f"),
            cell(r.get("rtf_cpu"), ".4f"),
            cell(None if r.get("probe_per") is None else 100 * r["probe_per"], ".1f"),
        ]
        row += [cell(None if r.get(f"{t}_acc") is None else 100 * r[f"{t}_acc"], ".1f") for t in tasks]
        sup = r.get("superb") or {}
        row += [cell(sup.get(k), ".2f") for k in superb_keys]
        if superb_keys:
            row += [_overall_cell(r, "overall", ".2f") or "-", _overall_cell(r, "generalizability", ".0f") or "-"]
        if "ASR-5k WER %" in head:
            row += [cell(r.get("asr5k_wer"), ".1f")]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Params without pre-training heads; MACs per second of speech (GMACs-C: without the CNN front-end); "
        "RTF: seconds of compute per second of audio, 10 s utterance, batch 1. Probe: this package's in-process "
        "probes; SUPERB: s3prl's own runner (`bin/run_downstream`), Overall/General. over all 11 metrics / 10 tasks, "
        "or the partial mean of the tasks named in the cell (missing ones are listed in report.json); "
        "ASR-5k: ESPnet (`bin/espnet_asr`).",
    ]
    lines += [""] + [f"- {n}" for n in notes] if notes else []
    base = os.path.dirname(os.path.abspath(path))
    for caption, png in (plots or {}).items():
        if png and os.path.isfile(png):
            lines += ["", f"## {caption}", "", f"![{caption}]({os.path.relpath(os.path.abspath(png), base)})"]
    os.makedirs(base, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)
    return path
