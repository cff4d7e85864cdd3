"""Combine Kaldi data dirs into one (e.g. LibriSpeech's three training subsets into 960 h).

Usage::

    python -m s3prl_plugins.bin.combine_data --out data/train data/train_clean_100 data/train_clean_360 \\
        data/train_other_500
"""

from __future__ import annotations

import argparse
import sys

from s3prl_plugins.data.kaldi import DataDirError, combine_data_dirs, write_data_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("dirs", nargs="+")
    args = p.parse_args(argv)
    try:
        d = combine_data_dirs(args.dirs)
        write_data_dir(d, args.out)
    except (OSError, DataDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(d.utts)} utterances from {len(args.dirs)} data dir(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
