"""The relative paths of a training config, whatever directory the command runs from.

A recipe's configs name their inputs relative to the recipe's folder (``egs/mini/conf/hubert_tiny.yaml``
says ``data/train``, meaning ``egs/mini/data/train``), because the recipe runs there. README's
``python -m s3prl_plugins.bin.pretrain --config egs/mini/conf/hubert_tiny.yaml`` from the repository root
then met a raw ``FileNotFoundError``. :func:`check_input_paths` finds the folder the config's paths are
relative to -- the current directory when every input is there, else the config file's folder or the
nearest folder above it that holds every input -- and rewrites the config's relative paths, inputs and
outputs alike (``trainer.exp_dir`` goes with its data, where the recipe's later stages look for it), saying
so in the log. When no such folder exists, it refuses with the missing inputs and where it looked, before
anything is written.

Which values are paths: the strings under the keys of :data:`PATH_KEYS`, those under
:data:`MAYBE_PATH_KEYS` that look like one (they hold a ``/`` or end in a file extension of ours;
``hubert_base`` is a hub name, ``https://...`` a URL), and the strings under :data:`OUTPUT_KEYS`, at any depth
(``data.train``, ``teacher.source``, ``measure.probe.test``, ``trainer.exp_dir``, a compression chain's ``model``).
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

from s3prl_plugins.config import ConfigError

logger = logging.getLogger(__name__)

#: keys whose string values are always files or folders that must exist before the run
PATH_KEYS = frozenset(
    {
        "train",
        "valid",
        "test",
        "train_labels",
        "valid_labels",
        "test_labels",
        "train_segmentation",
        "valid_segmentation",
        "test_segmentation",
        "model_config",
    }
)
#: keys whose string values are a path when they look like one (else a hub name, a preset, a URL)
MAYBE_PATH_KEYS = frozenset({"source", "model", "teacher", "ckpt"})
INPUT_KEYS = PATH_KEYS | MAYBE_PATH_KEYS
#: keys whose string values name what the run writes (rebased with the inputs)
OUTPUT_KEYS = frozenset({"exp_dir", "base_dir"})
_EXTENSIONS = (".pt", ".ckpt", ".pth", ".yaml", ".yml", ".km", ".seg", ".txt", ".json", ".scp")

Location = Tuple[Tuple[Any, ...], str]  # (the key path in the config, the value)


def _looks_like_path(value: str) -> bool:
    if "://" in value:
        return False
    return "/" in value or value.endswith(_EXTENSIONS)


def _walk(node: Any, prefix: Tuple[Any, ...] = ()) -> List[Tuple[Tuple[Any, ...], Any]]:
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _walk(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _walk(v, prefix + (i,))
    else:
        out.append((prefix, node))
    return out


def _key_of(path: Tuple[Any, ...]) -> Optional[str]:
    """The name a value sits under (a list's items take their list's key: ``data.train: [a, b]``)."""
    for k in reversed(path):
        if isinstance(k, str):
            return k
    return None


def _dotted(path: Tuple[Any, ...]) -> str:
    return ".".join(str(k) for k in path)


def relative_paths(config: Dict[str, Any]) -> Tuple[List[Location], List[Location]]:
    """``(inputs, outputs)``: the relative paths of a config, each with where it sits."""
    inputs, outputs = [], []
    for where, value in _walk(config):
        if not isinstance(value, str) or not value or os.path.isabs(value):
            continue
        key = _key_of(where)
        if key in OUTPUT_KEYS:
            outputs.append((where, value))
        elif key in PATH_KEYS or (key in MAYBE_PATH_KEYS and _looks_like_path(value)):
            inputs.append((where, value))
    return inputs, outputs


def _set(config: Dict[str, Any], where: Tuple[Any, ...], value: str) -> None:
    node = config
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value


def _candidates(config_file: str) -> List[str]:
    """The current directory, then the config file's folder and every folder above it."""
    out = [os.getcwd()]
    d = os.path.dirname(os.path.abspath(config_file))
    while True:
        if d not in out:
            out.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            return out
        d = parent


def check_input_paths(config: Dict[str, Any], config_file: str, command: str) -> Dict[str, Any]:
    """``config`` with its relative paths resolved where they exist (see the module docstring).

    Args:
        config: the config after ``--set`` overrides.
        config_file: the (first) config file, whose folders are searched.
        command: the command line to suggest in the error (``python -m s3prl_plugins.bin.pretrain``).

    Returns:
        ``config`` itself when every input exists relative to the current directory; otherwise a copy whose
        relative paths (inputs and outputs) are joined to the folder that holds every input.

    Raises:
        ConfigError: an absolute input that does not exist, or relative inputs that no folder holds all of --
            naming each missing input, where it was looked for, and where to run.
    """
    inputs, outputs = relative_paths(config)
    for where, value in _walk(config):
        if (
            isinstance(value, str)
            and os.path.isabs(value)
            and _key_of(where) in INPUT_KEYS
            and not os.path.exists(value)
        ):
            raise ConfigError(f"{config_file}: {_dotted(where)} = {value}: no such file or folder")
    if not inputs:
        return config
    candidates = _candidates(config_file)
    for base in candidates:
        if all(os.path.exists(os.path.join(base, v)) for _, v in inputs):
            break
    else:
        best = max(candidates, key=lambda b: sum(os.path.exists(os.path.join(b, v)) for _, v in inputs))
        missing = [f"{_dotted(w)} = {v}" for w, v in inputs if not os.path.exists(os.path.join(best, v))]
        rel = os.path.relpath(best)
        fixes = [
            "prepare them first (the recipe's earlier stages write them)",
            "give absolute paths with --set",
        ]
        if best != os.getcwd():
            config_there = os.path.relpath(os.path.abspath(config_file), best)
            fixes.insert(0, f"run it from {rel} (cd {rel} && {command} --config {config_there})")
        raise ConfigError(
            f"{config_file}: its inputs are relative to the folder its recipe runs in, and no folder holds them all "
            f"(looked in the current directory, the config's folder and each folder above it); missing under "
            f"{best}: {'; '.join(missing)}. To fix: {', or '.join(fixes)}."
        )
    if base == os.getcwd():
        return config
    resolved = copy.deepcopy(config)
    for where, value in inputs + outputs:
        _set(resolved, where, os.path.join(base, value))
    logger.info(
        "%s: its relative paths are relative to %s (not the current directory): %s",
        config_file,
        base,
        ", ".join(f"{_dotted(w)} -> {os.path.join(base, v)}" for w, v in inputs + outputs),
    )
    return resolved
