"""Convert any checkpoint the library reads into our format (``{format_version, model_config, model_weight}``).

Usage::

    python -m s3prl_plugins.bin.convert PUBLISHED.ckpt --config PUBLISHED.yaml --out model.pt   # STaRHuBERT release
    python -m s3prl_plugins.bin.convert hubert_local.pt --out hubert.pt                        # s3prl / fairseq / HF

The output loads with ``s3prl.hub.star_hubert_local(ckpt="model.pt")``, ``load_pretrained``, the
trainer (``teacher.source``, ``student.source``) and the profiler, with no yaml beside it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from s3prl_plugins.models import count_parameters
from s3prl_plugins.models.checkpoint import save_checkpoint
from s3prl_plugins.models.loading import load_pretrained


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a checkpoint file, a Hugging Face folder or an s3prl hub teacher name")
    p.add_argument("--config", help="the published .yaml of a STaRHuBERT Lightning .ckpt")
    p.add_argument("--out", required=True, help="where to write our checkpoint")
    p.add_argument(
        "--keep-head", action="store_true", help="keep pre-training heads (HuBERT final_proj, DistilHuBERT heads)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if os.path.abspath(args.out) == os.path.abspath(args.source):
        print("error: --out must not overwrite the source", file=sys.stderr)
        return 2
    try:
        model = load_pretrained(args.source, keep_head=args.keep_head, model_config=args.config)
        save_checkpoint(
            args.out, model, converted_from=os.path.abspath(args.source) if os.path.exists(args.source) else args.source
        )
    except (ValueError, RuntimeError, OSError) as e:  # a bad source, or --out on a full / read-only folder
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = model.config
    print(
        f"wrote {args.out}: {c.name or 'model'}, {c.num_layers} layers, width {c.embed_dim}, FFN {c.ffn_dims[0]}, "
        f"{count_parameters(model, include_head=False):,} parameters"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
