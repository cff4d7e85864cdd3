"""Masked-prediction pre-training (HuBERT / MelHuBERT) from a YAML config; resumes automatically.

Usage::

    python -m s3prl_plugins.bin.pretrain --config conf/melhubert_tiny.yaml [--set trainer.max_steps=200 ...] [--restart]
    torchrun --nproc_per_node 2 -m s3prl_plugins.bin.pretrain --config ...      # DDP (gloo on CPU, NCCL on GPU)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from s3prl_plugins.config import apply_overrides, load_config  # noqa: F401 - apply_overrides: re-exported
from s3prl_plugins.data.config_paths import check_input_paths
from s3prl_plugins.models.checkpoint import DiskFullError
from s3prl_plugins.train.pretrain import run_pretrain
from s3prl_plugins.train.trainer import TrainingError

RESTART_HELP = (
    "start over although trainer.exp_dir holds checkpoints (they are moved aside to checkpoints.before-restart-*, "
    "not deleted); without it a run resumes from the newest readable checkpoint, or refuses when none can be read"
)


def leave_process_group() -> None:
    """Destroy a torchrun process group before exit: a gloo group left alive can abort the process at
    interpreter shutdown ("terminate called without an active exception", seen once in CI-like runs)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--set", nargs="*", default=[], help="overrides, e.g. trainer.max_steps=100 trainer.lr=1e-4")
    p.add_argument("--restart", action="store_true", help=RESTART_HELP)
    args = p.parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = apply_overrides(load_config(args.config), args.set)
        config = check_input_paths(config, args.config, "python -m s3prl_plugins.bin.pretrain")
        result = run_pretrain(config, restart=args.restart)
        leave_process_group()
    except (TrainingError, ValueError, DiskFullError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank == 0:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
