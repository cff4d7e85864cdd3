"""Distil a student from a frozen teacher (STaR, DistilHuBERT-style, attention KD) from a YAML config;
resumes automatically from the last checkpoint in ``trainer.exp_dir``.

Usage::

    python -m s3prl_plugins.bin.distill --config conf/star.yaml \\
        [--set trainer.max_steps=200 teacher.source=wavlm_base ...] [--restart]
    torchrun --standalone --nproc_per_node 2 -m s3prl_plugins.bin.distill --config conf/star.yaml   # DDP
"""

from __future__ import annotations

import sys

from s3prl_plugins.bin.common import training_main
from s3prl_plugins.train.distill import run_distill


def main(argv=None) -> int:
    return training_main(
        __doc__, "python -m s3prl_plugins.bin.distill", run_distill, "trainer.max_steps=100 objectives.avg_attn=1", argv
    )


if __name__ == "__main__":
    sys.exit(main())
