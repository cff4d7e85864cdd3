"""Figures and table of compression chains (bin/compress outputs) side by side: the trade-off (PER vs
MACs / parameters / RTF), loss and PER vs density, weight pruning's per-layer / per-matrix density and
head diagonality (Lin et al. 2024 Fig. 1, 5-9), and report.md.

Usage::

    python -m s3prl_plugins.bin.compression_report --chains exp/compress/weight exp/compress/heads ... \\
        --out exp/compress/report
"""

from __future__ import annotations

import argparse
import json
import sys

from s3prl_plugins.eval.report.compression_report import write_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chains", nargs="+", required=True, help="exp_dir of each chain (with trajectory.json)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        files = write_report(args.chains, args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(files, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
