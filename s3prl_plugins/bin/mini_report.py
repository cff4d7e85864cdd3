"""The mini recipe's report (its stage 11), run in egs/mini: prints the summary and writes exp/report.{json,md}
and the plots.

Usage::

    python -m s3prl_plugins.bin.mini_report [--subsampling avg2 avg4 cif_card4 ...]
"""

from __future__ import annotations

import argparse
import sys

from s3prl_plugins.eval.report.mini import mini_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--subsampling", nargs="*", default=[], help="the recipe's subsampled students (distilhubert_tiny_<name>)"
    )
    args = p.parse_args(argv)
    print("\n".join(mini_report(args.subsampling)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
