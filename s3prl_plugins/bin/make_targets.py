"""k-means frame targets for masked prediction.

Usage::

    # iteration 1: MFCC clusters at HuBERT's 50 Hz (every 2nd 100 Hz frame)
    python -m s3prl_plugins.bin.make_targets --train data/train --also data/dev --feature mfcc --clusters 100 \\
        --frame-step 2 --out exp/targets/mfcc
    # iteration 2: clusters of layer 6 of the first model
    python -m s3prl_plugins.bin.make_targets --train data/train --also data/dev --feature hidden \\
        --ckpt exp/hubert_it1/model.pt --layer 6 --clusters 100 --frame-step 1 --out exp/targets/it2
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from s3prl_plugins.data.targets import make_targets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="data dir the clusters are fitted on")
    p.add_argument("--also", nargs="*", default=[], help="more data dirs to label")
    p.add_argument("--feature", choices=["mfcc", "fbank", "hidden"], default="mfcc")
    p.add_argument("--ckpt", help="model for --feature hidden")
    p.add_argument("--layer", type=int, help="hidden layer for --feature hidden (0 = first transformer input)")
    p.add_argument("--clusters", type=int, default=100)
    p.add_argument("--frame-step", type=int, default=2, help="keep every n-th frame (100 Hz features -> 50 Hz: 2)")
    p.add_argument("--max-frames", type=int, default=200_000, help="frames sampled for fitting")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    info = make_targets(
        args.train,
        args.out,
        args.feature,
        args.clusters,
        args.frame_step,
        args.also,
        args.ckpt,
        args.layer,
        args.max_frames,
        args.seed,
    )
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
