"""Figures and table of compression chains (Lin et al. 2024, Fig. 1 and 5-9) from their trajectories.

Each chain of :mod:`s3prl_plugins.compress.pipeline` writes ``<exp_dir>/trajectory.json``: one row per
iteration. This module puts several chains side by side:

* ``tradeoff.png`` -- PER against MACs per second (weight pruning at its nonzero, "theoretical" MACs),
  parameters (nonzero) and CPU real-time factor, every chain on one page (Fig. 6-7);
* ``density.png`` -- pre-training loss and PER against density, each method's own (Fig. 1, 5): the
  fraction of weights, of heads, of FFN units left;
* ``weight_density.png`` -- per-layer and per-matrix density along weight pruning (Fig. 8);
* ``diagonality.png`` -- mean head diagonality along head pruning, and PER of head pruning against the
  identity / 1-D-convolution replacements (Fig. 9);
* ``report.md`` -- the table of every row.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Optional, Sequence

from s3prl_plugins.eval.plots import colors_by_name, pyplot, save_png

Rows = List[Dict[str, object]]
logger = logging.getLogger(__name__)


def _not_a_chain(folder: str) -> bool:
    """A folder beside the chains that is none: a shared base measurement (``base_dir``: its ``metrics.json``) or
    a report (what :func:`write_report` writes) -- what ``--chains exp/compress/*`` also matches."""
    return any(os.path.isfile(os.path.join(folder, n)) for n in ("metrics.json", "report.md", "tradeoff.png"))


def load_chains(dirs: Sequence[str]) -> Dict[str, Rows]:
    """``{chain name (its folder's name): rows}`` for every folder with a ``trajectory.json``; a base measurement
    or a report folder among them is passed over (logged), any other folder is an error naming it."""
    out: Dict[str, Rows] = {}
    for d in dirs:
        path = os.path.join(d, "trajectory.json")
        if not os.path.isfile(path):
            if _not_a_chain(d):
                logger.info("%s: a base measurement or a report, not a chain: passed over", d)
                continue
            raise FileNotFoundError(
                f"{d}: no trajectory.json, so not a compression chain's exp_dir (a chain writes it from its first "
                "iteration on: python -m s3prl_plugins.bin.compress --config COMMON.yaml CHAIN.yaml)"
            )
        with open(path) as f:
            out[os.path.basename(os.path.normpath(d))] = json.load(f)
    if not out:
        raise FileNotFoundError(f"none of {list(dirs)} is a compression chain's exp_dir (no trajectory.json)")
    return out


def relative_density(rows: Rows) -> List[Optional[float]]:
    """Each row's density relative to the chain's first row, by what the chain's iterations prune: the field a
    row's step names (``density_of``, written by the chain); the base row takes the chain's first such field.
    Trajectories written before steps named it are read by their method names."""
    named = next((r["density_of"] for r in rows if r.get("density_of")), None)
    if named is not None:
        base = rows[0]
        found: List[Optional[float]] = []
        for r in rows:
            field = r.get("density_of") or (named if r.get("method") == "none" else None)
            if field is None:
                found.append(None)
            elif field == "weight_density":  # already a fraction of the dense model's weights
                found.append(r.get(field))
            else:
                found.append(_ratio(r.get(field), base.get(field)))
        return found
    base = rows[0]
    out: List[Optional[float]] = []
    for r in rows:
        m = r.get("method")
        if m == "weight" or (m == "none" and any(x.get("method") == "weight" for x in rows)):
            out.append(r.get("weight_density"))
        elif m in ("heads", "replace_heads") or (
            m == "none" and any(x.get("method") in ("heads", "replace_heads") for x in rows)
        ):
            out.append(_ratio(r.get("attention_heads"), base.get("attention_heads")))
        elif m == "ffn" or (m == "none" and any(x.get("method") == "ffn" for x in rows)):
            out.append(_ratio(r.get("ffn_units"), base.get("ffn_units")))
        else:
            out.append(None)
    return out


def _ratio(a, b) -> Optional[float]:
    return None if a is None or not b else float(a) / float(b)


def _metric(rows: Rows) -> str:
    return "per" if any(r.get("per") is not None for r in rows) else "loss"


# under every plot and table of chains: the first point is not a pruned model's equal
BASE_NOTE = (
    "hollow: each chain's first row, the model before any recovery training; every later point has had the "
    "chain's recovery updates too -- the control chain (the same updates, nothing removed) shows how much of a "
    "change is that training"
)


def _plot_chain(ax, xs, ys, rows_used, name, color) -> None:
    """One chain's line; its base row (the model before any recovery) drawn hollow."""
    ax.plot(xs, ys, marker="o", label=name, color=color)
    for x, y, r in zip(xs, ys, rows_used):
        if r.get("iteration") == 0 or r.get("name") == "00_base":
            ax.plot([x], [y], marker="o", markersize=9, markerfacecolor="white", color=color, linestyle="none")


def _note(fig) -> None:
    fig.text(0.5, 0.005, BASE_NOTE, ha="center", va="bottom", fontsize=7, color="0.35", wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))


def plot_tradeoff(chains: Dict[str, Rows], path: str, title: str = "") -> Optional[str]:
    plt = pyplot()
    colors = colors_by_name(chains)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (
        ("macs_nonzero_per_second", 1e6, "MACs per second of speech (M; nonzero)"),
        ("params_nonzero", 1e6, "parameters (M; nonzero)"),
        ("rtf_cpu", 1.0, "CPU real-time factor (batch 1)"),
    )
    plotted = False
    for ax, (key, scale, label) in zip(axes, panels):
        for name, rows in chains.items():
            metric = _metric(rows)
            used = [r for r in rows if r.get(key) is not None and r.get(metric) is not None]
            if not used:
                continue
            xs = [float(r[key]) / scale for r in used]
            ys = [float(r[metric]) * (100 if metric == "per" else 1) for r in used]
            _plot_chain(ax, xs, ys, used, name, colors[name])
            plotted = True
        ax.set_xlabel(label)
        ax.set_ylabel("PER (%)" if any(_metric(r) == "per" for r in chains.values()) else "valid loss")
        ax.grid(alpha=0.3)
    if not plotted:
        plt.close(fig)
        return None
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "compression trade-off (each point one iteration; lower left is better)")
    _note(fig)
    return save_png(fig, path)


def plot_density(chains: Dict[str, Rows], path: str, title: str = "") -> Optional[str]:
    """Fig. 1 and 5: the pre-training loss, the phone error and (when measured) the speaker accuracy
    against the density left."""
    plt = pyplot()
    colors = colors_by_name(chains)
    has_sid = any(r.get("sid_accuracy") is not None for rows in chains.values() for r in rows)
    fig, axes = plt.subplots(1, 3 if has_sid else 2, figsize=(16 if has_sid else 11, 4.5))
    panels = [("loss", 1.0, "pre-training loss (valid)"), ("per", 100.0, "PER (%)")] + (
        [("sid_accuracy", 100.0, "speaker ID accuracy (%)")] if has_sid else []
    )
    plotted = False
    for name, rows in chains.items():
        dens = relative_density(rows)
        pts = [(d, r) for d, r in zip(dens, rows) if d is not None]
        if len(pts) < 2:
            continue
        plotted = True
        for ax, (key, scale, _) in zip(axes, panels):
            used = [(d, r) for d, r in pts if r.get(key) is not None]
            if used:
                xs = [d for d, _ in used]
                ys = [scale * float(r[key]) for _, r in used]
                _plot_chain(ax, xs, ys, [r for _, r in used], name, colors[name])
    if not plotted:
        plt.close(fig)
        return None
    for ax, (_, _, lab) in zip(axes, panels):
        if not ax.lines:
            ax.text(
                0.5, 0.5, "not measured in these chains", ha="center", va="center", transform=ax.transAxes, color="0.4"
            )
        ax.set_xlabel("density (weights / heads / FFN units left)")
        ax.set_ylabel(lab)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "loss, phone error and speaker accuracy along pruning (Lin et al. Fig. 1, 5)")
    _note(fig)
    return save_png(fig, path)


def plot_weight_density(rows: Rows, path: str, title: str = "") -> Optional[str]:
    """Fig. 8: per-layer density and per-matrix-kind density against the overall density."""
    pts = [
        r
        for r in rows
        if r.get("method") in ("none", "weight") and r.get("per_layer_density") and r.get("weight_density") is not None
    ]
    if len(pts) < 2:
        return None
    plt = pyplot()
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(11, 4.5))
    x = [float(r["weight_density"]) for r in pts]
    n_layers = len(pts[0]["per_layer_density"])
    cmap = plt.get_cmap("viridis")
    for i in range(n_layers):
        ys = [r["per_layer_density"][i] if len(r["per_layer_density"]) > i else None for r in pts]
        ax_l.plot(x, ys, color=cmap(i / max(1, n_layers - 1)), label=f"layer {i + 1}")
    kinds = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    mats = [r for r in pts if r.get("per_matrix_density")]
    for kind in kinds:
        xs, ys = [], []
        for r in mats:
            vals = [v for k, v in r["per_matrix_density"].items() if k.endswith("." + kind)]
            if vals:
                xs.append(float(r["weight_density"]))
                ys.append(sum(vals) / len(vals))
        if xs:
            ax_m.plot(xs, ys, marker=".", label=kind)
    for ax, lab in ((ax_l, "layer density"), (ax_m, "matrix density (mean over layers)")):
        ax.set_xlabel("model density")
        ax.set_ylabel(lab)
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "where weight pruning prunes (Lin et al. Fig. 8)")
    fig.tight_layout()
    return save_png(fig, path)


def plot_diagonality(chains: Dict[str, Rows], path: str, title: str = "") -> Optional[str]:
    """Fig. 9: mean diagonality against head density (head pruning), and PER of the head-pruning and
    head-replacement chains against the density of attention heads."""
    plt = pyplot()
    colors = colors_by_name(chains)
    fig, (ax_d, ax_p) = plt.subplots(1, 2, figsize=(11, 4.5))
    plotted = False
    for name, rows in chains.items():
        if not any(r.get("method") in ("heads", "replace_heads") for r in rows):
            continue
        dens = relative_density(rows)
        pts = [(d, r) for d, r in zip(dens, rows) if d is not None]
        if any(r.get("method") == "heads" for _, r in pts):
            dpts = [(d, r["diagonality"]) for d, r in pts if r.get("diagonality") is not None]
            if dpts:
                ax_d.plot(*zip(*dpts), marker="o", label=name, color=colors[name])
                plotted = True
        ppts = [(d, 100 * float(r["per"])) for d, r in pts if r.get("per") is not None]
        if ppts:
            ax_p.plot(*zip(*ppts), marker="o", label=name, color=colors[name])
            plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax_d.set_ylabel("mean diagonality (eq. 9)")
    ax_p.set_ylabel("PER (%)")
    for ax in (ax_d, ax_p):
        ax.set_xlabel("attention heads left (fraction)")
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title or "diagonal heads: diagonality along head pruning; replacing them (Lin et al. Fig. 9)")
    fig.tight_layout()
    return save_png(fig, path)


def markdown_table(chains: Dict[str, Rows]) -> str:
    head = (
        "| chain | iteration | layers | attn heads | FFN units | weight density | loss after pruning | loss "
        "| params (M, nonzero) | MACs/s (M, nonzero) | RTF CPU | PER (%) | SID acc. (%) | diagonality |"
    )
    lines = [head, "|" + "---|" * 14]

    def f(v, fmt):
        return "" if v is None else format(v, fmt)

    for name, rows in chains.items():
        for r in rows:
            per, sid = r.get("per"), r.get("sid_accuracy")
            lines.append(
                f"| {name} | {r['name']} | {r.get('layers')} | {r.get('attention_heads')} | {r.get('ffn_units')} "
                f"| {f(r.get('weight_density'), '.3f')} | {f(r.get('loss_pruned'), '.3f')} "
                f"| {f(r.get('loss'), '.3f')} | {f((r.get('params_nonzero') or 0) / 1e6, '.3f')} "
                f"| {f((r.get('macs_nonzero_per_second') or 0) / 1e6, '.1f')} | {f(r.get('rtf_cpu'), '.4f')} "
                f"| {f(None if per is None else 100 * per, '.1f')} "
                f"| {f(None if sid is None else 100 * sid, '.1f')} | {f(r.get('diagonality'), '.3f')} |"
            )
    return "\n".join(lines) + "\n"


def write_report(dirs: Sequence[str], out: str) -> Dict[str, Optional[str]]:
    """Every figure and ``report.md`` of the chains in ``dirs`` into the folder ``out`` (``out`` itself, matched by
    a glob such as ``exp/compress/*``, is not read as a chain)."""
    chains = load_chains([d for d in dirs if os.path.abspath(d) != os.path.abspath(out)])
    os.makedirs(out, exist_ok=True)
    weight = next((rows for rows in chains.values() if any(r.get("method") == "weight" for r in rows)), None)
    files = {
        "tradeoff": plot_tradeoff(chains, os.path.join(out, "tradeoff.png")),
        "density": plot_density(chains, os.path.join(out, "density.png")),
        "weight_density": plot_weight_density(weight, os.path.join(out, "weight_density.png")) if weight else None,
        "diagonality": plot_diagonality(chains, os.path.join(out, "diagonality.png")),
    }
    md = (
        "# Compression chains\n\n"
        + f"Each chain's first row is the model before any recovery training ({BASE_NOTE.split('; ', 1)[1]}).\n\n"
        + markdown_table(chains)
        + "\n"
        + "".join(f"![{k}]({os.path.basename(v)})\n" for k, v in files.items() if v)
    )
    tmp = os.path.join(out, "report.md.tmp")
    with open(tmp, "w") as fh:
        fh.write(md)
    os.replace(tmp, os.path.join(out, "report.md"))
    files["report"] = os.path.join(out, "report.md")
    return files
