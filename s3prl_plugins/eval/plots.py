"""Shared plotting helpers (matplotlib, headless)."""

from __future__ import annotations

import os
from typing import Dict, Iterable


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str, dpi: int = 120) -> str:
    """Write ``fig`` to ``path`` atomically (a temporary file renamed into place) and close it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)
    os.replace(tmp, path)
    return path


def colors_by_name(names: Iterable[str]) -> Dict[str, str]:
    """One colour per name (matplotlib's cycle, in the given order) for every panel of a figure: a panel's
    own cycle would follow the lines or points that panel happens to have, and a legend drawn on one panel
    would then mislabel the others."""
    return {n: f"C{i % 10}" for i, n in enumerate(names)}
