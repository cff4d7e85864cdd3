"""Align Kaldi data dirs with the Montreal Forced Aligner (real ``mfa align``; needs MFA from conda).

Usage::

    python -m s3prl_plugins.bin.mfa_align --dirs data/train_clean_100 data/dev_clean \
        --dictionary english_us_arpa --acoustic-model english_us_arpa --out exp/align_mfa
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from s3prl_plugins.segment.mfa import mfa_status, run_mfa


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dirs", nargs="+", required=True)
    p.add_argument("--dictionary", required=True, help="MFA dictionary name or file")
    p.add_argument("--acoustic-model", required=True, help="MFA acoustic model name or zip")
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ok, reason = mfa_status()
    if not ok:
        print(
            f"error: MFA is not usable here ({reason}); use python -m s3prl_plugins.bin.align (CTC) instead",
            file=sys.stderr,
        )
        return 2
    for d in args.dirs:
        name = os.path.basename(os.path.normpath(d))
        aligned = run_mfa(d, args.dictionary, args.acoustic_model, os.path.join(args.out, name), args.jobs)
        print(f"{name}: {len(aligned)} utterances aligned by MFA -> {os.path.join(args.out, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
