"""s3prl's own SUPERB runner (``s3prl/run_downstream.py``), made to run here -- no copy of its code.

:func:`run` calls the stock ``main()`` of ``s3prl.run_downstream`` (the installed package, or a git
checkout's with ``s3prl_root``) after :func:`apply_compat` has made the smallest fixes s3prl 0.4.18 needs
on torch 2.8 and a CPU host, each one tested (``tests/eval/superb/test_superb_runner.py``):

- **resume / evaluate** (``-e``): torch >= 2.6 loads with ``weights_only=True`` by default and refuses
  the ``argparse.Namespace`` the runner pickles into its own checkpoints ("Weights only load failed");
  :func:`apply_compat` allow-lists exactly that class (``torch.serialization.add_safe_globals``).
- **device**: ``--device`` defaults to ``cuda`` and ``-e`` never takes it from the checkpoint, so a
  CPU host fails with "Found no NVIDIA driver": without CUDA, :func:`runner_argv` adds ``--device cpu``
  unless the user gave one.
- **SID file-list cache**: ``voxceleb1/dataset.py`` caches its file lists as ``.cache/{split}.pkl``
  inside the installed package, keyed by the split name alone, so a second corpus (or another split
  file) silently reuses the first one's lists. The cache moves to ``<expdir>/.superb_cache/<key>``
  where the key hashes the audio root and the split file's content. The stock code writes the pickle
  in place and loads it unchecked, so a run killed mid-write blocked every later one: the lists are
  written atomically (:func:`use_voxceleb_cache`) and an unreadable one is removed, to be rebuilt.
- **KS's catalyst**: ``speech_commands/expert.py`` imports ``catalyst.data.sampler.
  DistributedSamplerWrapper`` (used only under DDP); no catalyst release pip installs here imports on
  Python 3.11 (21.5 uses ``collections.MutableMapping``). When the real one does not import, a stand-in
  module provides :class:`DistributedSamplerWrapper` (tested against the semantics catalyst documents:
  each rank draws a disjoint share of one draw of the wrapped sampler). ``torchaudio.sox_effects``
  (KS's loader) needs the Debian package ``libsox3``, which ``tools/setup_env.sh`` installs.
- **PR's loaders**: ``ctc/data.py`` pops ``num_workers`` from the shared corpus config, so the dev and
  test loaders start 12 workers whatever the config says; the count is put back after each call.
- **PR needs a git checkout**: ``ctc``'s ``corpus/`` code is not in the PyPI package (a raw
  ``ModuleNotFoundError`` at the first batch); :func:`resolve_s3prl_root` takes ``--s3prl-root``, else
  ``S3PRL_ROOT``, else the root stored in the experiment, and :func:`run` refuses ``-d ctc`` up front without
  one, saying how to get it. Training stores the root (and the upstream) in ``<expdir>/``:data:`RUN_FILE`,
  so ``-m evaluate -e <expdir>/...`` runs with the same s3prl.
- **the upstream path**: s3prl stores ``-k`` (and ``-g``) as given, so ``-m evaluate`` from another directory
  could not find a relative one; :func:`run` makes an existing ``-k`` / ``-g`` path absolute before training.
- **a checkpoint of another upstream**: ``-e`` restores ``-u/-k`` from the checkpoint; an explicit
  ``-u``/``-k`` that disagrees is refused by name instead of silently ignored, and a featurizer whose
  layer count does not fit the upstream gets an error naming both.

Metrics: the stock experts print ``<split> wer: X`` (asr), ``<split> acc: X`` (speech_commands,
voxceleb1), ``<split> per: X`` (ctc; fractions except asr's WER); :func:`run` keeps what was printed and,
for ``-m evaluate``, writes ``<expdir>/superb_<split>.json`` with the metric in SUPERB's units (%).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import hashlib
import io
import json
import logging
import math
import os
import re
import sys
import tempfile
import types
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

#: downstream name -> (SUPERB metric key, the printed metric name, scale to SUPERB's units)
TASK_METRICS = {
    "asr": ("ASR", "wer", 1.0),
    "ctc": ("PR", "per", 100.0),
    "speech_commands": ("KS", "acc", 100.0),
    "voxceleb1": ("SID", "acc", 100.0),
}


#: written into each experiment by ``-m train``: the s3prl root and the upstream, read back by ``-m evaluate``
RUN_FILE = "s3prl_plugins_run.json"
#: downstreams whose code the PyPI sdist lacks (only an s3prl git checkout has it): name -> file needed
CHECKOUT_ONLY = {"ctc": os.path.join("downstream", "ctc", "corpus", "libriphone.py")}


class RunnerError(RuntimeError):
    """A problem with the runner's inputs, explained with the way out."""


