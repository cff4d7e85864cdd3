"""SUPERB scores: the Overall score and the SUPERB@SLT generalizability score from task metrics.

The input is one value per SUPERB metric, as SUPERB reports it:

===========  =====================================  ===========
key          metric                                 better
===========  =====================================  ===========
``PR``       phone error rate, %                    lower
``ASR``      word error rate without LM, %          lower
``KS``       keyword-spotting accuracy, %           higher
``QbE``      maximum term-weighted value (0..1)     higher
``SID``      speaker-identification accuracy, %     higher
``ASV``      equal error rate, %                    lower
``SD``       diarization error rate, %              lower
``IC``       intent-classification accuracy, %      higher
``SF-F1``    slot-filling slot-type F1, %           higher
``SF-CER``   slot-filling slot-value CER, %         lower
``ER``       emotion-recognition accuracy, %        higher
===========  =====================================  ===========

**Overall** (the STaR paper's "Overall", after WavLM [3] of Jang, Kim and Kim, "STaR: Distilling
Speech Temporal Relation for Lightweight Speech Self-Supervised Learning Models", ICASSP 2024, §3.1):
the plain mean of the 11 metrics, each error rate mapped to ``100 - x`` and QbE's MTWV multiplied by
100. It reproduces every Overall value of the STaR paper's Table 2 (``tests/test_superb_score.py``).

**Generalizability** (the SUPERB@SLT 2022 challenge's score, Feng et al., SLT 2023, used as
"General." in the STaR tables): each task's metric mapped linearly so that log-Mel FBANK scores 0 and
the SOTA of the SUPERB paper scores 1000, ``1000 * (s - s_fbank) / (s_sota - s_fbank)`` (the same
formula serves error rates, whose SOTA lies below FBANK), then averaged over the **10 tasks** -- slot
filling is one task, scored as the mean of its F1 and CER scores. The reference values
(:data:`FBANK`, :data:`SOTA`) are the SUPERB leaderboard's (superbbenchmark.org) FBANK and SOTA rows
as given in the project's issue 10: with them the STaR paper's nine model rows of Table 2 come out
within 1.6 points of their printed General. values (STaRHuBERT 887.4 vs 887, HuBERT BASE 941.0 vs 941,
DPHuBERT-100h 820.6 vs 819, the largest gap); averaging over 11 metrics instead (SF counted twice)
misses by up to 11.5, and mapping with the FBANK row *printed* in STaR's Table 2 (KS 8.63, SID 8.5e-4,
SD 10.55, IC 9.1, ER 35.39) by up to 21.7 -- that printed row is not what their scores used: its own
Overall, 46.5, is the leaderboard FBANK row's (the printed metrics give 40.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The 11 SUPERB metrics in the STaR paper's column order.
METRICS = ("PR", "ASR", "KS", "QbE", "SID", "ASV", "SD", "IC", "SF-F1", "SF-CER", "ER")
#: Error rates: mapped to ``100 - x`` for Overall.
LOWER_IS_BETTER = frozenset({"PR", "ASR", "ASV", "SD", "SF-CER"})
#: The 10 SUPERB tasks of the generalizability score and the metrics each one averages.
TASKS = {
    "PR": ("PR",), "ASR": ("ASR",), "KS": ("KS",), "QbE": ("QbE",), "SID": ("SID",), "ASV": ("ASV",),
    "SD": ("SD",), "IC": ("IC",), "SF": ("SF-F1", "SF-CER"), "ER": ("ER",),
}
#: SUPERB leaderboard reference rows, in the units of :data:`METRICS` except QbE, given x 100 (MTWV x 100).
FBANK = {"PR": 82.01, "ASR": 23.18, "KS": 41.38, "QbE": 0.58, "SID": 20.058, "ASV": 9.56, "SD": 10.05,
         "IC": 9.65, "SF-F1": 69.64, "SF-CER": 52.94, "ER": 48.24}
SOTA = {"PR": 3.53, "ASR": 3.62, "KS": 96.66, "QbE": 7.36, "SID": 90.3, "ASV": 5.11, "SD": 5.62,
        "IC": 98.76, "SF-F1": 89.81, "SF-CER": 21.76, "ER": 67.62}
UNITS = {"PR": "PER %", "ASR": "WER %", "KS": "accuracy %", "QbE": "MTWV (0..1)", "SID": "accuracy %",
         "ASV": "EER %", "SD": "DER %", "IC": "accuracy %", "SF-F1": "F1 %", "SF-CER": "CER %", "ER": "accuracy %"}
_CANONICAL = {**{m.upper(): m for m in METRICS}, "KWS": "KS", "SF_F1": "SF-F1", "SF_CER": "SF-CER"}


@dataclass(frozen=True)
class SuperbScores:
    """Scores of one model. ``missing`` names the metrics that were not given (scored without them)."""

    overall: float
    generalizability: float
    task_scores: dict  # task -> its 0..1000 generalizability score
    metrics: dict  # metric -> the value given
    missing: tuple

    def to_dict(self) -> dict:
        return {
            "overall": round(self.overall, 4),
            "generalizability": round(self.generalizability, 4),
            "complete": not self.missing,
            "missing": list(self.missing),
            "task_scores": {k: round(v, 4) for k, v in self.task_scores.items()},
            "metrics": dict(self.metrics),
        }


def check_metrics(metrics: dict, source: str = "the results") -> dict:
    """Validate task metrics; return them under their canonical keys.

    Raises:
        ValueError: on an unknown key, a non-number, NaN, or a value outside its range (percentages
            0..100, MTWV 0..1 -- an MTWV above 1 was most likely already multiplied by 100).
    """
    if not isinstance(metrics, dict):
        raise ValueError(f"{source}: expected a JSON object of SUPERB metrics {list(METRICS)}, got {type(metrics).__name__}")
    out = {}
    for key, value in metrics.items():
        name = _CANONICAL.get(str(key).upper())
        if name is None:
            raise ValueError(f"{source}: unknown SUPERB metric {key!r}; the keys are {', '.join(METRICS)}")
        if name in out:
            raise ValueError(f"{source}: metric {name} given twice (as {key!r})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
            raise ValueError(f"{source}: {key} must be a number ({UNITS[name]}), got {value!r}")
        value = float(value)
        hi = 1.0 if name == "QbE" else 100.0
        if not 0.0 <= value <= hi:
            hint = " (MTWV is reported as a fraction: 0.0736, not 7.36)" if name == "QbE" and value <= 100 else ""
            raise ValueError(f"{source}: {key} = {value} is outside 0..{hi:g} ({UNITS[name]}){hint}")
        out[name] = value
    if not out:
        raise ValueError(f"{source}: no SUPERB metric given; the keys are {', '.join(METRICS)}")
    return out


def _scaled(metrics: dict) -> dict:
    return {k: (v * 100.0 if k == "QbE" else v) for k, v in metrics.items()}


def overall_score(metrics: dict) -> float:
    """STaR paper's Overall: mean over the given metrics of ``100 - x`` (error rates), ``100 * MTWV`` (QbE), ``x``."""
    m = _scaled(check_metrics(metrics))
    return sum(100.0 - v if k in LOWER_IS_BETTER else v for k, v in m.items()) / len(m)


def task_scores(metrics: dict, fbank: dict = FBANK, sota: dict = SOTA) -> dict:
    """SUPERB@SLT per-task scores ``1000 * (s - s_fbank) / (s_sota - s_fbank)``; SF averages its two metrics."""
    m = _scaled(check_metrics(metrics))
    per_metric = {k: 1000.0 * (v - fbank[k]) / (sota[k] - fbank[k]) for k, v in m.items()}
    out = {}
    for task, keys in TASKS.items():
        given = [per_metric[k] for k in keys if k in per_metric]
        if given:
            out[task] = sum(given) / len(given)
    return out


def superb_scores(metrics: dict, source: str = "the results") -> SuperbScores:
    """Overall and generalizability of one model; metrics not given are named in ``missing``."""
    m = check_metrics(metrics, source)
    per_task = task_scores(m)
    return SuperbScores(
        overall=overall_score(m),
        generalizability=sum(per_task.values()) / len(per_task),
        task_scores=per_task,
        metrics={k: m[k] for k in METRICS if k in m},
        missing=tuple(k for k in METRICS if k not in m),
    )
