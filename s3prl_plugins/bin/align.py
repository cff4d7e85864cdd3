"""Forced alignment of Kaldi data dirs: MFA when it works here, else a CTC phone model trained on the
corpus (``--method ctc``); TextGrids per utterance, failures listed, word-boundary error measured when
a reference with exact times is given.

Usage::

    python -m s3prl_plugins.bin.align --train data/train --dirs data/train data/dev data/test \
        --out exp/align [--method auto|mfa|ctc] [--reference-dir CORPUS/reference]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from s3prl_plugins.data.audio import load_audio
from s3prl_plugins.data.kaldi import read_data_dir
from s3prl_plugins.eval.probe.phone_ctc import (
    FeatureDataset,
    FeatureExtractor,
    PhoneVocab,
    extract_features,
    phone_error_rate,
    read_phones,
    train_phone_ctc,
)
from s3prl_plugins.segment.aligner import align_corpus, boundary_errors, frame_energies, with_silences
from s3prl_plugins.segment.mfa import mfa_status

logger = logging.getLogger("align")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="data dir (with a 'phones' file) the CTC aligner trains on")
    p.add_argument("--dirs", nargs="+", required=True, help="data dirs to align (each needs 'phones')")
    p.add_argument("--out", required=True)
    p.add_argument("--method", choices=["auto", "mfa", "ctc"], default="auto")
    p.add_argument("--features", default="fbank", help="aligner input: fbank (100 Hz) or a model checkpoint")
    p.add_argument("--max-steps", type=int, default=1500)
    p.add_argument(
        "--silence-token",
        default=None,
        help="model a silence token around every word (corpora with pauses between words)",
    )
    p.add_argument(
        "--blank-penalty",
        default="0",
        help="subtract from the blank log-probability when aligning; "
        "'auto' picks the best of 0,5,10,15,20,30,40 on --tune-dir against its reference times",
    )
    p.add_argument("--tune-dir", help="data dir (with a reference in --reference-dir) used by --blank-penalty auto")
    p.add_argument(
        "--trim-silence", action="store_true", help="move word edges inward past frames 50 dB below the loudest"
    )
    p.add_argument("--reference-dir", help="folder with <dir name>.jsonl exact word times, to measure boundary error")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ok, reason = mfa_status()
    if args.method == "mfa" and not ok:
        print(f"error: MFA requested but not usable: {reason}", file=sys.stderr)
        return 2
    if args.method == "mfa" or (args.method == "auto" and ok):
        print(
            "error: run MFA with the recipe's mfa stage (egs/*/run.sh --aligner mfa); this tool trains the CTC aligner",
            file=sys.stderr,
        )
        return 2
    if args.method == "auto":
        logger.warning("MFA not usable (%s): aligning with the CTC phone model instead", reason)

    train_phones = read_phones(os.path.join(args.train, "phones"))
    extra = [args.silence_token] if args.silence_token else []
    vocab = PhoneVocab([ph for words in train_phones.values() for w in words for ph in w] + extra)
    sil = vocab.index[args.silence_token] if args.silence_token else None
    extractor = FeatureExtractor(args.features)  # the model (if any) is loaded once for every data dir
    feats, shift = extract_features(extractor, args.train)
    targets = {u: with_silences([vocab.encode(w) for w in ws], sil) for u, ws in train_phones.items()}
    exp = os.path.join(args.out, "model")
    model = train_phone_ctc((feats, targets), None, len(vocab), exp, max_steps=args.max_steps)

    def energies_of(d, dfeats):
        if not args.trim_silence:
            return None
        data = read_data_dir(d)
        return {u: frame_energies(load_audio(data.wav[u]), dfeats[u].size(1), shift) for u in data.utts if u in dfeats}

    def feats_of(d):
        return feats if os.path.abspath(d) == os.path.abspath(args.train) else extract_features(extractor, d)[0]

    penalty_scores = {}
    if args.blank_penalty == "auto":
        if not (args.tune_dir and args.reference_dir):
            print("error: --blank-penalty auto needs --tune-dir and --reference-dir", file=sys.stderr)
            return 2
        name = os.path.basename(os.path.normpath(args.tune_dir))
        data = read_data_dir(args.tune_dir)
        tfeats = feats_of(args.tune_dir)
        ten = energies_of(args.tune_dir, tfeats)
        for pen in (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0):
            out = os.path.join(args.out, "tune", f"{pen:g}")
            align_corpus(
                model,
                vocab,
                tfeats,
                read_phones(os.path.join(args.tune_dir, "phones")),
                data.text,
                data.utt2dur,
                shift,
                out,
                args.silence_token,
                pen,
                ten,
            )
            penalty_scores[pen] = boundary_errors(out, os.path.join(args.reference_dir, f"{name}.jsonl"))[
                "mean_abs_boundary_ms"
            ]
        blank_penalty = min(penalty_scores, key=penalty_scores.get)
        logger.info(
            "blank penalty %g chosen on %s (mean boundary error by penalty: %s)", blank_penalty, name, penalty_scores
        )
    else:
        blank_penalty = float(args.blank_penalty)
    report = {
        "method": "ctc",
        "features": args.features,
        "mfa": reason,
        "phones": len(vocab) - 1,
        "silence_token": args.silence_token,
        "blank_penalty": blank_penalty,
        "tuning": {f"{k:g}": v for k, v in penalty_scores.items()},
        "trim_silence": args.trim_silence,
        "dirs": {},
    }
    for d in args.dirs:
        name = os.path.basename(os.path.normpath(d))
        data = read_data_dir(d)
        phones = read_phones(os.path.join(d, "phones"))
        dfeats = feats_of(d)
        res = align_corpus(
            model,
            vocab,
            dfeats,
            phones,
            data.text,
            data.utt2dur,
            shift,
            os.path.join(args.out, name),
            args.silence_token,
            blank_penalty,
            energies_of(d, dfeats),
        )
        entry = {"aligned": res.aligned, "failed": len(res.failed)}
        known = {
            u: with_silences([vocab.encode(w) for w in ws], sil)
            for u, ws in phones.items()
            if all(ph in vocab.index for w in ws for ph in w)
        }
        entry["per"] = phone_error_rate(model, FeatureDataset(dfeats, known))
        ref = os.path.join(args.reference_dir, f"{name}.jsonl") if args.reference_dir else None
        if ref and os.path.isfile(ref):
            entry.update(boundary_errors(os.path.join(args.out, name), ref))
        report["dirs"][name] = entry
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
