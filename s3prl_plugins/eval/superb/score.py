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
100. It reproduces every Overall value of the STaR paper's Table 2 (``tests/eval/superb/test_superb_score.py``).

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

import glob
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

#: The 11 SUPERB metrics in the STaR paper's column order.
METRICS = ("PR", "ASR", "KS", "QbE", "SID", "ASV", "SD", "IC", "SF-F1", "SF-CER", "ER")
#: Error rates: mapped to ``100 - x`` for Overall.
LOWER_IS_BETTER = frozenset({"PR", "ASR", "ASV", "SD", "SF-CER"})
#: The 10 SUPERB tasks of the generalizability score and the metrics each one averages.
TASKS = {
    "PR": ("PR",),
    "ASR": ("ASR",),
    "KS": ("KS",),
    "QbE": ("QbE",),
    "SID": ("SID",),
    "ASV": ("ASV",),
    "SD": ("SD",),
    "IC": ("IC",),
    "SF": ("SF-F1", "SF-CER"),
    "ER": ("ER",),
}
#: SUPERB leaderboard reference rows, in the units of :data:`METRICS` except QbE, given x 100 (MTWV x 100).
FBANK = {
    "PR": 82.01,
    "ASR": 23.18,
    "KS": 41.38,
    "QbE": 0.58,
    "SID": 20.058,
    "ASV": 9.56,
    "SD": 10.05,
    "IC": 9.65,
    "SF-F1": 69.64,
    "SF-CER": 52.94,
    "ER": 48.24,
}
SOTA = {
    "PR": 3.53,
    "ASR": 3.62,
    "KS": 96.66,
    "QbE": 7.36,
    "SID": 90.3,
    "ASV": 5.11,
    "SD": 5.62,
    "IC": 98.76,
    "SF-F1": 89.81,
    "SF-CER": 21.76,
    "ER": 67.62,
}
UNITS = {
    "PR": "PER %",
    "ASR": "WER %",
    "KS": "accuracy %",
    "QbE": "MTWV (0..1)",
    "SID": "accuracy %",
    "ASV": "EER %",
    "SD": "DER %",
    "IC": "accuracy %",
    "SF-F1": "F1 %",
    "SF-CER": "CER %",
    "ER": "accuracy %",
}
#: Accuracy-type metrics (percentages, higher is better): s3prl's experts print them as fractions (``test acc: 0.96``).
ACCURACIES = ("KS", "SID", "IC", "SF-F1", "ER")
#: Error rates that insertions can push above 100 % (EER cannot exceed 100).
UNBOUNDED = frozenset({"PR", "ASR", "SD", "SF-CER"})
_CANONICAL = {**{m.upper(): m for m in METRICS}, "KWS": "KS", "SF_F1": "SF-F1", "SF_CER": "SF-CER"}


@dataclass(frozen=True)
class SuperbScores:
    """Scores of one model. ``missing`` names the metrics that were not given (scored without them)."""

    overall: float
    generalizability: float
    task_scores: dict  # task -> its 0..1000 generalizability score
    metrics: dict  # metric -> the value given
    missing: tuple

    @property
    def complete(self) -> bool:
        """All 11 metrics given: only then are ``overall`` and ``generalizability`` SUPERB's scores."""
        return not self.missing

    @property
    def scope(self) -> str:
        """What the means average: ``""`` when complete, else e.g. ``"mean of 1/11 metrics: KS; 1/10 tasks: KS"``."""
        if self.complete:
            return ""
        return (
            f"mean of {len(self.metrics)}/{len(METRICS)} metrics: {', '.join(self.metrics)}; "
            f"{len(self.task_scores)}/{len(TASKS)} tasks: {', '.join(self.task_scores)}"
        )

    def to_dict(self) -> dict:
        """Overall and generalizability are defined over all tasks: given only when complete; otherwise
        ``partial_overall`` / ``partial_generalizability`` with ``partial`` naming what they average."""
        out = {
            "overall": round(self.overall, 4) if self.complete else None,
            "generalizability": round(self.generalizability, 4) if self.complete else None,
            "complete": self.complete,
            "missing": list(self.missing),
        }
        if not self.complete:
            out.update(
                {
                    "partial": self.scope,
                    "partial_overall": round(self.overall, 4),
                    "partial_generalizability": round(self.generalizability, 4),
                }
            )
        out.update(
            {"task_scores": {k: round(v, 4) for k, v in self.task_scores.items()}, "metrics": dict(self.metrics)}
        )
        return out


