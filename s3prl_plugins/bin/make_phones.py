"""Write ``phones`` (``utt p p | p p ...``) for Kaldi data dirs from their transcripts and a lexicon
(CMUdict, offline, by default); utterances with unknown words are listed in ``phones.skipped``.

Usage::

    python -m s3prl_plugins.bin.make_phones --dirs data/train_clean_100 data/test_clean [--lexicon lexicon.txt]
    python -m s3prl_plugins.bin.make_phones --dirs data/train --mini-corpus data/mini_corpus \\
        --split train   # reference phones
"""

from __future__ import annotations

import argparse
import logging
import sys

from s3prl_plugins.data.lexicon import cmudict_lexicon, read_lexicon, write_phones
from s3prl_plugins.data.mini_corpus import write_reference_phones


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dirs", nargs="+", required=True)
    p.add_argument("--lexicon", help="WORD p1 p2 ... per line (default: CMUdict without stress)")
    p.add_argument(
        "--mini-corpus", help="the mini corpus folder: its reference (espeak-ng) phones instead of a lexicon"
    )
    p.add_argument("--split", help="with --mini-corpus: the corpus split of the (one) data dir")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.mini_corpus:
        if not args.split or len(args.dirs) != 1:
            p.error("--mini-corpus takes one data dir in --dirs and its --split")
        try:
            n = write_reference_phones(args.mini_corpus, args.split, args.dirs[0])
        except OSError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{args.dirs[0]}/phones: {n} utterances (reference phones of {args.mini_corpus}, {args.split})")
        return 0
    lex = read_lexicon(args.lexicon) if args.lexicon else cmudict_lexicon()
    for d in args.dirs:
        try:
            written, skipped = write_phones(d, lex)
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{d}/phones: {written} utterances ({skipped} skipped, see {d}/phones.skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