# ----------------------------------------------------------------------------------------------- compat
class DistributedSamplerWrapper:
    """Stand-in for ``catalyst.data.sampler.DistributedSamplerWrapper``: wraps any sampler for DDP.

    Each epoch draws the wrapped sampler once and gives rank ``r`` of ``n`` every ``n``-th of those
    indices starting at ``r`` (padded by wrapping around so every rank has the same count), as
    ``torch.utils.data.DistributedSampler`` does for a dataset; ``set_epoch`` reseeds the draw.
    Written here because catalyst does not import on this Python (see the module docstring).
    """

    def __init__(self, sampler, num_replicas: Optional[int] = None, rank: Optional[int] = None, shuffle: bool = True):
        import torch.distributed as dist

        self.sampler = sampler
        self.num_replicas = (
            num_replicas if num_replicas is not None else (dist.get_world_size() if dist.is_initialized() else 1)
        )
        self.rank = rank if rank is not None else (dist.get_rank() if dist.is_initialized() else 0)
        self.shuffle = shuffle
        self.epoch = 0
        self.num_samples = math.ceil(len(sampler) / self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        import torch

        g = torch.Generator()
        g.manual_seed(self.epoch)  # every rank must draw the same indices: the draw is seeded by the epoch
        if hasattr(self.sampler, "generator"):
            saved, self.sampler.generator = self.sampler.generator, g
            try:
                drawn = list(iter(self.sampler))
            finally:
                self.sampler.generator = saved
        else:
            drawn = list(iter(self.sampler))
        total = self.num_samples * self.num_replicas
        drawn += drawn[: total - len(drawn)]
        return iter(drawn[self.rank : total : self.num_replicas])


def _install_catalyst_standin() -> bool:
    """Make ``from catalyst.data.sampler import DistributedSamplerWrapper`` work; True if the stand-in was used."""
    try:
        from catalyst.data.sampler import DistributedSamplerWrapper as _  # noqa: F401

        return False
    except Exception:  # noqa: BLE001 - any failure of the real package (ImportError, AttributeError...)
        for name in [m for m in sys.modules if m == "catalyst" or m.startswith("catalyst.")]:
            del sys.modules[name]
    pkg = types.ModuleType("catalyst")
    pkg.__path__ = []  # a package, so submodule imports resolve through sys.modules
    pkg.__doc__ = "s3prl_plugins stand-in: only data.sampler.DistributedSamplerWrapper"
    data = types.ModuleType("catalyst.data")
    data.__path__ = []
    sampler = types.ModuleType("catalyst.data.sampler")
    sampler.DistributedSamplerWrapper = DistributedSamplerWrapper
    pkg.data, data.sampler = data, sampler
    sys.modules.update({"catalyst": pkg, "catalyst.data": data, "catalyst.data.sampler": sampler})
    logger.info("catalyst does not import here: using s3prl_plugins' DistributedSamplerWrapper stand-in")
    return True


def apply_compat() -> Dict[str, bool]:
    """Apply the fixes of the module docstring that act at import time; idempotent. Returns what was done."""
    import torch

    torch.serialization.add_safe_globals([argparse.Namespace])
    return {"namespace_allowed": True, "catalyst_standin": _install_catalyst_standin()}


def voxceleb_cache_dir(expdir: str, file_path: str, meta_data: str) -> str:
    """Where SID's file lists are cached: keyed by the audio root and the split file's content."""
    h = hashlib.sha1(os.path.abspath(str(file_path)).encode())
    try:
        with open(meta_data, "rb") as f:
            h.update(f.read())
    except OSError as e:
        raise RunnerError(
            f"SID split file {meta_data} cannot be read ({e}); set downstream_expert.datarc.meta_data"
        ) from e
    return os.path.join(expdir, ".superb_cache", h.hexdigest()[:16]) + os.sep


class _AtomicWrite:
    """``open(path, "wb")`` as a temporary file renamed over ``path`` when the ``with`` block succeeds."""

    def __init__(self, path: str):
        fd, self.tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
        self.path, self.file = path, os.fdopen(fd, "wb")

    def __enter__(self):
        return self.file

    def __exit__(self, kind, value, tb) -> bool:
        self.file.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)
        return False


