"""SUPERB Overall and generalizability (SUPERB@SLT) scores from task metrics.

Usage::

    python -m s3prl_plugins.bin.superb_score results.json          # one JSON object on stdout
    echo '{"PR": 8.16, "ASR": 9.35, "KS": 96.27}' | python -m s3prl_plugins.bin.superb_score -

``results.json`` is a JSON object with any of the keys ``PR ASR KS QbE SID ASV SD IC SF-F1 SF-CER ER``
and values as SUPERB reports them (PER %, WER %, accuracy %, MTWV 0..1, EER %, DER %, F1 %, CER %),
e.g. the ``results.json`` of ``bin/superb_submission`` (gathered from ``bin/run_downstream -m evaluate``). Metrics not given are
named (``missing``, and a warning on stderr) and the scores average what is there; a value out of
range or an unknown key is refused. The formulas and reference values: :mod:`s3prl_plugins.eval.superb`.
"""

from __future__ import annotations

import argparse
import json
import sys

from s3prl_plugins.eval.superb import superb_scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="JSON file of SUPERB task metrics ('-' reads stdin)")
    args = parser.parse_args(argv)
    try:
        if args.results == "-":
            text, source = sys.stdin.read(), "stdin"
        else:
            with open(args.results, encoding="utf-8") as f:
                text, source = f.read(), args.results
        try:
            metrics = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source} is not JSON ({e})") from None
        scores = superb_scores(metrics, source)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if scores.missing:
        print(f"warning: {source} has no {', '.join(scores.missing)}: the scores average the "
              f"{len(scores.metrics)} metrics given, not all 11", file=sys.stderr)
    print(json.dumps(scores.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
