"""Average frame rates of phones, characters and BPE pieces on a corpus (Meng et al. 2022, Fig. 2).

Usage::

    python -m s3prl_plugins.bin.unit_rates --data data/dev --train data/train --plot exp/unit_rates.png
    python -m s3prl_plugins.bin.unit_rates --data data/dev_clean --train data/train_960 \\
        --vocab 100 200 500 1000 5000 16000
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from s3prl_plugins.eval.probe.unit_rates import PAPER_VOCABS, plot_unit_rates, unit_rates


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="data dir measured (text, utt2dur, optional phones)")
    p.add_argument("--train", help="data dir whose text trains the BPE models (default: --data)")
    p.add_argument("--vocab", type=int, nargs="*", default=list(PAPER_VOCABS), help="BPE vocabulary sizes")
    p.add_argument("--plot", help="PNG to write")
    p.add_argument("--out", help="JSON to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        res = unit_rates(args.data, args.train, args.vocab)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.plot:
        res["plot"] = plot_unit_rates(res, args.plot)
    text = json.dumps(res, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
