"""Phone-recognition probe: a CTC model on frozen features (log-Mel or any upstream checkpoint);
reports the test phone error rate. The same probe on every upstream makes them comparable.

``--probe linear`` (default) is SUPERB PR's design: a learned softmax-weighted sum of all layers, layer
norm, one linear layer, CTC. It rewards features whose phone identity is linearly readable, which is
what pre-training should add over log-Mel. ``--probe conv`` adds six residual dilated convolutions
(the aligner's acoustic model), strong enough that log-Mel itself scores well.

Usage::

    python -m s3prl_plugins.bin.probe --features fbank --train data/train --test data/test --out exp/probe/fbank
    python -m s3prl_plugins.bin.probe --features exp/hubert_tiny/model.pt --train data/train --test data/test --out exp/probe/hubert
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys

import torch

from s3prl_plugins.eval.phone_ctc import (
    FeatureDataset,
    FeatureExtractor,
    PhoneVocab,
    extract_features,
    phone_error_rate,
    read_phones,
    train_phone_ctc,
)


PROBES = {"linear": dict(dilations=(), lr=0.02), "conv": dict(dilations=(1, 2, 4, 8, 16, 1), lr=2e-3)}


def run_probe(features: str, train_dir: str, test_dir: str, out: str, max_steps: int = 5000, valid_dir: str = None, max_train_utts: int = 0, probe: str = "linear",
              pool: str = None, segmentation=None) -> dict:
    """Train the probe on ``train_dir`` (its first ``max_train_utts`` utterances with phones, in a
    seeded random order, when given: features of a large corpus are kept in memory) and score ``test_dir``.

    ``pool`` (``avg:F`` / ``cat:F``) subsamples the features first (Meng et al. 2022 Table 1);
    ``segmentation`` (.seg files of the data dirs) is for a segments-topline model."""
    train_phones = read_phones(os.path.join(train_dir, "phones"))
    if max_train_utts and len(train_phones) > max_train_utts:
        keep = sorted(train_phones)
        random.Random(0).shuffle(keep)
        train_phones = {u: train_phones[u] for u in sorted(keep[:max_train_utts])}
    vocab = PhoneVocab([ph for ws in train_phones.values() for w in ws for ph in w])

    def targets(phones):
        return {u: vocab.encode([p for w in ws for p in w]) for u, ws in phones.items() if all(p in vocab.index for w in ws for p in w)}

    seg = None
    if segmentation:
        from s3prl_plugins.segment.segmentation import read_segmentation

        seg = {}
        for path in segmentation:
            seg.update(read_segmentation(path))
    ex = FeatureExtractor(features, pool=pool, segmentation=seg)  # the model is loaded once for every data dir
    feats, shift = extract_features(ex, train_dir, utts=sorted(train_phones))
    valid = None
    if valid_dir:
        valid = (extract_features(ex, valid_dir)[0], targets(read_phones(os.path.join(valid_dir, "phones"))))
    if probe not in PROBES:
        raise ValueError(f"--probe must be one of {sorted(PROBES)}, not {probe!r}")
    model = train_phone_ctc((feats, targets(train_phones)), valid, len(vocab), os.path.join(out, "model"), max_steps=max_steps, **PROBES[probe])
    ex.frames, ex.seconds = 0, 0.0  # the frame rate of the test set
    test_feats, _ = extract_features(ex, test_dir)
    per = phone_error_rate(model, FeatureDataset(test_feats, targets(read_phones(os.path.join(test_dir, "phones")))))
    result = {"features": features, "frame_shift": shift, "test": test_dir, "per": per, "steps": max_steps, "train_utts": len(feats), "probe": probe,
              "pool": pool, "frame_rate_hz": round(ex.frame_rate, 3),
              "layer_weights": [round(w, 4) for w in torch.softmax(model.layer_weights.detach(), 0).tolist()]}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", default="fbank")
    p.add_argument("--train", required=True)
    p.add_argument("--valid")
    p.add_argument("--test", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-steps", type=int, default=5000)
    p.add_argument("--probe", choices=sorted(PROBES), default="linear")
    p.add_argument("--max-train-utts", type=int, default=0, help="train on a random subset of this many utterances (0: all)")
    p.add_argument("--pool", help="subsample the features first: avg:F or cat:F (Meng et al. 2022 Table 1)")
    p.add_argument("--segmentation", nargs="*", help=".seg files of the data dirs, for a segments-topline model")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(json.dumps(run_probe(args.features, args.train, args.test, args.out, args.max_steps, args.valid, args.max_train_utts, args.probe, args.pool, args.segmentation)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
