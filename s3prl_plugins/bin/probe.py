"""Phone-recognition probe: a CTC model on frozen features (log-Mel or any upstream checkpoint);
reports the test phone error rate. The same probe on every upstream makes them comparable.

``--probe linear`` (default) is SUPERB PR's design: a learned softmax-weighted sum of all layers, layer
norm, one linear layer, CTC. It rewards features whose phone identity is linearly readable, which is
what pre-training should add over log-Mel. ``--probe conv`` adds six residual dilated convolutions
(the aligner's acoustic model), strong enough that log-Mel itself scores well.

Usage::

    python -m s3prl_plugins.bin.probe --features fbank --train data/train --test data/test --out exp/probe/fbank
    python -m s3prl_plugins.bin.probe --features exp/hubert_tiny/model.pt --train data/train --test data/test \\
        --out exp/probe/hubert
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from s3prl_plugins.eval.probe.phone_ctc import PROBES, run_probe
from s3prl_plugins.models.loading import OfflineError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", default="fbank")
    p.add_argument("--train", required=True)
    p.add_argument("--valid")
    p.add_argument("--test", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--max-steps", type=int, default=5000)
    p.add_argument("--probe", choices=sorted(PROBES), default="linear")
    p.add_argument(
        "--max-train-utts", type=int, default=0, help="train on a random subset of this many utterances (0: all)"
    )
    p.add_argument("--pool", help="subsample the features first: avg:F or cat:F (Meng et al. 2022 Table 1)")
    p.add_argument("--segmentation", nargs="*", help=".seg files of the data dirs, for a segments-topline model")
    p.add_argument(
        "--seed", type=int, default=0, help="the probe's initialisation and batch order (a few give the PER's spread)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for flag, folder in (("--train", args.train), ("--valid", args.valid), ("--test", args.test)):
        problem = _not_a_phone_data_dir(folder)
        if problem:
            print(f"error: {flag} {folder}: {problem}", file=sys.stderr)
            return 2
    try:
        result = run_probe(
            args.features,
            args.train,
            args.test,
            args.out,
            args.max_steps,
            args.valid,
            args.max_train_utts,
            args.probe,
            args.pool,
            args.segmentation,
            args.seed,
        )
    except (ValueError, OSError, OfflineError) as e:  # a model that does not load, unreadable audio: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def _not_a_phone_data_dir(folder):
    """Why ``folder`` cannot feed the phone probe ("" when it can)."""
    if folder is None:
        return ""
    if not os.path.isdir(folder):
        return "no such folder (a Kaldi data dir: the recipe's stage 1 writes data/train, data/test)"
    missing = [f for f in ("wav.scp", "phones") if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        return (
            f"no {' or '.join(missing)} in it (wav.scp: a Kaldi data dir; phones: the utterances' phones, "
            "written by python -m s3prl_plugins.bin.make_phones or the recipe's stage 1)"
        )
    return ""


if __name__ == "__main__":
    sys.exit(main())