def use_voxceleb_cache(vox: types.ModuleType, cache_dir: str) -> None:
    """Point s3prl's SID dataset module at ``cache_dir``: unreadable lists there (a killed run's) are
    removed so that they are rebuilt, and new ones are written atomically -- the module's own ``open``
    (a module global shadows the builtin) writes under ``cache_dir`` through :class:`_AtomicWrite`."""
    import builtins
    import pickle

    for path in glob.glob(os.path.join(cache_dir, "*.pkl")):
        try:
            with open(path, "rb") as f:
                pickle.load(f)  # our own experiment's cache, written by s3prl's dataset
        except Exception as e:  # noqa: BLE001 - any damage: rebuild
            logger.warning("SID file-list cache %s is unreadable (%s): removed, it is rebuilt", path, e)
            os.remove(path)
    root = os.path.abspath(cache_dir)

    def open_(file, mode="r", *args, **kwargs):
        if "w" in mode and os.path.abspath(str(file)).startswith(root + os.sep):
            os.makedirs(os.path.dirname(os.path.abspath(str(file))), exist_ok=True)
            return _AtomicWrite(str(file))
        return builtins.open(file, mode, *args, **kwargs)

    vox.CACHE_PATH = cache_dir
    vox.open = open_


def _keep_ctc_num_workers() -> None:
    """``ctc/data.py``'s ``load_dataset`` pops ``num_workers`` from the shared corpus config, so only the first
    loader gets the configured count and the dev/test loaders start 12 workers: put it back after each call."""
    from s3prl.downstream.ctc import data, expert

    stock = data.load_dataset
    if getattr(stock, "_s3prl_plugins", False):
        return

    def load_dataset(split, tokenizer, corpus):
        had = "num_workers" in corpus
        workers = corpus.get("num_workers")
        try:
            return stock(split, tokenizer, corpus)
        finally:
            if had:
                corpus["num_workers"] = workers

    load_dataset._s3prl_plugins = True
    data.load_dataset = expert.load_dataset = load_dataset


# ---------------------------------------------------------------------------------------------- argv
def _given(argv: Sequence[str], *flags: str) -> Optional[str]:
    """Value of the last of ``flags`` in ``argv`` (``-k X`` or ``--upstream_ckpt=X``), else None."""
    value = None
    for i, a in enumerate(argv):
        for f in flags:
            if a == f and i + 1 < len(argv):
                value = argv[i + 1]
            elif f.startswith("--") and a.startswith(f + "="):
                value = a.split("=", 1)[1]
    return value


def runner_argv(argv: Sequence[str]) -> List[str]:
    """s3prl's arguments with the device default fixed (``--device cpu`` without CUDA, unless given)."""
    import torch

    argv = list(argv)
    if _given(argv, "--device") is None and not torch.cuda.is_available():
        argv += ["--device", "cpu"]
    return argv


# ----------------------------------------------------------------------------------------------- run
class _Tee(io.TextIOBase):
    def __init__(self, stream):
        self.stream, self.buffer_ = stream, io.StringIO()

    def write(self, s):
        self.buffer_.write(s)
        return self.stream.write(s)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return getattr(self.stream, "isatty", lambda: False)()


def parse_metrics(text: str) -> Dict[str, Dict[str, float]]:
    """``{split: {metric: value}}`` from the stock experts' printed ``<split> <metric>: <value>`` lines."""
    out: Dict[str, Dict[str, float]] = {}
    for split, name, value in re.findall(r"^(\S+) (wer|uer|per|acc|loss): ([-+0-9.eE]+|nan|inf)\s*$", text, re.M):
        out.setdefault(split, {})[name] = float(value)
    return out