def check_metrics(metrics: dict, source: str = "the results", fractions: bool = False, in_units: bool = False) -> dict:
    """Validate task metrics; return them under their canonical keys.

    Args:
        metrics: metric key -> value in SUPERB's units.
        source: named in the errors.
        fractions: the accuracy-type metrics (:data:`ACCURACIES`) were given as fractions, as s3prl's
            experts print them: multiply them by 100 (and say so in the log).
        in_units: the metrics come from files whose units are known (``bin/run_downstream -m evaluate``'s
            ``superb_<split>.json``, a submission's ``results.json``): an accuracy below 1 % is taken as it is.

    Raises:
        ValueError: on an unknown key, a non-number, NaN, a value outside its range (percentages 0..100,
            error rates :data:`UNBOUNDED` >= 0 -- insertions take them past 100 --, MTWV 0..1: an MTWV above
            1 was most likely already multiplied by 100), or when every accuracy given lies in [0, 1]
            without ``fractions`` (``{"KS": 0.9627}`` is s3prl's printed fraction, not 0.96 %).
    """
    if not isinstance(metrics, dict):
        raise ValueError(
            f"{source}: expected a JSON object of SUPERB metrics {list(METRICS)}, got {type(metrics).__name__}"
        )
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
        if name in UNBOUNDED:
            if not 0.0 <= value < math.inf:
                raise ValueError(f"{source}: {key} = {value} is negative or infinite ({UNITS[name]}, 0 or more)")
        else:
            hi = 1.0 if name == "QbE" else 100.0
            if not 0.0 <= value <= hi:
                hint = " (MTWV is reported as a fraction: 0.0736, not 7.36)" if name == "QbE" and value <= 100 else ""
                raise ValueError(f"{source}: {key} = {value} is outside 0..{hi:g} ({UNITS[name]}){hint}")
        out[name] = value
    if not out:
        raise ValueError(f"{source}: no SUPERB metric given; the keys are {', '.join(METRICS)}")
    accs = {k: v for k, v in out.items() if k in ACCURACIES}
    if fractions and in_units:
        raise ValueError(f"{source}: --fractions, but these metrics are bin/run_downstream's, already in percent")
    if fractions:
        if not accs:
            raise ValueError(
                f"{source}: --fractions converts the accuracies ({', '.join(ACCURACIES)}), and none is given"
            )
        big = {k: v for k, v in accs.items() if v > 1.0}
        if big:
            raise ValueError(
                f"{source}: --fractions, but {', '.join(f'{k} = {v:g}' for k, v in big.items())} is not a fraction"
            )
        for k, v in accs.items():
            out[k] = v * 100.0
        logger.warning(
            "%s: accuracies read as fractions and multiplied by 100: %s",
            source,
            ", ".join(f"{k} {v:g} -> {out[k]:g} %" for k, v in accs.items()),
        )
    elif accs and not in_units and all(v <= 1.0 for v in accs.values()):
        shown = ", ".join(f"{k} = {v:g}" for k, v in accs.items())
        raise ValueError(
            f"{source}: {shown}: every accuracy lies in [0, 1] -- a fraction, as s3prl prints `test acc:`, not a "
            "percentage as SUPERB reports it. "
            f"Give percentages ({', '.join(f'{k}: {100 * v:g}' for k, v in accs.items())}), "
            "or pass --fractions (fractions=True in Python) to convert them"
        )
    return out


def _scaled(metrics: dict) -> dict:
    return {k: (v * 100.0 if k == "QbE" else v) for k, v in metrics.items()}


def overall_score(metrics: dict) -> float:
    """STaR paper's Overall: mean over the given metrics of ``100 - x`` (error rates), ``100 * MTWV`` (QbE), ``x``."""
    return _overall(check_metrics(metrics))


def _overall(checked: dict) -> float:
    m = _scaled(checked)
    return sum(100.0 - v if k in LOWER_IS_BETTER else v for k, v in m.items()) / len(m)


def task_scores(metrics: dict, fbank: dict = FBANK, sota: dict = SOTA) -> dict:
    """SUPERB@SLT per-task scores ``1000 * (s - s_fbank) / (s_sota - s_fbank)``; SF averages its two metrics."""
    return _task_scores(check_metrics(metrics), fbank, sota)


def _task_scores(checked: dict, fbank: dict = FBANK, sota: dict = SOTA) -> dict:
    m = _scaled(checked)
    per_metric = {k: 1000.0 * (v - fbank[k]) / (sota[k] - fbank[k]) for k, v in m.items()}
    out = {}
    for task, keys in TASKS.items():
        given = [per_metric[k] for k in keys if k in per_metric]
        if given:
            out[task] = sum(given) / len(given)
    return out


def superb_scores(
    metrics: dict, source: str = "the results", fractions: bool = False, in_units: bool = False
) -> SuperbScores:
    """Overall and generalizability of one model; metrics not given are named in ``missing``
    (``fractions``, ``in_units``: see :func:`check_metrics`)."""
    m = check_metrics(metrics, source, fractions, in_units)
    per_task = _task_scores(m)
    return SuperbScores(
        overall=_overall(m),
        generalizability=sum(per_task.values()) / len(per_task),
        task_scores=per_task,
        metrics={k: m[k] for k in METRICS if k in m},
        missing=tuple(k for k in METRICS if k not in m),
    )


