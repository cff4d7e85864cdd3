"""s3prl's SUPERB runner (``run_downstream.py``) with our upstreams, on torch 2.8 and CPU hosts.

Usage (s3prl's own arguments, ``-m -n -p -u -k -g -d -c -o -e -t ...``, plus ``--s3prl-root``)::

    python -m s3prl_plugins.bin.superb_prepare ks --speech-commands data/mini_corpus/subsets --out superb/ks
    python -m s3prl_plugins.bin.run_downstream -m train -u star_hubert_local -k exp/star/model.pt \\
        -d speech_commands -c superb/ks/config.yaml -p exp/superb/ks
    python -m s3prl_plugins.bin.run_downstream -m evaluate -e exp/superb/ks/dev-best.ckpt   # -> superb_test.json
    python -m s3prl_plugins.bin.run_downstream --s3prl-root ~/s3prl -m train -d ctc -c ...  # PR: a git checkout

It runs s3prl's own ``main()`` and ``Runner`` (no copy of their code) after the compatibility fixes
listed in :mod:`s3prl_plugins.eval.superb.s3prl_runner`; ``-m evaluate`` also writes
``<expdir>/superb_<split>.json`` with the metric in SUPERB's units, which ``bin/superb_submission``, ``bin/report`` and
``bin/superb_score`` read.
"""

from __future__ import annotations

import argparse
import logging
import sys

from s3prl_plugins.eval.superb.s3prl_runner import RunnerError, run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--s3prl-root",
        help="an s3prl git checkout to run instead of the installed package (PR needs its ctc corpus code)",
    )
    ours, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not rest or rest in (["-h"], ["--help"]):
        print(__doc__)
        print("s3prl's own options: python -m s3prl_plugins.bin.run_downstream -m train --help")
        return 0 if rest else 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(rest, s3prl_root=ours.s3prl_root)
    except RunnerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
