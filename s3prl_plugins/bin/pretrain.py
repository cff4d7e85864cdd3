"""Masked-prediction pre-training (HuBERT / MelHuBERT) from a YAML config; resumes automatically.

Usage::

    python -m s3prl_plugins.bin.pretrain --config conf/melhubert_tiny.yaml [--set trainer.max_steps=200 ...]
    torchrun --nproc_per_node 2 -m s3prl_plugins.bin.pretrain --config ...      # DDP (gloo on CPU, NCCL on GPU)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import yaml

from s3prl_plugins.train.pretrain import run_pretrain
from s3prl_plugins.train.trainer import TrainingError


def apply_overrides(config: dict, overrides) -> dict:
    """``section.key=value`` (value parsed as YAML) into the config; a number indexes a list
    (``steps.0.iterations=2``)."""
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set expects section.key=value, got {item!r}")
        path, value = item.split("=", 1)
        node = config
        keys = path.split(".")
        for k in keys[:-1]:
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    raise ValueError(f"--set {item}: {k!r} is not an index of a list of {len(node)}")
                node = node[int(k)]
            else:
                node = node.setdefault(k, {})
        last = keys[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ValueError(f"--set {item}: {last!r} is not an index of a list of {len(node)}")
            node[int(last)] = yaml.safe_load(value)
        else:
            node[last] = yaml.safe_load(value)
    return config


def leave_process_group() -> None:
    """Destroy a torchrun process group before exit: a gloo group left alive can abort the process at
    interpreter shutdown ("terminate called without an active exception", seen once in CI-like runs)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--set", nargs="*", default=[], help="overrides, e.g. trainer.max_steps=100")
    args = p.parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    with open(args.config) as f:
        config = apply_overrides(yaml.safe_load(f), args.set)
    try:
        result = run_pretrain(config)
        leave_process_group()
    except (TrainingError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank == 0:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