# ------------------------------------------------------------------------------------ reading results
#: the test split whose ``superb_<split>.json`` scores each downstream (``bin/run_downstream -m evaluate``)
TEST_SPLITS = ("test", "test-clean")


def _load_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON ({e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not JSON (a binary file: not UTF-8 text)") from None


def _metrics_of(data, source: str) -> Dict[str, float]:
    """The metrics of one JSON document: ``bin/run_downstream -m evaluate``'s ``superb_<split>.json``
    (``{"downstream", "split", ..., "superb": {KEY: value}}``) or a plain ``{KEY: value}`` object (a
    submission's ``results.json``)."""
    if isinstance(data, dict) and "superb" in data and isinstance(data["superb"], dict):
        return dict(data["superb"])
    if isinstance(data, dict) and "downstream" in data:
        raise ValueError(
            f"{source}: an evaluate result without its 'superb' metrics (downstream "
            f"{data['downstream']!r} has no SUPERB metric here)"
        )
    if not isinstance(data, dict):
        raise ValueError(
            f"{source}: expected a JSON object of SUPERB metrics {list(METRICS)}, got {type(data).__name__}"
        )
    return dict(data)


def _evaluate_results(folder: str) -> List[str]:
    """The test-split ``superb_<split>.json`` files of one experiment folder."""
    return [p for p in (os.path.join(folder, f"superb_{s}.json") for s in TEST_SPLITS) if os.path.isfile(p)]


def read_results(paths: Sequence[str], text: Optional[str] = None) -> Tuple[Dict[str, float], List[str], bool]:
    """SUPERB metrics gathered from what the pipeline writes; returns ``(metrics, files read, in_units)``,
    ``in_units`` when every file is one the pipeline wrote in SUPERB's units (an evaluate result, or a
    ``results.json`` with the ``model.json`` of ``bin/superb_submission`` beside it), not typed by hand.

    Each path is one of:

    - a ``superb_<split>.json`` of ``bin/run_downstream -m evaluate`` (its ``superb`` entry);
    - a JSON object of metrics, e.g. ``bin/superb_submission``'s ``results.json``;
    - a task's experiment folder (its ``superb_test.json`` / ``superb_test-clean.json``), a submission
      folder (its ``results.json``), or a folder of task experiments, searched below for the test-split
      ``superb_*.json`` files (a dev split's result is not a test result and is skipped);
    - ``-``: the JSON document in ``text`` (stdin).

    Raises:
        ValueError: a file that is not JSON, a folder without results (naming the files looked for), or one
            metric found twice (naming both files).
    """
    found: Dict[str, Tuple[float, str]] = {}
    files: List[str] = []
    known = []

    def read(path: str) -> Dict[str, float]:
        data = _load_json(path)
        known.append(
            (isinstance(data, dict) and isinstance(data.get("superb"), dict))
            or os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(path)), "model.json"))
        )
        return _metrics_of(data, path)

    def add(metrics: Dict[str, float], source: str) -> None:
        for k, v in metrics.items():
            name = _CANONICAL.get(str(k).upper(), k)
            if name in found:
                raise ValueError(
                    f"{name} is given twice: in {found[name][1]} and in {source}; give one result per task"
                )
            found[name] = (v, source)
        files.append(source)

    for path in paths:
        if path == "-":
            try:
                data = json.loads(text or "")
            except json.JSONDecodeError as e:
                raise ValueError(f"stdin is not JSON ({e})") from None
            known.append(False)
            add(_metrics_of(data, "stdin"), "stdin")
        elif os.path.isfile(path):
            add(read(path), path)
        elif os.path.isdir(path):
            own = _evaluate_results(path)
            if not own and os.path.isfile(os.path.join(path, "results.json")):
                own = [os.path.join(path, "results.json")]
            if not own:
                own = sorted(
                    p
                    for p in glob.glob(os.path.join(path, "**", "superb_*.json"), recursive=True)
                    if os.path.basename(p)[len("superb_") : -len(".json")] in TEST_SPLITS
                )
            if not own:
                raise ValueError(
                    f"{path}: no SUPERB result in it or below it (looked for superb_test.json / "
                    "superb_test-clean.json, which `python -m s3prl_plugins.bin.run_downstream -m evaluate` writes "
                    "into each task's experiment, and a submission's results.json)"
                )
            for p in own:
                add(read(p), p)
        else:
            raise ValueError(f"{path}: no such file or folder")
    return {k: v for k, (v, _) in found.items()}, files, bool(known) and all(known)
