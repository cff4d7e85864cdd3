"""LibriSpeech-layout corpus -> Kaldi data dirs.

Usage::

    python -m s3prl_plugins.bin.prepare_data --root /data/LibriSpeech --subsets train-clean-100 dev-clean --out data
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from s3prl_plugins.data.kaldi import DataDirError
from s3prl_plugins.data.librispeech import prepare_librispeech


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--subsets", nargs="+", required=True)
    p.add_argument("--out", required=True, help="data dirs are written to OUT/<subset with - as _>")
    p.add_argument("--min-seconds", type=float, default=0.1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for subset in args.subsets:
        out = os.path.join(args.out, subset.replace("-", "_"))
        try:
            d, skipped = prepare_librispeech(args.root, subset, out, args.min_seconds)
        except DataDirError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        hours = sum(d.utt2dur.values()) / 3600
        print(f"{out}: {len(d.utts)} utterances, {len(d.spk2utt)} speakers, {hours:.2f} h, {len(skipped)} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
