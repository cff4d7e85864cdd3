"""What the training CLIs share: ``--config / --set / --restart``, logging per rank, the checked config,
errors as one line (exit 2) and the torchrun process group left cleanly."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Callable, Dict, Optional, Sequence

from s3prl_plugins.config import apply_overrides, load_config
from s3prl_plugins.data.config_paths import check_input_paths
from s3prl_plugins.models.checkpoint import CheckpointError, DiskFullError
from s3prl_plugins.models.loading import OfflineError
from s3prl_plugins.train.trainer import TrainingError

RESTART_HELP = (
    "start over although trainer.exp_dir holds checkpoints (they are moved aside to checkpoints.before-restart-*, "
    "not deleted); without it a run resumes from the newest readable checkpoint, or refuses when none can be read"
)
# what a training CLI reports as one line (exit 2) instead of a traceback
USER_ERRORS = (TrainingError, ValueError, CheckpointError, DiskFullError, OfflineError)


def leave_process_group() -> None:
    """Destroy a torchrun process group before exit: a gloo group left alive can abort the process at
    interpreter shutdown ("terminate called without an active exception", seen once in CI-like runs)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def training_main(
    doc: str, command: str, run: Callable[..., Dict[str, Any]], set_example: str, argv: Optional[Sequence[str]] = None
) -> int:
    """``python -m <command> --config FILE [--set k=v ...] [--restart]``: ``run(config, restart=...)``, its
    result printed as JSON by rank 0."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--set", nargs="*", default=[], help=f"overrides, e.g. {set_example}")
    p.add_argument("--restart", action="store_true", help=RESTART_HELP)
    args = p.parse_args(argv)
    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = apply_overrides(load_config(args.config), args.set)
        config = check_input_paths(config, args.config, command)
        result = run(config, restart=args.restart)
        leave_process_group()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rank == 0:
        print(json.dumps(result))
    return 0
