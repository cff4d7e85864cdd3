"""Read one value for a recipe (what a stage needs to decide, without inline Python).

Usage::

    python -m s3prl_plugins.bin.inspect conf/star.yaml --key trainer.exp_dir --default exp/star   # YAML / JSON
    python -m s3prl_plugins.bin.inspect exp/star/model.pt --key model_config.embed_dim          # a checkpoint
    python -m s3prl_plugins.bin.inspect data/train_clean_100                                       # a Kaldi data dir
    python -m s3prl_plugins.bin.inspect hubert_base --load              # any load_pretrained source
    python -m s3prl_plugins.bin.inspect --downstream ks       # s3prl's downstream of a SUPERB task
    python -m s3prl_plugins.bin.inspect --mfa                 # exit 0 when Montreal Forced Aligner runs here
    python -m s3prl_plugins.bin.inspect exp/star/model.pt --upstream    # the s3prl hub entry that loads it
    python -m s3prl_plugins.bin.inspect common.yaml heads.yaml --set model=exp/m/model.pt --paths exp/
                                              # the paths under exp/ that configs (merged, overridden) read
    python -m s3prl_plugins.bin.inspect common.yaml dp.yaml --key base_dir   # a value of merged configs

``--key`` walks mappings by dotted names; a missing, empty or null value prints ``--default`` (an error
without one). Mappings and lists print as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, List, Optional


def lookup(doc: Any, key: str, default: Optional[str], source: str) -> Any:
    value = doc
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            break
    if value in (None, "", {}, []):
        if default is None:
            raise KeyError(f"{source}: no value at {key} (give --default)")
        return default
    return value


def read(path: str) -> Any:
    if path.endswith((".yaml", ".yml")):
        from s3prl_plugins.config import load_yaml

        return load_yaml(path) or {}
    if path.endswith(".json"):
        with open(path) as f:
            return json.load(f)
    from s3prl_plugins.models.checkpoint import read_checkpoint

    return read_checkpoint(path)


def paths_under(doc: Any, prefix: str) -> List[str]:
    """Every string value of ``doc`` (nested mappings and lists) that starts with ``prefix``, in order."""
    if isinstance(doc, str):
        return [doc] if doc.startswith(prefix) else []
    values = doc.values() if isinstance(doc, dict) else doc if isinstance(doc, list) else []
    return [p for v in values for p in paths_under(v, prefix)]


def upstream_entry(ckpt: str) -> str:
    """The s3prl hub entry of one of our checkpoints: MelHuBERT's log-Mel front-end or the waveform CNN."""
    from s3prl_plugins.models.checkpoint import read_checkpoint

    config = read_checkpoint(ckpt).get("model_config") or {}
    return "star_hubert_local" if config.get("frontend", "conv") == "conv" else "melhubert_local"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "source",
        nargs="*",
        help="a YAML/JSON file (several: merged in order), a checkpoint, a Kaldi data dir, or (--load) a model source",
    )
    p.add_argument("--set", nargs="*", default=[], help="overrides of the configs (section.key=value)")
    p.add_argument("--paths", metavar="PREFIX", help="print every string value starting with PREFIX, one per line")
    p.add_argument("--upstream", action="store_true", help="print the s3prl hub entry that loads the checkpoint")
    p.add_argument("--key", help="dotted path of the value to print")
    p.add_argument("--default", help="printed when the value is missing or empty")
    p.add_argument("--load", action="store_true", help="load SOURCE as a model: print its name and depth")
    p.add_argument(
        "--downstream", choices=["asr", "sid", "ks", "pr"], help="print s3prl's downstream name of a SUPERB task"
    )
    p.add_argument(
        "--mfa",
        action="store_true",
        help="exit 0 when Montreal Forced Aligner runs here (1, with the reason, when not)",
    )
    args = p.parse_args(argv)
    try:
        if args.downstream:
            from s3prl_plugins.eval.superb.tasks import DOWNSTREAM

            print(DOWNSTREAM[args.downstream])
            return 0
        if args.mfa:
            from s3prl_plugins.segment.mfa import mfa_status

            usable, why = mfa_status()
            if not usable:
                print(why, file=sys.stderr)
            return 0 if usable else 1
        if not args.source:
            p.error("give a SOURCE, --downstream or --mfa")
        if len(args.source) > 1 and not (args.paths or args.key):
            p.error("several SOURCEs only with --paths or --key (configs merged in order)")
        if len(args.source) > 1:
            from s3prl_plugins.config import apply_overrides, merge

            doc: Any = {}
            for path in args.source:
                doc = merge(doc, read(path))
            doc = apply_overrides(doc, args.set)
            if args.key:
                value = lookup(doc, args.key, args.default, " + ".join(args.source))
                print(json.dumps(value) if isinstance(value, (dict, list)) else value)
                return 0
            for path in dict.fromkeys(paths_under(doc, args.paths)):
                print(path)
            return 0
        if args.paths:
            from s3prl_plugins.config import apply_overrides

            for path in dict.fromkeys(paths_under(apply_overrides(read(args.source[0]), args.set), args.paths)):
                print(path)
            return 0
        source = args.source[0]
        if args.upstream:
            print(upstream_entry(source))
            return 0
        if args.load:
            from s3prl_plugins.models.loading import load_pretrained

            m = load_pretrained(source)
            print(source, m.config.name, m.config.num_layers, "layers")
            return 0
        if os.path.isdir(source) and os.path.isfile(os.path.join(source, "wav.scp")):
            from s3prl_plugins.data.kaldi import read_data_dir

            print(source, len(read_data_dir(source).utts), "utterances ok")
            return 0
        doc = read(source)
        if args.set:
            from s3prl_plugins.config import apply_overrides

            doc = apply_overrides(doc, args.set)
        value = lookup(doc, args.key, args.default, source) if args.key else doc
        print(json.dumps(value) if isinstance(value, (dict, list)) else value)
        return 0
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
