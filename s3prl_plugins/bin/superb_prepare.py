"""Write the data files and config.yaml of a SUPERB task for s3prl's runner, from a corpus.

Usage::

    python -m s3prl_plugins.bin.superb_prepare asr --train data/train --dev data/dev --test data/test --out superb/asr
    python -m s3prl_plugins.bin.superb_prepare sid --train data/sid_train --dev data/sid_dev --test data/sid_test \\
        --out superb/sid
    python -m s3prl_plugins.bin.superb_prepare ks --speech-commands data/mini_corpus/subsets --out superb/ks
    python -m s3prl_plugins.bin.superb_prepare pr --train data/train --dev data/dev --test data/test --out superb/pr

then ``python -m s3prl_plugins.bin.run_downstream -m train -d <asr|voxceleb1|speech_commands>
-c superb/<task>/config.yaml ...`` (the next command is printed; PR's ``ctc`` needs ``--s3prl-root`` -- a
git checkout of s3prl --, filled in from ``S3PRL_ROOT`` when it is set). What is written, and the
hyper-parameters: :mod:`s3prl_plugins.eval.superb.tasks`.
"""

from __future__ import annotations

import argparse
import os
import sys

from s3prl_plugins.data.kaldi import DataDirError
from s3prl_plugins.eval.superb.tasks import DOWNSTREAM, TaskDataError, prepare


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["asr", "sid", "ks", "pr"])
    parser.add_argument("--out", required=True, help="folder for the data files and config.yaml (replaced)")
    parser.add_argument("--train", help="Kaldi data dir (asr, sid)")
    parser.add_argument("--dev", help="Kaldi data dir (asr, sid)")
    parser.add_argument("--test", help="Kaldi data dir (asr, sid)")
    parser.add_argument("--speech-commands", help="ks: the folder with speech_commands_v0.01/ (or that root itself)")
    parser.add_argument("--test-root", help="ks: the Speech Commands test-set root, when not beside the train root")
    parser.add_argument(
        "--lexicon", help="pr: a lexicon 'WORD p1 p2 ...' (default: built from the data dirs' phones files)"
    )
    parser.add_argument("--steps", type=int, help="runner.total_steps (SUPERB: 200000; PR 100000)")
    parser.add_argument("--num-workers", type=int, default=4, help="data-loader workers (SUPERB's configs use 12)")
    args = parser.parse_args(argv)
    kw = {"num_workers": args.num_workers}
    if args.steps:
        kw["steps"] = args.steps
    if args.task == "pr" and args.lexicon:
        kw["lexicon"] = args.lexicon
    if args.task == "ks":
        if not args.speech_commands:
            parser.error("ks needs --speech-commands")
        kw.update(speech_commands=args.speech_commands, test_root=args.test_root)
    else:
        if not (args.train and args.dev and args.test):
            parser.error(f"{args.task} needs --train, --dev and --test")
        kw.update(train=args.train, dev=args.dev, test=args.test)
    try:
        config = prepare(args.task, args.out, **kw)
    except (TaskDataError, DataDirError, ValueError, OSError) as e:  # ValueError: a malformed --lexicon
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = ""
    if args.task == "pr":  # s3prl's ctc corpus code is only in a git checkout
        root = f"--s3prl-root {os.environ.get('S3PRL_ROOT') or 'S3PRL_CHECKOUT'} "
    print(f"{config}")
    print(
        f"next: python -m s3prl_plugins.bin.run_downstream {root}-m train -u UPSTREAM -k CKPT "
        f"-d {DOWNSTREAM[args.task]} -c {config} -p EXPDIR"
    )
    if args.task == "pr" and not os.environ.get("S3PRL_ROOT"):
        print("      (S3PRL_CHECKOUT: a git clone of https://github.com/s3prl/s3prl; PyPI's s3prl lacks ctc/corpus)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