def superb_metric(downstream: str, printed: Dict[str, float]) -> Dict[str, float]:
    """The SUPERB metric (key -> value in SUPERB's units) of one split's printed metrics."""
    if downstream not in TASK_METRICS:
        return {}
    key, name, scale = TASK_METRICS[downstream]
    if name not in printed:
        raise RunnerError(f"the {downstream} expert printed no '{name}' (printed: {sorted(printed)})")
    return {key: printed[name] * scale}


def _check_resume(argv: Sequence[str], past: dict, ckpt_path: str) -> None:
    old = past.get("Args")
    for flags, field in (
        (("-u", "--upstream"), "upstream"),
        (("-k", "--upstream_ckpt"), "upstream_ckpt"),
        (("-d", "--downstream"), "downstream"),
    ):
        given = _given(argv, *flags)
        had = getattr(old, field, None)
        same = (
            given is None
            or given == had
            or (field == "upstream_ckpt" and had and os.path.abspath(given) == os.path.abspath(had))
        )
        if not same:
            raise RunnerError(
                f"{ckpt_path} was trained with {flags[0]} {had}, not {given}: -e restores the experiment's upstream "
                f"and downstream from the checkpoint. Drop {flags[0]}, or train a new experiment for {given}."
            )


@contextlib.contextmanager
def _hooks(argv: Sequence[str], rd_module, runner_cls):
    """Wrap the stock argument parsing (SID cache, resume checks) and the Runner's weight loading."""
    stock_args = rd_module.get_downstream_args
    stock_load = runner_cls._load_weight

    def get_downstream_args():
        args, config, backup = stock_args()
        if args.past_exp:
            import torch

            past = torch.load(args.init_ckpt, map_location="cpu", weights_only=True)  # Namespace allow-listed above
            _check_resume(argv, past, args.init_ckpt)
            ckpt = args.upstream_ckpt
            if (
                ckpt
                and not os.path.isabs(ckpt)
                and not os.path.exists(ckpt)
                and _given(argv, "-k", "--upstream_ckpt") is None
            ):
                raise RunnerError(
                    f"{args.init_ckpt} was trained with the relative -k {ckpt} (stored as given by "
                    f"older versions), which is not at {os.path.abspath(ckpt)}: run -m evaluate from the "
                    "folder training ran in"
                )
        datarc_ = config.get("downstream_expert", {}).get("datarc", {})
        if args.mode == "evaluate" and args.downstream == "asr" and args.evaluate_split not in datarc_:
            splits = [k for k, v in datarc_.items() if isinstance(v, list) and k != "train"]
            raise RunnerError(
                f"-t {args.evaluate_split}: the asr config has no such split; its evaluation splits are "
                f"{', '.join(splits)} (e.g. -t test-clean)"
            )
        if args.downstream == "ctc":
            _keep_ctc_num_workers()
        if args.downstream == "voxceleb1":
            datarc = config.get("downstream_expert", {}).get("datarc", {})
            from s3prl.downstream.voxceleb1 import dataset as vox

            use_voxceleb_cache(
                vox, voxceleb_cache_dir(args.expdir, datarc.get("file_path", ""), datarc.get("meta_data", ""))
            )
        return args, config, backup

    def load_weight(self, model, name):
        try:
            return stock_load(self, model, name)
        except RuntimeError as e:
            if "size mismatch" not in str(e) and "Missing key" not in str(e):
                raise
            raise RunnerError(
                f"{self.args.init_ckpt}: its {name} does not fit upstream {self.args.upstream} "
                f"({self.args.upstream_ckpt}) -- was the checkpoint trained on another upstream, or was "
                f"{self.args.upstream_ckpt} replaced by another model? ({str(e).splitlines()[0]})"
            ) from e

    rd_module.get_downstream_args = get_downstream_args
    runner_cls._load_weight = load_weight
    try:
        yield
    finally:
        rd_module.get_downstream_args = stock_args
        runner_cls._load_weight = stock_load


