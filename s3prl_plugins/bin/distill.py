"""Distil a student from a frozen teacher (STaR, DistilHuBERT-style, attention KD) from a YAML config;
resumes automatically from the last checkpoint in ``trainer.exp_dir``.

Usage::

    python -m s3prl_plugins.bin.distill --config conf/star.yaml [--set trainer.max_steps=200 teacher.source=wavlm_base ...] [--restart]
    torchrun --standalone --nproc_per_node 2 -m s3prl_plugins.bin.distill --config conf/star.yaml   # DDP
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from s3prl_plugins.bin.pretrain import RESTART_HELP, leave_process_group
from s3prl_plugins.config import apply_overrides, load_config
from s3prl_plugins.data.config_paths import check_input_paths
from s3prl_plugins.models.checkpoint import CheckpointError, DiskFullError
from s3prl_plugins.models.loading import OfflineError
from s3prl_plugins.train.distill import run_distill
from s3prl_plugins.train.trainer import TrainingError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--set", nargs="*", default=[], help="overrides, e.g. trainer.max_steps=100 objectives.avg_attn=1")
    p.add_argument("--restart", action="store_true", help=RESTART_HELP)
    args = p.parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = apply_overrides(load_config(args.config), args.set)
        config = check_input_paths(config, args.config, "python -m s3prl_plugins.bin.distill")
        result = run_distill(config, restart=args.restart)
        leave_process_group()
    except (TrainingError, ValueError, CheckpointError, DiskFullError, OfflineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank == 0:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
