"""Utterance-classification probe (keyword spotting, speaker identification) on frozen features.

Each utterance's frame features -- one layer, or the average of all layers -- are pooled over time into
their mean and standard deviation; a standardised multinomial logistic regression (scikit-learn) is
trained on the train dir's labels and scored on the test dir. SUPERB's KS and SID downstreams also
pool over time into one linear layer (over a learned weighted sum of layers); the fixed layer choice
and a convex solver make this probe deterministic and quick on a CPU, so that upstreams can be
compared on a laptop. It is a probe, not SUPERB's score: for that, s3prl's run_downstream reads the
Speech Commands layout of the mini corpus's KS subset directly (see ``data/mini_subsets.py``).
"""

from __future__ import annotations

import collections
import json
import logging
import os
from typing import Callable, Dict, List, Tuple, Union

import numpy as np
import torch

from s3prl_plugins.data.audio import load_audio
from s3prl_plugins.data.kaldi import DataDir, read_data_dir
from s3prl_plugins.eval.probe.phone_ctc import FeatureExtractor

logger = logging.getLogger(__name__)

#: What a data dir's label is: ``text`` (KS: the keyword class) or ``speaker`` (SID: utt2spk).
LABELS: Dict[str, Callable[[DataDir, str], str]] = {
    "text": lambda d, u: d.text[u],
    "speaker": lambda d, u: d.utt2spk[u],
}


def select_layer(states: torch.Tensor, layer: Union[str, int]) -> torch.Tensor:
    """(layers, frames, dim) -> (frames, dim): ``avg`` (mean over layers), ``last``, or an index."""
    if layer == "avg":
        return states.float().mean(0)
    if layer == "last":
        return states[-1].float()
    i = int(layer)
    if not -states.shape[0] <= i < states.shape[0]:
        raise ValueError(
            f"layer {i} does not exist: the features have {states.shape[0]} layers (0..{states.shape[0] - 1})"
        )
    return states[i].float()


def pool(frames: torch.Tensor) -> np.ndarray:
    """(frames, dim) -> (2 dim,): mean and (population) standard deviation over time."""
    return torch.cat([frames.mean(0), frames.std(0, unbiased=False)]).numpy()


def pooled_features(
    source: Union[str, FeatureExtractor],
    data_dir: str,
    label: str,
    layer: Union[str, int] = "avg",
    progress: bool = True,
) -> Tuple[np.ndarray, List[str], List[str]]:
    """Pooled features (utterances, 2 dim), labels and utterance ids of a data dir; ``source`` is a
    feature source (``fbank``, a checkpoint, ...) or an extractor already built from one."""
    from tqdm import tqdm

    if label not in LABELS:
        raise ValueError(f"label must be one of {sorted(LABELS)}, not {label!r}")
    d = read_data_dir(data_dir)
    if label == "text" and not d.text:
        raise ValueError(f"{data_dir} has no 'text' file: the KS label is the text (use --label speaker for SID)")
    ex = source if isinstance(source, FeatureExtractor) else FeatureExtractor(source, cmvn=False)
    rows = []
    for utt in tqdm(d.utts, desc=f"{ex.name} features of {data_dir}", unit="utt", disable=not progress, mininterval=10):
        rows.append(pool(select_layer(ex(load_audio(d.wav[utt])), layer)))
    return np.stack(rows), [LABELS[label](d, u) for u in d.utts], d.utts


def run_utterance_probe(
    features: str,
    train_dir: str,
    test_dir: str,
    out: str,
    label: str,
    layer: Union[str, int] = "avg",
    c: float = 0.1,
    progress: bool = True,
) -> Dict[str, object]:
    """Train on ``train_dir``, score ``test_dir``; writes ``out/result.json`` (atomically) and
    ``out/predictions.txt`` (``utt truth predicted``) and returns the result."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ex = FeatureExtractor(features, cmvn=False)  # the model is loaded once for both sets
    x_train, y_train, _ = pooled_features(ex, train_dir, label, layer, progress)
    if len(set(y_train)) < 2:
        raise ValueError(f"{train_dir}: only one class ({y_train[0]!r}); a classifier needs at least two")
    x_test, y_test, utts = pooled_features(ex, test_dir, label, layer, progress)
    unseen = sorted(set(y_test) - set(y_train))
    if unseen:
        logger.warning(
            "%s: %d test classes never seen in training (counted as errors): %s", test_dir, len(unseen), unseen[:5]
        )
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
    clf.fit(x_train, y_train)
    pred = clf.predict(x_test).tolist()
    correct = [p == t for p, t in zip(pred, y_test)]
    per_class: Dict[str, List[bool]] = collections.defaultdict(list)
    for t, ok in zip(y_test, correct):
        per_class[t].append(ok)
    majority = collections.Counter(y_train).most_common(1)[0][0]
    result = {
        "features": features,
        "label": label,
        "layer": layer,
        "C": c,
        "train": train_dir,
        "test": test_dir,
        "accuracy": float(np.mean(correct)),
        "majority_baseline": float(np.mean([t == majority for t in y_test])),
        "train_utts": len(y_train),
        "test_utts": len(y_test),
        "classes": len(set(y_train)),
        "unseen_test_classes": unseen,
        "per_class_accuracy": {k: float(np.mean(v)) for k, v in sorted(per_class.items())},
    }
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "predictions.txt.tmp"), "w") as f:
        f.writelines(f"{u} {t} {p}\n" for u, t, p in zip(utts, y_test, pred))
    with open(os.path.join(out, "result.json.tmp"), "w") as f:
        json.dump(result, f, indent=2)
    os.replace(os.path.join(out, "predictions.txt.tmp"), os.path.join(out, "predictions.txt"))
    os.replace(os.path.join(out, "result.json.tmp"), os.path.join(out, "result.json"))
    return result
