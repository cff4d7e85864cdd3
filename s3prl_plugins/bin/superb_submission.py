"""Build the SUPERB leaderboard's public-set upload (predict.zip + the form's fields) from evaluated experiments.

Usage::

    python -m s3prl_plugins.bin.superb_submission --out submission --upstream star_hubert_local \\
        --ckpt exp/star/model.pt --corpus "LibriSpeech 960 h" \\
        --asr exp/superb/asr --ks exp/superb/ks --sid exp/superb/sid --pr exp/superb/pr
    python -m s3prl_plugins.bin.superb_submission --out submission --upstream star_hubert_local \\
        --ckpt exp/star/model.pt --train-config conf/star.yaml --ks exp/superb/ks   # corpus counted from data.train

The pre-training corpus is what the form asks: ``--corpus`` says it, or ``--train-config`` (the training
YAML, or a trainer checkpoint, whose ``run_config`` is read) counts it from the data dirs (names, utterances,
hours); one of them is required -- there is no default.

Each task option names an experiment folder of ``bin/run_downstream`` (or s3prl's run_downstream) after
``-m evaluate`` on its test split. Writes ``<out>/predict.zip``, ``<out>/predict/``, ``<out>/README.md``
(parameters, MACs by the SUPERB@SLT protocol, stride, input, corpus), ``<out>/results.json`` (for
``bin/superb_score``) and ``<out>/model.json``. Layout: :mod:`s3prl_plugins.eval.superb.submission`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from s3prl_plugins.data.kaldi import DataDirError
from s3prl_plugins.eval.superb.submission import (
    FILES,
    SubmissionError,
    build_submission,
    corpus_from_training,
    model_card,
)
from s3prl_plugins.models.checkpoint import CheckpointError
from s3prl_plugins.models.loading import OfflineError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--upstream", required=True, help="the s3prl hub entry the leaderboard should load")
    p.add_argument("--ckpt", help="its checkpoint (-k)")
    p.add_argument("--model-config", help="its model config (-g), e.g. a published STaRHuBERT .yaml")
    p.add_argument("--name", help="model name on the leaderboard (default: the upstream)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", help="the pre-training corpus, as the form asks (e.g. 'LibriSpeech 960 h')")
    src.add_argument(
        "--train-config", help="the training YAML (or a trainer checkpoint): the corpus is counted from its data.train"
    )
    p.add_argument("--no-profile", action="store_true", help="skip counting parameters and MACs")
    for task in FILES:
        p.add_argument(f"--{task}", metavar="EXPDIR", help=f"experiment folder of the {task} task")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    experiments = {t: getattr(args, t) for t in FILES if getattr(args, t)}
    try:
        profile, stride = None, None
        if not args.no_profile:
            import s3prl.hub as hub

            from s3prl_plugins.eval.probe.profile import profile_model

            entry = getattr(hub, args.upstream, None)
            if entry is None:
                raise SubmissionError(f"--upstream {args.upstream} is not an s3prl.hub entry")
            expert = entry(ckpt=args.ckpt, model_config=args.model_config).eval()
            stride = int(expert.get_downsample_rates("hidden_states"))
            profile = profile_model(expert, args.upstream, rtf_repeats=1, gpu=False).to_dict()
        corpus = args.corpus or corpus_from_training(args.train_config)
        card = model_card(args.upstream, args.ckpt, corpus, args.name or args.upstream, profile, stride)
        summary = build_submission(args.out, experiments, card)
    except (SubmissionError, DataDirError, OSError, CheckpointError, OfflineError) as e:  # one line each
        # DataDirError: --out holds files it did not write; CheckpointError: --ckpt does not load
        print(f"error: {e}", file=sys.stderr)
        return 2
    for w in summary["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{summary['zip']}: {', '.join(f'{t} ({n})' for t, n in sorted(summary['tasks'].items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
