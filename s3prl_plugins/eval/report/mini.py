"""The mini recipe's report (egs/mini stage 8): what each stage made, the probes' table, the plots and
``exp/report.{json,md}`` -- read from the recipe's folder (the current directory)."""

import glob
import json
import os
from typing import List, Sequence

from s3prl_plugins.eval.report.report import (
    build_report,
    format_report,
    loss_curves,
    plot_loss_curves,
    plot_rate_tradeoff,
    plot_tradeoff,
    write_markdown,
)


def mini_report(subsampling: Sequence[str] = ()) -> List[str]:
    """Write ``exp/report.json``, ``exp/report.md`` and the PNG plots and return the summary's lines (what
    each stage made, the probes' table), which ``bin.mini_report`` prints; ``subsampling``: the recipe's
    subsampled students (``distilhubert_tiny_<v>``)."""
    lines: List[str] = []

    def load(p):
        return json.load(open(p)) if os.path.isfile(p) else None

    lines.append("corpus:        data/mini_corpus (LibriSpeech layout), data dirs in data/{train,dev,test}")
    rep = load("exp/align/report.json")
    if rep:
        t = rep["dirs"].get("test", {})
        lines.append(
            f"alignments:    exp/align/{{train,dev,test}}/*.TextGrid ({rep['method']}); test word-boundary error "
            f"{t.get('mean_abs_boundary_ms', float('nan')):.1f} ms mean, {t.get('failed', 0)} failed"
        )
    where = {
        "hubert_tiny": (
            "teacher:       exp/hubert_tiny/model.pt and exp/hubert_tiny/hubert_local.pt (s3prl hubert_local)"
        ),
        "melhubert_tiny": "teacher:       exp/melhubert_tiny/model.pt (melhubert_local)",
        "star_tiny": "student:       exp/star_tiny/model.pt (STaR; s3prl star_hubert_local)",
        "distilhubert_tiny": (
            "student:       exp/distilhubert_tiny/model.pt (DistilHuBERT-style; s3prl star_hubert_local)"
        ),
    }
    for v in subsampling:
        where[f"distilhubert_tiny_{v}"] = (
            f"student:       exp/distilhubert_tiny_{v}/model.pt (DistilHuBERT-style, subsampled: {v}; "
            "s3prl distilhubert_cif_local)"
        )
    models = {}
    for name, line in where.items():
        if os.path.isfile(f"exp/{name}/model.pt"):
            lines.append(line)
            models[name] = f"exp/{name}/model.pt"
    for name in list(models):  # the deployed graphs (stage 5's --int8), each beside its source
        if os.path.isfile(f"exp/{name}_int8.onnx"):
            lines.append(f"deployed:      exp/{name}_int8.onnx (int8 ONNX of {name}; onnxruntime, s3prl onnx_local)")
            models[f"{name}_int8"] = f"exp/{name}_int8.onnx"
            where[f"{name}_int8"] = ""
    names = ["fbank"] + list(where)
    utt = {
        k: {n: f"exp/probe_{k}/{n}/result.json" for n in names if os.path.isfile(f"exp/probe_{k}/{n}/result.json")}
        for k in ("ks", "sid")
    }
    superb = {n: f"exp/superb/{n}" for n in names if glob.glob(f"exp/superb/{n}/*/superb_test*.json")}
    asr5k = {n: f"exp/asr5k_{n}/result.json" for n in names if os.path.isfile(f"exp/asr5k_{n}/result.json")}
    report = build_report(
        models,
        {n: f"exp/probe/{n}/result.json" for n in names if os.path.isfile(f"exp/probe/{n}/result.json")},
        {k: v for k, v in utt.items() if v},
        superb=superb,
        asr5k=asr5k,
    )
    with open("exp/report.json.tmp", "w") as f:
        json.dump(report, f, indent=2)
    os.replace("exp/report.json.tmp", "exp/report.json")
    lines.append(
        "\nprobes on frozen features -> exp/report.json: phone error rate (linear CTC, test);"
        " KS/SID accuracy (mean+std pooling, logistic regression, test)"
    )
    lines.append(format_report(report))
    students = {k: v for k, v in report.items() if k.startswith("distilhubert_tiny")}
    if plot_rate_tradeoff(
        students, "exp/subsampling.png", "mini corpus: DistilHuBERT-style students by sequence subsampling"
    ):
        lines.append(
            "plot:          exp/subsampling.png (phone error vs frame rate and GMACs-C/s of the "
            "DistilHuBERT-style students)"
        )
    rates = load("exp/unit_rates.json")
    if rates:
        lines.append(
            "unit rates:    exp/unit_rates.png (dev, units per second: "
            + ", ".join(f"{k} {v:.1f}" for k, v in rates["rates"].items())
            + ")"
        )
    curves = {n: loss_curves(f"exp/{n}/tensorboard") for n in models if glob.glob(f"exp/{n}/tensorboard/events.*")}
    plots = {
        "Trade-off: each metric against MACs and parameters": plot_tradeoff(
            report, "exp/report_tradeoff.png", "mini corpus"
        ),
        "Training losses (TensorBoard)": plot_loss_curves(
            curves, "exp/report_losses.png", "mini corpus: training losses"
        ),
        "Students by sequence subsampling: phone error against frame rate and MACs-C": "exp/subsampling.png",
        "Average unit rates on dev (Fig. 2)": "exp/unit_rates.png",
    }
    notes = [f"SUPERB tasks of {n} through s3prl's runner: exp/superb/{n}/<task>" for n in superb]
    notes += [
        f"ESPnet ASR-{report[n].get('asr5k_nbpe')} of {n}: exp/asr5k_{n} (test WER {report[n]['asr5k_wer']:.1f}%)"
        for n in asr5k
    ]
    write_markdown(report, "exp/report.md", "mini corpus report", plots, notes)
    lines.append("report:        exp/report.md (table + exp/report_tradeoff.png, exp/report_losses.png)")
    return lines
