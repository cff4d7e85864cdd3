"""Utterance-classification probe on frozen features: keyword spotting (``--label text``) or speaker
identification (``--label speaker``); mean+std pooling, logistic regression, test accuracy.

Usage::

    python -m s3prl_plugins.bin.probe_utt --features fbank --train data/ks_train --test data/ks_test --label text \\
        --out exp/probe_ks/fbank
    python -m s3prl_plugins.bin.probe_utt --features exp/star_tiny/model.pt --train data/sid_train \\
        --test data/sid_test --label speaker --layer avg --out exp/probe_sid/star_tiny
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from s3prl_plugins.data.kaldi import DataDirError
from s3prl_plugins.eval.probe.utterance_probe import LABELS, run_utterance_probe


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", default="fbank", help="fbank, or a checkpoint / hub name load_pretrained reads")
    p.add_argument("--train", required=True, help="Kaldi data dir to train on")
    p.add_argument("--test", required=True, help="Kaldi data dir to score")
    p.add_argument(
        "--label", required=True, choices=sorted(LABELS), help="text (KS: the class) or speaker (SID: utt2spk)"
    )
    p.add_argument(
        "--layer", default="avg", help="avg (mean of all layers), last, or a layer index (0 = first transformer input)"
    )
    p.add_argument("--C", type=float, default=0.1, help="inverse L2 strength of the logistic regression")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = run_utterance_probe(args.features, args.train, args.test, args.out, args.label, args.layer, args.C)
    except (DataDirError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("features", "label", "accuracy", "majority_baseline", "train_utts", "test_utts", "classes")
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
