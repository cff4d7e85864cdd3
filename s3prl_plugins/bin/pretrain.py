"""Masked-prediction pre-training (HuBERT / MelHuBERT) from a YAML config; resumes automatically.

Usage::

    python -m s3prl_plugins.bin.pretrain --config conf/melhubert_tiny.yaml [--set trainer.max_steps=200 ...] [--restart]
    torchrun --nproc_per_node 2 -m s3prl_plugins.bin.pretrain --config ...      # DDP (gloo on CPU, NCCL on GPU)
"""

from __future__ import annotations

import sys

from s3prl_plugins.bin.common import training_main
from s3prl_plugins.train.pretrain import run_pretrain


def main(argv=None) -> int:
    return training_main(
        __doc__, "python -m s3prl_plugins.bin.pretrain", run_pretrain, "trainer.max_steps=100 trainer.lr=1e-4", argv
    )


if __name__ == "__main__":
    sys.exit(main())
