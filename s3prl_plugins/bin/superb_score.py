"""SUPERB Overall and generalizability (SUPERB@SLT) scores from task metrics.

Usage::

    python -m s3prl_plugins.bin.superb_score exp/superb                       # every task experiment below it
    python -m s3prl_plugins.bin.superb_score exp/superb/ks/superb_test.json exp/superb/asr/superb_test-clean.json
    python -m s3prl_plugins.bin.superb_score submission/results.json          # bin/superb_submission's
    echo '{"PR": 8.16, "ASR": 9.35, "KS": 96.27}' | python -m s3prl_plugins.bin.superb_score -
    echo '{"KS": 0.9627}' | python -m s3prl_plugins.bin.superb_score --fractions -   # accuracies as s3prl prints them

Reads what the pipeline writes: the ``superb_test.json`` / ``superb_test-clean.json`` that
``bin/run_downstream -m evaluate`` writes into each task's experiment, a task's experiment folder, a folder
of task experiments, a submission's ``results.json`` (or its folder), or a JSON object with any of the keys
``PR ASR KS QbE SID ASV SD IC SF-F1 SF-CER ER`` and values as SUPERB reports them (PER %, WER %, accuracy %,
MTWV 0..1, EER %, DER %, F1 %, CER %). Error rates above 100 (insertions) are accepted. Accuracies typed
by hand that all lie in [0, 1] are fractions (s3prl prints ``test acc: 0.9627``): refused unless
``--fractions`` converts them (the pipeline's own files are in percent: an accuracy below 1 % there is real).

Overall and generalizability are defined over all 11 metrics / 10 tasks and printed only when every one is
given; otherwise the output has ``partial_overall`` / ``partial_generalizability`` and ``partial`` naming the
metrics and tasks they average (``"mean of 1/11 metrics: KS; 1/10 tasks: KS"``) and a warning names the
missing ones. The formulas and reference values: :mod:`s3prl_plugins.eval.superb.score`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from s3prl_plugins.eval.superb.score import read_results, superb_scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "results", nargs="+", help="superb_<split>.json files, experiment folders, a results.json, or '-' (stdin)"
    )
    parser.add_argument(
        "--fractions",
        action="store_true",
        help="the accuracies (KS SID IC SF-F1 ER) are fractions, as s3prl prints them: multiply them by 100",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    source = args.results[0] if len(args.results) == 1 else " + ".join(args.results)
    try:
        text = sys.stdin.read() if "-" in args.results else None
        metrics, _, in_units = read_results(args.results, text)
        scores = superb_scores(metrics, source, fractions=args.fractions, in_units=in_units)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if scores.missing:
        print(
            f"warning: {source} has no {', '.join(scores.missing)}: Overall and generalizability need all 11 "
            f"metrics; partial_overall / partial_generalizability are the {scores.scope}",
            file=sys.stderr,
        )
    print(json.dumps(scores.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
