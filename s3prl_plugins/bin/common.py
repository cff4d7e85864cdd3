"""What the training CLIs share: ``--config / --set / --restart``, logging per rank, the checked config,
errors as one line (exit 2) and the torchrun process group left cleanly."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

from s3prl_plugins.config import apply_overrides, load_config
from s3prl_plugins.data.config_paths import check_input_paths
from s3prl_plugins.models.checkpoint import CheckpointError, DiskFullError
from s3prl_plugins.models.loading import OfflineError
from s3prl_plugins.train.lock import ExperimentLocked
from s3prl_plugins.train.trainer import TrainingError

RESTART_HELP = (
    "start over although trainer.exp_dir holds an earlier run (its checkpoints, TensorBoard logs and model are "
    "moved aside to before-restart-<time>/, not deleted); without it a run resumes from the newest readable "
    "checkpoint, or refuses when none can be read"
)
# what a training CLI reports as one line (exit 2) instead of a traceback
USER_ERRORS = (TrainingError, ValueError, CheckpointError, DiskFullError, OfflineError, ExperimentLocked)


_TERMINATED = []  # set by the SIGTERM handler: the exit status a KeyboardInterrupt maps to is then 143


@contextlib.contextmanager
def sigterm_raises(as_interrupt: bool = False) -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, a job scheduler's cancel, the recipe stopping its jobs) ends the
    process through an exception, so that ``finally`` blocks run and remove what it was writing --
    ``SystemExit(143)``, or with ``as_interrupt`` a ``KeyboardInterrupt`` (a training then says where its last
    checkpoint is, as on Ctrl-C); the default action would end it at once. The previous handler comes back after."""

    def _raise(signum, frame):
        _TERMINATED.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a repeated SIGTERM must not cut the clean-up short
        if as_interrupt:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    before = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def interrupt_status() -> int:
    """The exit status after a KeyboardInterrupt: 143 when SIGTERM raised it (:func:`sigterm_raises`), else 130."""
    return 128 + signal.SIGTERM if _TERMINATED else 130


def leave_process_group(interrupted: bool = False) -> None:
    """Destroy a torchrun process group before exit: a gloo group left alive can abort the process at
    interpreter shutdown ("terminate called without an active exception", seen once in CI-like runs).
    ``interrupted``: only a gloo group (tearing down NCCL while other ranks may be mid-collective can hang)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if interrupted and dist.get_backend() != "gloo":
            return
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
        with sigterm_raises(as_interrupt=True):
            config = apply_overrides(load_config(args.config), args.set)
            config = check_input_paths(config, args.config, command)
            result = run(config, restart=args.restart)
            leave_process_group()
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: one line (TrainingInterrupted: where the last checkpoint is)
        leave_process_group(interrupted=True)
        if rank == 0:
            print(f"{command}: {e or 'interrupted'}", file=sys.stderr)
        return interrupt_status()
    if rank == 0:
        print(json.dumps(result))
    return 0
