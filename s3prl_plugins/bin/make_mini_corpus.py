"""Synthesise the embedded mini corpus (English, espeak-ng, LibriSpeech layout, exact word times).

Usage::

    python -m s3prl_plugins.bin.make_mini_corpus --out data/mini_corpus [--seed 0] [--noise-snr 10 30]
        [--reverb-prob 0.3] [--subsets ks sid]

Besides the corpus it writes keyword-spotting and speaker-identification subsets under OUT/subsets
(Speech Commands v0.01 layout and Kaldi data dirs data/ks_*, data/sid_*; see
s3prl_plugins/data/mini_subsets.py); ``--subsets`` with no value makes none.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from s3prl_plugins.data.mini_corpus import CorpusError, MiniCorpusConfig, make_mini_corpus
from s3prl_plugins.data.mini_subsets import make_subsets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (LibriSpeech/, reference/, lexicon.txt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--utts-per-speaker", type=int, default=45)
    p.add_argument("--speakers", type=int, nargs=3, default=[12, 2, 2], metavar=("TRAIN", "DEV", "TEST"))
    p.add_argument(
        "--noise-snr", type=float, nargs=2, default=None, metavar=("LO", "HI"), help="add white noise, SNR dB range"
    )
    p.add_argument("--reverb-prob", type=float, default=0.0, help="fraction of utterances with room reverberation")
    p.add_argument(
        "--subsets",
        nargs="*",
        choices=["ks", "sid"],
        default=["ks", "sid"],
        help="subsets to make under OUT/subsets: ks (keyword spotting), sid (speaker identification); none if empty",
    )
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = MiniCorpusConfig(
        seed=args.seed,
        utts_per_speaker=args.utts_per_speaker,
        split_speakers=dict(zip(("train", "dev", "test"), args.speakers)),
        noise_snr_db=tuple(args.noise_snr) if args.noise_snr else None,
        reverb_prob=args.reverb_prob,
    )
    try:
        summary = make_mini_corpus(args.out, config, jobs=args.jobs)
        if args.subsets:
            summary["subsets"] = {
                k: v for k, v in make_subsets(args.out, kinds=args.subsets, jobs=args.jobs).items() if k != "config"
            }
    except CorpusError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
