"""Read one value for a recipe (what a stage needs to decide, without inline Python).

Usage::

    python -m s3prl_plugins.bin.inspect conf/star.yaml --key trainer.exp_dir --default exp/star   # YAML / JSON
    python -m s3prl_plugins.bin.inspect exp/star/model.pt --key model_config.embed_dim          # a checkpoint
    python -m s3prl_plugins.bin.inspect data/train_clean_100                                       # a Kaldi data dir
    python -m s3prl_plugins.bin.inspect hubert_base --load                                         # any load_pretrained source
    python -m s3prl_plugins.bin.inspect --downstream ks       # s3prl's downstream of a SUPERB task
    python -m s3prl_plugins.bin.inspect --mfa                 # exit 0 when Montreal Forced Aligner runs here

``--key`` walks mappings by dotted names; a missing, empty or null value prints ``--default`` (an error
without one). Mappings and lists print as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "source", nargs="?", help="a YAML/JSON file, a checkpoint, a Kaldi data dir, or (--load) a model source"
    )
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
        if args.load:
            from s3prl_plugins.models.loading import load_pretrained

            m = load_pretrained(args.source)
            print(args.source, m.config.name, m.config.num_layers, "layers")
            return 0
        if os.path.isdir(args.source) and os.path.isfile(os.path.join(args.source, "wav.scp")):
            from s3prl_plugins.data.kaldi import read_data_dir

            print(args.source, len(read_data_dir(args.source).utts), "utterances ok")
            return 0
        doc = read(args.source)
        value = lookup(doc, args.key, args.default, args.source) if args.key else doc
        print(json.dumps(value) if isinstance(value, (dict, list)) else value)
        return 0
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
