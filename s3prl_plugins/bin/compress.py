"""Compress a model with any chain of Lin et al. (2024)'s methods -- weight, head and FFN pruning, KD,
first-k layers, diagonal-head replacement -- each step recovering with the model's own objective and
each iteration measured (loss, params, MACs per second, RTF, probes) into ``exp_dir/trajectory.csv``.
Resumes where it stopped. The config format: :mod:`s3prl_plugins.compress.pipeline`.

Usage::

    python -m s3prl_plugins.bin.compress --config conf/compress/common.yaml conf/compress/heads.yaml \
        [--set exp_dir=exp/x steps.0.iterations=2 ...]

Several ``--config`` files are merged in order (mappings key by key, a later value wins): the shared
model, objective, data and measurements in one, each chain's ``steps`` in another.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from s3prl_plugins.bin.common import USER_ERRORS, interrupt_status, sigterm_raises
from s3prl_plugins.compress.pipeline import run_compress
from s3prl_plugins.compress.structured import PruningError
from s3prl_plugins.config import apply_overrides, load_config, merge
from s3prl_plugins.data.config_paths import check_input_paths
from s3prl_plugins.eval.probe.chain_measures import ProfileAndProbes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", nargs="+", required=True, help="YAML files, merged in order")
    p.add_argument("--set", nargs="*", default=[], help="overrides, e.g. exp_dir=exp/compress/heads trainer.lr=1e-4")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config: dict = {}
    try:
        with sigterm_raises(as_interrupt=True):
            for path in args.config:
                config = merge(config, load_config(path))
            config = apply_overrides(config, args.set)
            config = check_input_paths(config, args.config[0], "python -m s3prl_plugins.bin.compress")
            rows = run_compress(config, ProfileAndProbes(config.get("measure")))
    except (PruningError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM: one line; a rerun goes on from the finished iterations
        print(
            f"python -m s3prl_plugins.bin.compress: {e or 'interrupted'} (a rerun keeps the finished iterations)",
            file=sys.stderr,
        )
        return interrupt_status()
    keys = ("name", "params", "macs_per_second", "weight_density", "loss", "per")
    for r in rows:
        print(json.dumps({k: r.get(k) for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
