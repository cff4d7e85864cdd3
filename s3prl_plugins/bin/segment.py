"""Write segmentations (boundaries per utterance at 50 Hz) for CIF guidance and the forced-alignment topline.

Usage::

    # phone boundaries of forced alignments (MFA's or our CTC aligner's TextGrids)
    python -m s3prl_plugins.bin.segment textgrid --data data/train --textgrids exp/align/train \\
        --out exp/segments/phones/train.seg

    # smoothed teacher codes (Kamper and van Niekerk's DP; Meng et al. 2022 §5.2.1): k-means on layer 6,
    # lambda swept on 100 training utterances for a 12.5 Hz average frame rate
    python -m s3prl_plugins.bin.segment dp --train data/train --also data/dev --ckpt exp/teacher/model.pt \\
        --layer 6 --clusters 100 --target-rate 12.5 --out exp/segments/dp12.5

Outputs: ``<out>/<data dir name>.seg`` (``utt num_frames end_1 ... end_K``), for ``dp`` also
``<name>.codes`` (smoothed codes per frame), ``centroids.npy``; ``info.json`` with the source, lambda and
the average frame rate of each file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import numpy as np


def _name(d: str) -> str:
    return os.path.basename(os.path.normpath(d))


def cmd_textgrid(args) -> dict:
    from s3prl_plugins.segment.segmentation import average_rate, check_against_audio, from_textgrids, write_segmentation

    res = from_textgrids(args.data, args.textgrids, tier=args.tier)
    seg = res["segmentation"]
    if not seg:
        raise ValueError(f"no TextGrid of {args.data} found in {args.textgrids}")
    check_against_audio(seg, args.data)
    info = {
        "source": "textgrid",
        "textgrids": args.textgrids,
        "tier": args.tier,
        "utterances": len(seg),
        "missing": len(res["missing"]),
        "rate_hz": round(average_rate(seg), 3),
    }
    write_segmentation(args.out, seg, info)
    return info


def cmd_dp(args) -> dict:
    from s3prl_plugins.data.dataset import write_labels
    from s3prl_plugins.data.targets import fit_kmeans
    from s3prl_plugins.segment.dp import find_penalty, hidden_features, rate_of, segment_all
    from s3prl_plugins.segment.segmentation import check_against_audio, write_segmentation

    if (args.target_rate is None) == (args.penalty is None):
        raise ValueError("give exactly one of --target-rate (sweep lambda) and --penalty")
    train = hidden_features(args.train, args.ckpt, args.layer)
    frame_rate = 50.0
    rng = np.random.default_rng(args.seed)
    allf = np.concatenate(list(train.values()))
    if allf.shape[0] > args.max_frames:
        allf = allf[rng.choice(allf.shape[0], args.max_frames, replace=False)]
    codebook = fit_kmeans(allf, args.clusters, args.seed).cluster_centers_.astype("float64")
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "centroids.npy"), codebook.astype("float32"))
    info = {
        "source": "dp",
        "ckpt": args.ckpt,
        "layer": args.layer,
        "clusters": args.clusters,
        "max_length": args.max_length,
    }
    if args.target_rate is not None:
        utts = sorted(train)
        sweep_utts = [utts[i] for i in rng.permutation(len(utts))[: args.sweep_utts]]
        found = find_penalty({u: train[u] for u in sweep_utts}, codebook, args.target_rate, frame_rate, args.max_length)
        logging.info(
            "lambda %.4g gives %.2f Hz on %d utterances (target %.2f Hz)",
            found["penalty"],
            found["rate"],
            len(sweep_utts),
            args.target_rate,
        )
        penalty = found["penalty"]
        info.update(
            target_rate_hz=args.target_rate, sweep_utterances=len(sweep_utts), sweep_rate_hz=round(found["rate"], 3)
        )
    else:
        penalty = args.penalty
    info["penalty"] = penalty
    for d in [args.train, *args.also]:
        feats = train if d == args.train else hidden_features(d, args.ckpt, args.layer)
        seg, codes = segment_all(feats, codebook, penalty, args.max_length)
        check_against_audio(seg, d)
        rate = rate_of(seg, frame_rate)
        write_segmentation(os.path.join(args.out, _name(d) + ".seg"), seg, {**info, "rate_hz": round(rate, 3)})
        write_labels(os.path.join(args.out, _name(d) + ".codes"), codes)
        info[f"rate_hz_{_name(d)}"] = round(rate, 3)
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("textgrid", help="boundaries of a TextGrid tier")
    t.add_argument("--data", required=True)
    t.add_argument("--textgrids", required=True, help="folder of <utt>.TextGrid")
    t.add_argument("--tier", default="phones")
    t.add_argument("--out", required=True, help="the .seg file to write")
    d = sub.add_parser("dp", help="smoothed k-means codes of a teacher layer")
    d.add_argument("--train", required=True, help="data dir the codebook is fitted on (and segmented)")
    d.add_argument("--also", nargs="*", default=[], help="more data dirs to segment")
    d.add_argument("--ckpt", required=True, help="the teacher (any checkpoint load_pretrained reads)")
    d.add_argument("--layer", type=int, default=6, help="teacher layer (the paper: 6)")
    d.add_argument("--clusters", type=int, default=100)
    d.add_argument("--target-rate", type=float, help="average segments per second to sweep lambda for")
    d.add_argument("--penalty", type=float, help="lambda, instead of a sweep")
    d.add_argument("--sweep-utts", type=int, default=100)
    d.add_argument("--max-length", type=int, default=50, help="longest segment (frames)")
    d.add_argument("--max-frames", type=int, default=200_000, help="frames sampled for k-means")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        info = cmd_textgrid(args) if args.cmd == "textgrid" else cmd_dp(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