def import_s3prl(s3prl_root: Optional[str] = None):
    """Import s3prl (a git checkout's with ``s3prl_root``, the directory holding its ``s3prl/`` package)."""
    if s3prl_root:
        root = os.path.abspath(s3prl_root)
        if os.path.isdir(os.path.join(root, "s3prl", "s3prl")):
            root = os.path.join(root, "s3prl")  # given the checkout itself, not its package's parent
        if not os.path.isfile(os.path.join(root, "s3prl", "run_downstream.py")):
            raise RunnerError(
                f"--s3prl-root {s3prl_root}: no s3prl/run_downstream.py under it; give the s3prl git checkout"
            )
        loaded = sys.modules.get("s3prl")
        if loaded is not None and not os.path.abspath(loaded.__file__).startswith(root + os.sep):
            raise RunnerError(
                f"s3prl was already imported from {os.path.dirname(loaded.__file__)} in this process; "
                "run `python -m s3prl_plugins.bin.run_downstream --s3prl-root ...` in a fresh process"
            )
        sys.path.insert(0, root)
    import s3prl

    return s3prl


def _package_dir(s3prl_root: Optional[str]) -> Optional[str]:
    """The ``s3prl`` package folder that :func:`import_s3prl` would import (without importing it)."""
    if s3prl_root:
        root = os.path.abspath(s3prl_root)
        if os.path.isdir(os.path.join(root, "s3prl", "s3prl")):
            root = os.path.join(root, "s3prl")
        return os.path.join(root, "s3prl")
    import importlib.util

    spec = importlib.util.find_spec("s3prl")
    return os.path.dirname(spec.origin) if spec and spec.origin else None


