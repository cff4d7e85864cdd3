"""ASR-5k through ESPnet on frozen upstream features: dump -> BPE -> stats -> train -> decode -> score.

Usage::

    python -m s3prl_plugins.bin.espnet_asr --config espnet_recipes/librispeech_100/asr5k/conf/train_asr5k.yaml \\
        --upstream star_hubert_local --ckpt exp/star/model.pt \\
        --train data/train_clean_100 --valid data/dev_clean --test data/test_clean --nbpe 5000 --work exp/asr5k
    ... --stage 4 --stop-stage 6      # stages: 1 dump, 2 BPE, 3 stats, 4 train, 5 decode, 6 score

Each stage runs ESPnet's own ``espnet2.bin.*`` command in a fresh process, with the arguments
ESPnet's ``asr.sh`` passes (:mod:`s3prl_plugins.eval.superb.espnet_asr`). The config is copied to
``<work>/config.yaml`` with the upstream, its checkpoint and the pre-encoder's input size (the
upstream's feature size, measured) filled in. The WER lands in ``<work>/result.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import yaml

from s3prl_plugins.data.kaldi import DataDirError
from s3prl_plugins.eval.superb import espnet_asr as ea


def resolve_config(config: str, upstream: str, ckpt: str, out: str) -> str:
    """Copy ``config`` with the upstream filled in and the pre-encoder's input size measured from it."""
    import s3prl.hub as hub
    import torch

    with open(config, encoding="utf-8") as f:
        conf = yaml.safe_load(f)
    fc = conf.setdefault("frontend_conf", {}).setdefault("frontend_conf", {})
    if upstream:
        fc["upstream"] = upstream
    if ckpt:
        fc["path_or_url"] = os.path.abspath(ckpt)
    name = fc.get("upstream")
    if not callable(getattr(hub, str(name), None)):
        raise ea.EspnetError(f"upstream {name!r} is not an s3prl.hub entry (is s3prl-plugins installed here?)")
    if conf.get("preencoder") == "linear":
        expert = getattr(hub, name)(ckpt=fc.get("path_or_url"))
        with torch.no_grad():
            dim = expert([torch.zeros(16000)])["hidden_states"][-1].shape[-1]
        conf.setdefault("preencoder_conf", {})["input_size"] = int(dim)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        yaml.safe_dump(conf, f, sort_keys=False)
    os.replace(out + ".tmp", out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="ESPnet ASR config (frontend: s3prl)")
    p.add_argument("--upstream", help="s3prl.hub entry (default: the config's)")
    p.add_argument("--ckpt", help="upstream checkpoint (default: the config's path_or_url)")
    p.add_argument("--train", required=True)
    p.add_argument("--valid", required=True)
    p.add_argument("--test", nargs="+", required=True, help="one or more Kaldi data dirs to decode and score")
    p.add_argument("--nbpe", type=int, default=5000, help="sentencepiece units (ASR-5k: 5000)")
    p.add_argument(
        "--bpe-train-text", help="Kaldi text to train the BPE on (asr.sh's --bpe_train_text; default: --train's)"
    )
    p.add_argument("--work", required=True)
    p.add_argument("--stage", type=int, default=1)
    p.add_argument("--stop-stage", type=int, default=6)
    p.add_argument("--ngpu", type=int, default=0)
    p.add_argument("--train-args", default="", help="extra arguments for espnet2.bin.asr_train (e.g. '--max_epoch 2')")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    w = os.path.abspath(args.work)
    dump = lambda d: os.path.join(w, "dump", os.path.basename(os.path.normpath(d)))  # noqa: E731
    bpe = {"bpemodel": os.path.join(w, "bpe", "bpe.model"), "token_list": os.path.join(w, "bpe", "tokens.txt")}
    config = os.path.join(w, "config.yaml")
    stats = os.path.join(w, "stats")
    exp = os.path.join(w, "asr")
    extra = args.train_args.split()
    want = lambda n: args.stage <= n <= args.stop_stage  # noqa: E731
    try:
        if want(1):
            # the upstream first: an unregistered entry or a bad checkpoint is refused before dump/ is written
            resolve_config(args.config, args.upstream, args.ckpt, config)
            for d in [args.train, args.valid, *args.test]:
                ea.prepare_dump(d, dump(d))
        if want(2):
            bpe = ea.train_bpe(
                args.bpe_train_text or os.path.join(dump(args.train), "text"), os.path.join(w, "bpe"), args.nbpe
            )
            for d in [args.valid, *args.test]:
                ea.check_covered(os.path.join(dump(d), "text"), bpe["bpemodel"])
        if want(3):
            ea.collect_stats(config, dump(args.train), dump(args.valid), bpe, w)
        if want(4):
            ea.train(config, dump(args.train), dump(args.valid), bpe, stats, w, ngpu=args.ngpu, extra=extra)
        results = {}
        for d in args.test:
            name = os.path.basename(os.path.normpath(d))
            hyp = os.path.join(w, "decode", name, "1best_recog", "text")
            if want(5):
                hyp = ea.decode(exp, dump(d), w, name=name, ngpu=args.ngpu)
            if want(6):
                results[name] = ea.score(
                    os.path.join(dump(d), "text"), hyp, os.path.join(w, "decode", name, "score.json")
                )
                print(
                    f"{name}: WER {results[name]['wer']:.2f}% CER {results[name]['cer']:.2f}% "
                    f"({results[name]['utterances']} utterances, {results[name]['words']} words)"
                )
        if results:
            with open(os.path.join(w, "result.json.tmp"), "w", encoding="utf-8") as f:
                json.dump({"nbpe": args.nbpe, "config": config, "test": results}, f, indent=2)
            os.replace(os.path.join(w, "result.json.tmp"), os.path.join(w, "result.json"))
    except (ea.EspnetError, DataDirError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