def _never_evaluated(expdir: str) -> str:
    """Why a training run wrote no ``*-best.ckpt`` when its config says: ``runner.eval_step`` above
    ``runner.total_steps`` (s3prl's ``-o config.runner.total_steps=N`` leaves eval_step at the task's 5,000+) --
    read from the newest ``config_*.yaml`` s3prl wrote into the experiment; "" when it evaluated or is unknown."""
    configs = sorted(glob.glob(os.path.join(expdir, "config_*.yaml")), key=os.path.getmtime)
    if not configs:
        return ""
    import yaml

    try:
        with open(configs[-1], encoding="utf-8") as f:
            runner = (yaml.safe_load(f) or {}).get("runner") or {}
        total, every = int(runner["total_steps"]), int(runner["eval_step"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError):
        return ""
    if every <= total:
        return ""
    return (
        f" This run never evaluated on dev: its runner.eval_step ({every}) is above its total_steps ({total}) "
        f"({os.path.basename(configs[-1])}). Evaluate its states-{total}.ckpt, or prepare the task with "
        f"superb_prepare --steps {total}, which lowers eval_step and save_step with it."
    )


def _expdir_of_past(past: str) -> str:
    return past if os.path.isdir(past) else os.path.dirname(os.path.abspath(past))


def read_run_file(expdir: str) -> dict:
    """What ``-m train`` stored in ``<expdir>/``:data:`RUN_FILE` (``{}`` for experiments of older versions)."""
    path = os.path.join(expdir, RUN_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RunnerError(f"{path} cannot be read ({e}); delete it and give --s3prl-root again") from e


def resolve_s3prl_root(given: Optional[str], past: Optional[str]) -> Tuple[Optional[str], str]:
    """The s3prl checkout to run and where it came from: ``--s3prl-root``, ``S3PRL_ROOT``, or the experiment's
    :data:`RUN_FILE` (for ``-e``); ``(None, "")`` for the installed package."""
    if given:
        return given, "--s3prl-root"
    if os.environ.get("S3PRL_ROOT"):
        return os.environ["S3PRL_ROOT"], "S3PRL_ROOT"
    if past is not None:
        stored = read_run_file(_expdir_of_past(past)).get("s3prl_root")
        if stored:
            if not os.path.isdir(stored):
                raise RunnerError(
                    f"{os.path.join(_expdir_of_past(past), RUN_FILE)}: the experiment was trained with "
                    f"--s3prl-root {stored}, which is gone; give --s3prl-root with the checkout's new place"
                )
            return stored, os.path.join(_expdir_of_past(past), RUN_FILE)
    return None, ""


@functools.lru_cache(maxsize=2)
def _past_checkpoint(past: str) -> Optional[dict]:
    """The runner checkpoint ``-e`` names (the newest ``states-*.ckpt`` of a folder), or None when unreadable
    (read once per process: the split check and the downstream look-up share it; treat it as read-only)."""
    ckpt = past
    if os.path.isdir(past):
        found = sorted(
            glob.glob(os.path.join(past, "states-*.ckpt")),
            key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0),
        )
        if not found:
            return None
        ckpt = found[-1]
    import torch

    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - s3prl loads it next and reports what is wrong with it
        return None


def check_split(argv: Sequence[str], past: str) -> None:
    """``-m evaluate`` of ASR on a split its config does not have (s3prl's default ``-t test``; ASR's is
    ``test-clean``): refused before s3prl and the upstream load."""
    if (_given(argv, "-m", "--mode") or "") != "evaluate":
        return
    ckpt = _past_checkpoint(past)
    if not ckpt or getattr(ckpt.get("Args"), "downstream", None) != "asr":
        return
    split = _given(argv, "-t", "--evaluate_split") or "test"
    datarc = ((ckpt.get("Config") or {}).get("downstream_expert") or {}).get("datarc") or {}
    if datarc and split not in datarc:
        splits = [k for k, v in datarc.items() if isinstance(v, list) and k != "train"]
        raise RunnerError(
            f"-t {split}: the asr config has no such split; its evaluation splits are "
            f"{', '.join(splits)} (e.g. -t test-clean)"
        )


def _downstream_of(argv: Sequence[str], past: Optional[str]) -> Optional[str]:
    """``-d``, or for ``-e`` the experiment's downstream (its run file, else the checkpoint's saved arguments)."""
    given = _given(argv, "-d", "--downstream")
    if given or past is None:
        return given
    stored = read_run_file(_expdir_of_past(past)).get("downstream")
    if stored:
        return stored
    return getattr((_past_checkpoint(past) or {}).get("Args"), "downstream", None)


def check_checkout(downstream: Optional[str], s3prl_root: Optional[str], source: str) -> None:
    """Refuse a downstream whose code only an s3prl git checkout has (PR's ``ctc``), before anything loads."""
    need = CHECKOUT_ONLY.get(downstream or "")
    if need is None:
        return
    pkg = _package_dir(s3prl_root)
    if pkg and os.path.isfile(os.path.join(pkg, need)):
        return
    fix = (
        "`git clone https://github.com/s3prl/s3prl ~/s3prl`, then give `--s3prl-root ~/s3prl` (or set "
        "S3PRL_ROOT=~/s3prl); -m evaluate finds it in the experiment"
    )
    if s3prl_root:
        raise RunnerError(
            f"-d {downstream} (SUPERB PR) needs s3prl/{need}, which {s3prl_root} (from {source}) "
            f"does not have: give the root of an s3prl git checkout -- {fix}"
        )
    raise RunnerError(
        f"-d {downstream} (SUPERB PR) needs s3prl's {need}, which the installed s3prl package "
        f"({pkg}) lacks -- only a git checkout has it: {fix}"
    )


def absolute_upstream_ckpt(argv: Sequence[str]) -> List[str]:
    """``-k``/``--upstream_ckpt`` (and ``-g``/``--upstream_model_config``) made absolute when they name an
    existing path, so that the experiment's checkpoints (which store them as given) are evaluated from any
    directory."""
    out = list(argv)
    for short, long in (("-k", "--upstream_ckpt"), ("-g", "--upstream_model_config")):
        for i, a in enumerate(out):
            if a in (short, long) and i + 1 < len(out) and os.path.exists(out[i + 1]):
                out[i + 1] = os.path.abspath(out[i + 1])
            elif a.startswith(long + "=") and os.path.exists(a.split("=", 1)[1]):
                out[i] = long + "=" + os.path.abspath(a.split("=", 1)[1])
    return out


def _write_run_file(args, s3prl_root: Optional[str]) -> None:
    path = os.path.join(args.expdir, RUN_FILE)
    os.makedirs(args.expdir, exist_ok=True)
    info = {
        "s3prl_root": os.path.abspath(s3prl_root) if s3prl_root else None,
        "downstream": args.downstream,
        "upstream": args.upstream,
        "upstream_ckpt": args.upstream_ckpt,
    }
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    os.replace(path + ".tmp", path)


def run(argv: Sequence[str], s3prl_root: Optional[str] = None) -> Dict[str, Dict[str, float]]:
    """Run s3prl's ``run_downstream.main()`` with ``argv`` (its own arguments); return the printed metrics.

    With ``-m evaluate``, also writes ``<expdir>/superb_<split>.json``:
    ``{"downstream", "split", "upstream", "upstream_ckpt", "printed": {...}, "superb": {KEY: value}}``.
    """
    past = _given(argv, "-e", "--past_exp")
    if past is not None:
        if not (os.path.isfile(past) or glob.glob(os.path.join(past, "states-*.ckpt"))):
            there = sorted(os.path.basename(p) for p in glob.glob(os.path.join(_expdir_of_past(past), "*.ckpt")))
            best = (
                " A *-best.ckpt is written only when the dev metric improves (ASR's dev-clean-best.ckpt: only once "
                "a dev WER below 100 is reached)."
                if past.endswith("-best.ckpt")
                else ""
            )
            has = f" The folder has {', '.join(there)}." if there else ""
            if past.endswith("-best.ckpt"):
                best += _never_evaluated(_expdir_of_past(past))
            raise RunnerError(
                f"-e {past}: no such checkpoint (give a states-*.ckpt / dev-best.ckpt file, or the "
                f"experiment folder holding states-*.ckpt).{best}{has}"
            )
        check_split(argv, past)
    s3prl_root, root_source = resolve_s3prl_root(s3prl_root, past)
    check_checkout(_downstream_of(argv, past), s3prl_root, root_source)
    if past is None:
        argv = absolute_upstream_ckpt(argv)
    s3prl = import_s3prl(s3prl_root)
    if root_source and root_source != "--s3prl-root":
        logger.info("s3prl root %s (from %s)", s3prl_root, root_source)
    done = apply_compat()
    import s3prl.run_downstream as rd  # noqa: PLC0415 - after the path and the compat fixes
    from s3prl.downstream.runner import Runner

    from s3prl_plugins.upstream.hub import register

    register()
    argv = runner_argv(argv)
    logger.info(
        "s3prl %s from %s%s",
        getattr(s3prl, "__version__", "?"),
        os.path.dirname(s3prl.__file__),
        " (catalyst stand-in)" if done["catalyst_standin"] else "",
    )
    captured: Dict[str, object] = {}
    stock_init = Runner.__init__

    def init(self, args, config):
        captured["args"] = args
        if args.mode == "train":
            _write_run_file(args, s3prl_root)
        stock_init(self, args, config)

    old_argv, tee = sys.argv, _Tee(sys.stdout)
    sys.argv = [rd.__file__] + list(argv)
    Runner.__init__ = init
    try:
        with _hooks(argv, rd, Runner), contextlib.redirect_stdout(tee):
            rd.main()
    finally:
        sys.argv, Runner.__init__ = old_argv, stock_init
    metrics = parse_metrics(tee.buffer_.getvalue())
    args = captured.get("args")
    if args is not None and args.mode == "evaluate":
        split = args.evaluate_split
        if split not in metrics:
            raise RunnerError(f"-m evaluate -t {split}: the {args.downstream} expert printed no metric for {split}")
        result = {
            "downstream": args.downstream,
            "split": split,
            "upstream": args.upstream,
            "upstream_ckpt": args.upstream_ckpt,
            "printed": metrics[split],
            "superb": superb_metric(args.downstream, metrics[split]),
        }
        path = os.path.join(args.expdir, f"superb_{split}.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, path)
        logger.info("wrote %s: %s", path, result["superb"])
    return metrics
