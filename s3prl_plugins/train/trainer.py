"""The one training loop every objective uses (masked prediction, distillation, pruning recovery).

A *task* is an ``nn.Module`` whose ``forward(batch)`` returns ``(loss, logs)``: the loss to minimise
and a dict of ``name -> (sum, count)`` statistics to average. The trainer owns everything else:

* optimisation: Adam/AdamW, gradient accumulation, clipping, linear-warm-up + linear/cosine decay;
* devices: CPU, CUDA with AMP (bf16, or fp16 with a grad scaler), ``torchrun`` DDP (gloo on CPU,
  NCCL on GPU);
* reliability: atomic checkpoints (model, optimiser, scheduler, scaler, RNG, data position) every
  ``save_every`` steps, exact resume after a kill, a NaN/Inf guard that skips a step, counts it, and
  stops after ``max_bad_steps`` in a row with a message;
* visibility: tqdm progress, ``logging``, TensorBoard scalars.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from s3prl_plugins.config import check_fields, config_changes, from_dict, to_plain
from s3prl_plugins.models.checkpoint import CheckpointError, atomic_save, read_checkpoint
from s3prl_plugins.train.lock import experiment_lock

logger = logging.getLogger(__name__)

Logs = Dict[str, Tuple[float, float]]
# updates in a row whose loss is exactly 0 with an all-zero gradient before training stops: such a run learns
# nothing and would export its initial weights as if trained (e.g. masked prediction that masks no frame)
IDLE_UPDATES = 20


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed NaN/Inf)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the last checkpoint is."""


@dataclass
class TrainerConfig:
    """Attributes:
    exp_dir: checkpoints, TensorBoard logs and the exported model go here.
    max_steps: optimiser updates.
    grad_accum: micro-batches per update (effective batch = batch x accum x world size).
    optimizer: ``adam`` or ``adamw``.
    lr, betas, eps, weight_decay: optimiser settings.
    schedule: ``linear`` (warm-up then linear decay to 0), ``cosine`` (warm-up then cosine to 0),
        ``constant`` (warm-up then flat).
    warmup_steps: linear warm-up length.
    clip_norm: gradient clipping (0: off).
    amp: ``auto`` (bf16 on a GPU that has it, else fp16 on GPU, nothing on CPU), ``bf16``,
        ``fp16`` or ``none``.
    log_every, valid_every, save_every: in updates.
    keep_last: periodic checkpoints kept.
    max_bad_steps: consecutive non-finite losses tolerated before stopping.
    seed: seeds the data order, crops and the torch RNG.
    num_workers: DataLoader workers decoding audio beside the update (0: in the training process;
        GPU recipes set several, bench/bench_input_pipeline.py measures why).
    pin_memory: page-locked batches for asynchronous host-to-GPU copies: ``auto`` (when training on
        CUDA), ``true`` or ``false``.
    prefetch_factor: batches each worker prepares ahead (with ``num_workers`` > 0).
    device: ``auto``, ``cpu`` or ``cuda``.
    """

    exp_dir: str = "exp/train"
    max_steps: int = field(default=1000, metadata={"min": 1})
    grad_accum: int = field(default=1, metadata={"min": 1})
    optimizer: str = field(default="adamw", metadata={"choices": ("adam", "adamw")})
    lr: float = field(default=5e-4, metadata={"min": 0})
    betas: Tuple[float, float] = (0.9, 0.98)
    eps: float = field(default=1e-6, metadata={"gt": 0})
    weight_decay: float = field(default=0.0, metadata={"min": 0})
    schedule: str = field(default="linear", metadata={"choices": ("linear", "cosine", "constant")})
    warmup_steps: int = field(default=0, metadata={"min": 0})
    clip_norm: float = field(default=10.0, metadata={"min": 0})
    amp: str = field(default="auto", metadata={"choices": ("auto", "bf16", "fp16", "none")})
    log_every: int = field(default=10, metadata={"min": 1})
    valid_every: int = field(default=200, metadata={"min": 1})
    save_every: int = field(default=200, metadata={"min": 1})
    keep_last: int = field(default=2, metadata={"min": 1})
    max_bad_steps: int = field(default=5, metadata={"min": 1})
    seed: int = field(default=0, metadata={"min": 0})
    num_workers: int = field(default=0, metadata={"min": 0})
    pin_memory: Union[bool, str] = field(default="auto", metadata={"choices": ("auto", True, False)})
    prefetch_factor: int = field(default=2, metadata={"min": 1})
    device: str = field(default="auto", metadata={"choices": ("auto", "cpu", "cuda")})

    def __post_init__(self) -> None:
        check_fields(self, "trainer")  # types, ranges and choices: ConfigError naming trainer.<key>

    @classmethod
    def from_dict(cls, section: Any, where: str = "trainer") -> "TrainerConfig":
        """The ``trainer:`` section of a config; unknown keys refused with the nearest valid name."""
        return from_dict(cls, section, where)

    # Settings a resumed run may not change (the others are applied from the resumed step): another
    # optimiser or seed would make the resumed run another run.
    FIXED_ON_RESUME = ("optimizer", "seed")


def resolved_base(old_exp_dir: Any, new_exp_dir: Any) -> Optional[str]:
    """The folder a config's relative paths were resolved against in one of two runs of one experiment
    (:mod:`s3prl_plugins.data.config_paths` joins them all to the folder that holds its inputs when the config
    is run from another directory): read from ``trainer.exp_dir``, relative in one run and absolute in the
    other; None when the two are written alike."""
    if not isinstance(old_exp_dir, str) or not isinstance(new_exp_dir, str):
        return None
    if os.path.isabs(old_exp_dir) == os.path.isabs(new_exp_dir):
        return None
    relative, absolute = (new_exp_dir, old_exp_dir) if os.path.isabs(old_exp_dir) else (old_exp_dir, new_exp_dir)
    absolute, relative = os.path.normpath(absolute), os.path.normpath(relative)
    if not absolute.endswith(os.sep + relative):
        return None
    return absolute[: -len(relative) - 1] or os.sep


def same_path(a: Any, b: Any, base: Optional[str]) -> bool:
    """Two config values that name one input: relative in one run, and in the other that path joined to ``base``
    (:func:`resolved_base`) -- not a change on resume."""
    if base is None or not isinstance(a, str) or not isinstance(b, str) or a == b:
        return False
    if os.path.isabs(a) == os.path.isabs(b):
        return False
    relative, absolute = (b, a) if os.path.isabs(a) else (a, b)
    return os.path.normpath(os.path.join(base, relative)) == os.path.normpath(absolute)


def read_training_state(path: str) -> Dict[str, Any]:
    """A training checkpoint (:func:`read_checkpoint`: weights-only, a damaged file named with the reason);
    :class:`CheckpointError` when it is not a training state of this trainer."""
    ckpt = read_checkpoint(path)
    if ckpt.get("kind") != "training_state":
        raise CheckpointError(f"{path}: not a training checkpoint of this trainer")
    return ckpt


class _SkipBatches(Sampler):
    """The batches of ``sampler`` after its first ``skip`` (a resumed epoch's remainder)."""

    def __init__(self, sampler: Any, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def make_loader(
    data: Tuple[Any, Any, Callable], epoch: int, config: TrainerConfig, device: Any = "cpu", skip: int = 0
) -> DataLoader:
    """The DataLoader the trainer reads one epoch from: ``data`` is ``(dataset, batch_sampler,
    collate_fn)``; the order depends only on (seed, epoch); ``skip`` leaves out the first batches."""
    dataset, sampler, collate_fn = data
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if hasattr(dataset, "epoch"):
        dataset.epoch = epoch
        dataset.seed = config.seed
    # A generator of its own: creating a DataLoader iterator draws a seed, and drawing it from the
    # global RNG would make a resumed run diverge from an uninterrupted one.
    generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    pin = config.pin_memory if config.pin_memory != "auto" else torch.device(device).type == "cuda"
    workers = {"prefetch_factor": config.prefetch_factor} if config.num_workers > 0 else {}
    return DataLoader(
        dataset,
        batch_sampler=_SkipBatches(sampler, skip) if skip else sampler,
        collate_fn=collate_fn,
        num_workers=config.num_workers,
        pin_memory=bool(pin),
        generator=generator,
        **workers,
    )


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at update ``step`` (0-based)."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def _dist_info() -> Tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def init_distributed(device: str) -> None:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


class Trainer:
    """Train ``task`` on ``train_data`` (a dataset + batch sampler), validating on ``valid_data``.

    Args:
        config: :class:`TrainerConfig`.
        task: ``nn.Module`` with ``forward(batch) -> (loss, logs)``; parameters with
            ``requires_grad=False`` (a frozen teacher) are not optimised.
        train_data: ``(dataset, batch_sampler, collate_fn)``.
        valid_data: the same for validation (optional).
        export: called as ``export(task, path)`` by rank 0 at the end to write the trained model.
        state_filter: which entries of ``task.state_dict()`` go into checkpoints (default: all the
            trainable ones and buffers of trainable modules; a frozen teacher is left out).
        run_config: the whole validated config of the run (plain data), stored in every checkpoint and
            compared on resume: a changed ``trainer`` setting is applied (see
            every key but ``TrainerConfig.FIXED_ON_RESUME``), a change under one of ``fixed_keys`` (the model's shape,
            the objective) is refused by name.
        fixed_keys: dotted prefixes of ``run_config`` that a resumed run may not change.
        migrate: brings a checkpoint's stored ``run_config`` written by an older release into today's form
            before the comparison (a setting that moved is then not a change).
    """

    # what a run writes into exp_dir: what --restart moves aside, and what a run with no checkpoint to resume
    # from refuses to write over (``hubert_local.pt`` / ``distiller_local.pt``: the exports in s3prl's formats
    # that pre-training / distillation write beside model.pt)
    OUTPUTS = ("checkpoints", "tensorboard", "model.pt", "hubert_local.pt", "distiller_local.pt")

    def __init__(
        self,
        config: TrainerConfig,
        task: nn.Module,
        train_data: Tuple[Any, Any, Callable],
        valid_data: Optional[Tuple[Any, Any, Callable]] = None,
        export: Optional[Callable[[nn.Module, str], None]] = None,
        state_filter: Optional[Callable[[str], bool]] = None,
        run_config: Optional[Dict[str, Any]] = None,
        fixed_keys: Sequence[str] = (),
        migrate: Optional[Callable[[Dict[str, Any]], Dict[str, Any]]] = None,
    ):
        self.config = config
        self.migrate = migrate
        self.run_config = to_plain(run_config) if run_config is not None else None
        self.fixed_keys = tuple(fixed_keys)
        if config.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            self.device = config.device
        init_distributed(self.device)
        self.rank, self.world, self.local_rank = _dist_info()
        if self.device == "cuda":
            self.device = f"cuda:{self.local_rank}"
        torch.manual_seed(config.seed + self.rank)
        random.seed(config.seed + self.rank)
        self.task = task.to(self.device)
        self.state_filter = state_filter or self._default_filter()
        groups = self._param_groups(task)
        optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer: torch.optim.Optimizer = optimizer(
            groups, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(config.schedule, config.warmup_steps, config.max_steps)
        )
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if self.world > 1:
            ids = [self.local_rank] if self.device.startswith("cuda") else None
            self.model: nn.Module = nn.parallel.DistributedDataParallel(self.task, device_ids=ids)
        else:
            self.model = self.task
        self.train_data = train_data
        self.valid_data = valid_data
        self.export = export
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.bad_steps = 0
        self.skipped_utterances = 0  # unreadable audio collate left out (named in the log as it happens)
        self.consecutive_bad = 0
        self.consecutive_idle = 0  # updates in a row with a loss of exactly 0 and a zero gradient
        self.ckpt_dir = os.path.join(config.exp_dir, "checkpoints")
        self.writer = None
        self._bar = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _param_groups(task: nn.Module) -> List[Dict[str, Any]]:
        """The optimiser's parameter groups: every trainable parameter at ``config.lr``, or what the task declares
        with ``param_groups()`` -- a list of ``{"params": [...], "fixed_lr": float, "fixed_weight_decay": float}``
        (the last two optional: a group's own peak learning rate and weight decay, e.g. pruning gates and
        Lagrange multipliers; the schedule scales every group alike). A trainable parameter in no group is
        refused by name."""
        params = [p for p in task.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the task has no trainable parameters")
        declare = getattr(task, "param_groups", None)
        if declare is None:
            return [{"params": params}]
        groups = [dict(g) for g in declare()]
        seen = {id(p) for g in groups for p in g["params"]}
        missing = [n for n, p in task.named_parameters() if p.requires_grad and id(p) not in seen]
        if missing:
            raise ValueError(f"the task's param_groups() leave out trainable parameters {missing[:5]}")
        for g in groups:
            g["params"] = [p for p in g["params"] if p.requires_grad]
            if g.get("fixed_lr") is not None:
                g["lr"] = float(g["fixed_lr"])
            if g.get("fixed_weight_decay") is not None:
                g["weight_decay"] = float(g["fixed_weight_decay"])
        return [g for g in groups if g["params"]]

    def _default_filter(self) -> Callable[[str], bool]:
        frozen_prefixes = []
        for name, module in self.task.named_modules():
            ps = list(module.parameters(recurse=True))
            if name and ps and not any(p.requires_grad for p in ps):
                frozen_prefixes.append(name + ".")
        return lambda key: not any(key.startswith(p) for p in frozen_prefixes)

    def _amp_dtype(self) -> Optional[torch.dtype]:
        amp = self.config.amp
        if amp == "none" or not self.device.startswith("cuda"):
            if amp in ("bf16", "fp16") and not self.device.startswith("cuda"):
                logger.warning("amp=%s asked for on CPU: training in float32", amp)
            return None
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if amp == "bf16" else torch.float16

    def _loader(self, data, epoch: int, skip: int = 0) -> DataLoader:
        return make_loader(data, epoch, self.config, self.device, skip)

    def _to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return {
            k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()
        }

    def _is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------ checkpoints
    def _rng_state(self) -> Dict[str, Any]:
        """This process's random streams: torch CPU, this GPU's (dropout and masks on CUDA), Python."""
        py = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.startswith("cuda") else None,
            "python": list(py[1]),
            "python_pos": py[2],
        }

    def _set_rng_state(self, rng: Dict[str, Any]) -> None:
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        random.setstate((3, tuple(rng["python"]), rng["python_pos"]))

    def state(self, rng_per_rank: Optional[list] = None) -> Dict[str, Any]:
        """The training state; ``rng_per_rank`` holds every process's random streams (gathered by
        :meth:`save`), so that each rank of a DDP run resumes its own (default: this process's)."""
        task_state = {k: v.detach().cpu() for k, v in self.task.state_dict().items() if self.state_filter(k)}
        rngs = rng_per_rank if rng_per_rank is not None else [self._rng_state()]
        return {
            "format_version": 1,
            "kind": "training_state",
            "trainer": {
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "bad_steps": self.bad_steps,
                "skipped_utterances": self.skipped_utterances,
            },
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.config).items()},
            "run_config": self.run_config,
            "task_state": task_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng_per_rank": rngs,
        }

    def save(self) -> str:
        path = os.path.join(self.ckpt_dir, f"step{self.step:08d}.pt")
        rngs = [self._rng_state()]
        if self.world > 1:  # every rank's streams: rank r resumes its own masks and dropout
            rngs = [None] * self.world
            dist.all_gather_object(rngs, self._rng_state())
        if self._is_main():
            atomic_save(self.state(rngs), path)
            # a name of this process's own (the experiment lock makes it the only writer; a unique name keeps
            # even two writers from renaming each other's half-written marker)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-last-", suffix=".txt", dir=self.ckpt_dir)
            with os.fdopen(fd, "w") as f:
                f.write(os.path.basename(path) + "\n")
            os.replace(tmp, os.path.join(self.ckpt_dir, "last.txt"))
            old = sorted(p for p in os.listdir(self.ckpt_dir) if p.startswith("step") and p.endswith(".pt"))
            for name in old[: -self.config.keep_last]:
                os.remove(os.path.join(self.ckpt_dir, name))
        if self.world > 1:
            dist.barrier()
        return path

    def latest_checkpoint(self) -> Optional[str]:
        """The checkpoint ``last.txt`` names, if it is there (what a resume tries first)."""
        marker = os.path.join(self.ckpt_dir, "last.txt")
        if not os.path.isfile(marker):
            return None
        with open(marker) as f:
            path = os.path.join(self.ckpt_dir, f.read().strip())
        return path if os.path.isfile(path) else None

    def checkpoints(self) -> List[str]:
        """Every periodic checkpoint of the experiment, newest first (``last.txt``'s first)."""
        if not os.path.isdir(self.ckpt_dir):
            return []
        found = sorted(
            (p for p in os.listdir(self.ckpt_dir) if p.startswith("step") and p.endswith(".pt")), reverse=True
        )
        paths = [os.path.join(self.ckpt_dir, p) for p in found]
        last = self.latest_checkpoint()
        return ([last] if last else []) + [p for p in paths if p != last]

    def _holds_state(self) -> bool:
        """Whether the experiment already holds training state (checkpoints, or the marker of one)."""
        return bool(self.checkpoints()) or os.path.isfile(os.path.join(self.ckpt_dir, "last.txt"))

    def outputs(self) -> List[str]:
        """What a run of this trainer has written into ``exp_dir`` (:data:`OUTPUTS`, the ones there)."""
        return [n for n in self.OUTPUTS if os.path.lexists(os.path.join(self.config.exp_dir, n))]

    def _clean_orphans(self) -> None:
        """Remove the temporary files of saves that a kill interrupted (``.tmp-*.pt``, ``.tmp-last-*``,
        ``last.txt.tmp`` of older versions); the experiment lock makes them nobody's."""
        for folder in (self.ckpt_dir, self.config.exp_dir):
            if not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                if (
                    (name.startswith(".tmp-") and name.endswith(".pt"))
                    or name.startswith(".tmp-last-")
                    or (name == "last.txt.tmp")
                ):
                    os.remove(os.path.join(folder, name))
                    logger.info("removed %s (left by a save that was interrupted)", os.path.join(folder, name))

    def _restart(self) -> None:
        """Move everything the trainer wrote (:data:`OUTPUTS`) into ``exp_dir/before-restart-<time>/``
        (nothing is deleted), so that training starts over."""
        if self._is_main():
            found = self.outputs()
            if found:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                aside, n = os.path.join(self.config.exp_dir, f"before-restart-{stamp}"), 1
                while os.path.lexists(aside):
                    n += 1
                    aside = os.path.join(self.config.exp_dir, f"before-restart-{stamp}-{n}")
                os.makedirs(aside)
                for name in found:
                    os.replace(os.path.join(self.config.exp_dir, name), os.path.join(aside, name))
                logger.warning("restart: %s moved to %s; training starts at step 0", ", ".join(found), aside)
        if self.world > 1:
            dist.barrier()

    def resume(self, restart: bool = False) -> Optional[str]:
        """Load the newest checkpoint that can be read; returns its path (None: a new run).

        An unreadable checkpoint (truncated, corrupt, not a training state) is skipped, saying which and
        why, and the next older one is tried. An experiment that holds training state of which nothing
        loads, or outputs of an earlier run (a finished ``model.pt``, TensorBoard logs) but no checkpoint,
        is refused (:class:`TrainingError`) rather than silently started over on top of them -- unless
        ``restart``, which moves them aside first.
        """
        if restart:
            self._restart()
            return None
        skipped = []
        for path in self.checkpoints():
            try:
                ckpt = read_training_state(path)
            except CheckpointError as e:
                logger.warning("skipping %s", e)
                skipped.append(str(e))
                continue
            self.load(path, ckpt)
            if skipped:
                logger.warning("resumed from an older checkpoint, %s: the newer one(s) could not be read", path)
            return path
        if self._holds_state():
            why = (
                "; ".join(skipped)
                if skipped
                else f"{os.path.join(self.ckpt_dir, 'last.txt')} names a checkpoint that is gone"
            )
            raise TrainingError(
                f"{self.config.exp_dir} holds training state but no checkpoint can be loaded ({why}). Restore a "
                f"checkpoint into {self.ckpt_dir}, or start over with --restart (what the run wrote is moved "
                "aside to before-restart-<time>/, not deleted), or train into another trainer.exp_dir."
            )
        found = [n for n in self.outputs() if n != "checkpoints"]
        if self._any_rank(found == ["tensorboard"]):  # decided together: every rank meets _restart's barrier
            # logs of a run stopped before its first checkpoint: nothing to resume and nothing else to lose, so
            # it starts over, its logs moved aside (not deleted) so that the curves do not mix
            logger.warning(
                "%s has TensorBoard logs but no checkpoint (a run stopped before its first save)", self.config.exp_dir
            )
            self._restart()
        elif found:
            raise TrainingError(
                f"{self.config.exp_dir} holds {', '.join(found)} of an earlier run but no checkpoint to resume "
                f"from: starting at step 0 would overwrite them. Start over with --restart (they are moved aside "
                "to before-restart-<time>/, not deleted), or train into another trainer.exp_dir."
            )
        return None

    def _check_changes(self, path: str, ckpt: Dict[str, Any]) -> List[str]:
        """Compare the saved config with this run's: refuse changes under ``fixed_keys`` (and of the
        optimiser or seed) by name; return the trainer settings that changed (applied by :meth:`load`)."""
        old_trainer = dict(ckpt.get("config") or {})
        new_trainer = to_plain(asdict(self.config))
        old_run, new_run = ckpt.get("run_config"), self.run_config
        if old_run is not None and new_run is not None:
            if self.migrate is not None:
                old_run = to_plain(self.migrate(dict(old_run)))
            old = {**old_run, "trainer": old_trainer}
            new = {**new_run, "trainer": new_trainer}
        else:  # a checkpoint of an older release, or a run without a stored config: the trainer only
            old, new = {"trainer": old_trainer}, {"trainer": new_trainer}
        base = resolved_base(old_trainer.get("exp_dir"), new_trainer.get("exp_dir"))
        changes = {k: v for k, v in config_changes(old, new).items() if not same_path(*v, base)}
        fixed = [f"trainer.{k}" for k in TrainerConfig.FIXED_ON_RESUME] + list(self.fixed_keys)
        refused = [k for k in changes if any(k == f or k.startswith(f + ".") for f in fixed)]
        if refused:
            detail = ", ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused)
            raise TrainingError(
                f"cannot resume {path} with a changed {detail}: the checkpoint was trained with the old value(s). "
                "Put them back, train into another trainer.exp_dir, or start over with --restart."
            )
        applied = []
        for k, (a, b) in changes.items():
            if k == "trainer.exp_dir":
                continue
            if k.startswith("trainer."):
                logger.warning("resuming with %s changed: %r -> %r (applied)", k, a, b)
                applied.append(k.split(".")[1])
            else:
                logger.warning("resuming with %s changed: %r -> %r (used from now on)", k, a, b)
        return applied

    def _apply_trainer_settings(self) -> None:
        """This run's optimiser settings and schedule over the restored state (a checkpoint's
        ``base_lrs`` and param-group values would otherwise win); unchanged settings give the same values."""
        cfg = self.config
        for group in self.optimizer.param_groups:
            base = cfg.lr if group.get("fixed_lr") is None else float(group["fixed_lr"])
            decay = cfg.weight_decay if group.get("fixed_weight_decay") is None else float(group["fixed_weight_decay"])
            group.update(betas=cfg.betas, eps=cfg.eps, weight_decay=decay, initial_lr=base)
        sched = self.scheduler
        sched.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]
        sched.lr_lambdas = [lr_lambda(cfg.schedule, cfg.warmup_steps, cfg.max_steps)] * len(self.optimizer.param_groups)
        for group, base, fn in zip(self.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * fn(sched.last_epoch)
        sched._last_lr = [g["lr"] for g in self.optimizer.param_groups]  # what get_last_lr() reports

    def load(self, path: str, ckpt: Optional[Dict[str, Any]] = None) -> None:
        """Restore the training state of ``path`` (already read: ``ckpt``)."""
        if ckpt is None:
            ckpt = read_training_state(path)
        applied = self._check_changes(path, ckpt)
        # Non-strict on purpose: a frozen teacher inside the task is not stored in training checkpoints.
        # Every other missing key and every unexpected key still raises just below (tested).
        own = self.task.state_dict()
        bad = [
            f"{k}: {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} now"
            for k, v in ckpt["task_state"].items()
            if k in own and tuple(v.shape) != tuple(own[k].shape)
        ]
        if bad:
            raise TrainingError(
                f"{path}: the checkpoint holds a model of another shape ({'; '.join(bad[:3])}): "
                "train into another trainer.exp_dir or start over with --restart"
            )
        # strict=False: a frozen teacher is not stored; missing keys are filtered and unexpected ones raise just below
        missing, unexpected = self.task.load_state_dict(ckpt["task_state"], strict=False)
        missing = [k for k in missing if self.state_filter(k)]
        if missing or unexpected:
            raise TrainingError(
                f"{path}: the checkpoint does not fit this task (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self._apply_trainer_settings()
        t = ckpt["trainer"]
        self.step, self.epoch, self.batch_in_epoch, self.bad_steps = (
            t["step"],
            t["epoch"],
            t["batch_in_epoch"],
            t["bad_steps"],
        )
        self.skipped_utterances = int(t.get("skipped_utterances", 0))  # absent from checkpoints of older releases
        rngs = (
            ckpt["rng_per_rank"] if "rng_per_rank" in ckpt else [ckpt["rng"]]
        )  # "rng": one process, before 2026-11-22
        if len(rngs) == self.world:
            self._set_rng_state(rngs[self.rank])
        else:  # the trajectory cannot be the same anyway: the data are split differently
            logger.warning(
                "%s was written by %d process(es), resuming with %d: random streams re-seeded",
                path,
                len(rngs),
                self.world,
            )
            torch.manual_seed(self.config.seed + self.rank + 1000 * self.step)
            random.seed(self.config.seed + self.rank + 1000 * self.step)
        if applied:
            logger.info(
                "changed settings applied from step %d: %s (lr now %.4g)",
                self.step,
                ", ".join(applied),
                self.scheduler.get_last_lr()[0],
            )
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch)

    # ------------------------------------------------------------------ loops
    def _forward(self, batch) -> Tuple[torch.Tensor, Logs]:
        if self.amp_dtype is not None:
            with torch.autocast(device_type="cuda", dtype=self.amp_dtype):
                return self.model(batch)
        return self.model(batch)

    def validate(self) -> Dict[str, float]:
        if self.valid_data is None:
            return {}
        self.task.eval()
        totals: Dict[str, list] = {}
        with torch.no_grad():
            for batch in self._loader(self.valid_data, 0):
                batch.pop("skipped", None)
                _, logs = self._forward(self._to_device(batch))
                for k, (s, n) in logs.items():
                    acc = totals.setdefault(k, [0.0, 0.0])
                    acc[0] += float(s)
                    acc[1] += float(n)
        if self.world > 1:
            keys = sorted(totals)
            t = torch.tensor([v for k in keys for v in totals[k]], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            totals = {k: [t[2 * i].item(), t[2 * i + 1].item()] for i, k in enumerate(keys)}
        self.task.train()
        return {k: s / max(n, 1e-9) for k, (s, n) in totals.items()}

    def _log(self, prefix: str, values: Dict[str, float]) -> None:
        if not self._is_main():
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(os.path.join(self.config.exp_dir, "tensorboard"))
        for k, v in values.items():
            self.writer.add_scalar(f"{prefix}/{k}", v, self.step)
        self.writer.flush()

    def _update_loss(self, loss_sum_count) -> float:
        """The update's loss over every rank (each rank's ``after_update`` sees the same value, so that
        a loss-driven decision -- a weight-pruning plateau -- is the same on every rank)."""
        loss_sum, loss_count = (float(v) for v in loss_sum_count)
        if self.world > 1:
            t = torch.tensor([loss_sum, loss_count], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            loss_sum, loss_count = t[0].item(), t[1].item()
        return loss_sum / loss_count if loss_count else float("nan")

    def _any_rank(self, flag: bool) -> bool:
        """True on every rank when it is true on any (ranks stop together, or the others would hang)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t)
        return t.item() > 0

    def _all_finite(self, finite: bool) -> bool:
        return not self._any_rank(not finite)

    def train(self, resume: bool = True, stop_at: Optional[int] = None, restart: bool = False) -> Dict[str, float]:
        """Run until ``max_steps`` updates; resume from the newest readable checkpoint when there is one
        (:meth:`resume`; ``restart``: move what the experiment's earlier run wrote aside and start over).

        ``stop_at`` interrupts the run after that many updates (a checkpoint is written), as a kill
        would -- the schedule still spans ``max_steps``. Rank 0 holds ``exp_dir``'s writer lock
        (:func:`~s3prl_plugins.train.lock.experiment_lock`) throughout.

        Raises:
            TrainingInterrupted: Ctrl-C (a ``KeyboardInterrupt`` that says where the last checkpoint is).
        """
        lock = experiment_lock(self.config.exp_dir) if self._is_main() else contextlib.nullcontext()
        with lock:
            try:
                return self._train(resume, stop_at, restart)
            except KeyboardInterrupt:
                if self._bar is not None:
                    self._bar.close()  # its last line before the message, not after
                last = self.latest_checkpoint()
                raise TrainingInterrupted(
                    f"interrupted at step {self.step}; the last checkpoint is {last} (run the same command, without "
                    "--restart, to resume from it)"
                    if last
                    else f"interrupted at step {self.step}, before the first checkpoint (trainer.save_every="
                    f"{self.config.save_every}): the same command starts over"
                ) from None

    def _train(self, resume: bool, stop_at: Optional[int], restart: bool) -> Dict[str, float]:
        from tqdm import tqdm

        cfg = self.config
        if self._is_main():
            self._clean_orphans()
        if resume or restart:
            self.resume(restart=restart)
        if self._is_main():
            os.makedirs(cfg.exp_dir, exist_ok=True)
        self.task.train()
        bar = self._bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            desc="training",
            disable=not self._is_main(),
            dynamic_ncols=True,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,  # logs to files stay readable
        )
        running: Dict[str, list] = {}
        update_loss = [0.0, 0.0]  # this update's loss (sum, count): what after_update reads
        last_valid: Dict[str, float] = {}
        # a task may act after every update and end training early: weight pruning re-applies its masks
        # there and stops when the loss has converged (s3prl_plugins.compress.recovery.RecoveryTask)
        after_update = getattr(self.task, "after_update", None)
        done_early = False
        t0 = time.time()
        while self.step < cfg.max_steps:
            # exact resume: the sampler skips the batches already used (nothing is decoded for them)
            it = iter(self._loader(self.train_data, self.epoch, skip=self.batch_in_epoch))
            micro = 0
            finite = True
            zero = True  # every micro-batch's loss exactly 0 (checked with the gradient: nothing to learn from)
            for batch in it:
                self.batch_in_epoch += 1
                self.skipped_utterances += len(batch.pop("skipped", ()))
                batch = self._to_device(batch)
                sync = micro + 1 == cfg.grad_accum
                ctx = self.model.no_sync() if (self.world > 1 and not sync) else contextlib.nullcontext()
                with ctx:
                    loss, logs = self._forward(batch)
                    finite = finite and bool(torch.isfinite(loss.detach()).all())
                    zero = zero and bool((loss.detach() == 0).all())
                    self.scaler.scale(loss / cfg.grad_accum).backward()
                for k, (s, n) in logs.items():
                    acc = running.setdefault(k, [0.0, 0.0])
                    acc[0] += float(s)
                    acc[1] += float(n)
                if "loss" in logs:
                    update_loss[0] += float(logs["loss"][0])
                    update_loss[1] += float(logs["loss"][1])
                micro += 1
                if micro < cfg.grad_accum:
                    continue
                micro = 0
                if not self._all_finite(finite):
                    update_loss = [0.0, 0.0]
                    self.optimizer.zero_grad(set_to_none=True)
                    self.bad_steps += 1
                    self.consecutive_bad += 1
                    finite = zero = True
                    logger.warning("step %d: non-finite loss, update skipped (%d so far)", self.step, self.bad_steps)
                    if self.consecutive_bad >= cfg.max_bad_steps:
                        raise TrainingError(
                            f"the loss was NaN/Inf for {self.consecutive_bad} updates in a row (at step {self.step}); "
                            "lower the learning rate, enable gradient clipping, or check the data. The last good "
                            f"checkpoint is {self.latest_checkpoint()}"
                        )
                    continue
                self.consecutive_bad = 0
                self.scaler.unscale_(self.optimizer)
                grad_norm = (
                    nn.utils.clip_grad_norm_(self.task.parameters(), cfg.clip_norm)
                    if cfg.clip_norm
                    else torch.tensor(0.0)
                )
                idle = zero and all(p.grad is None or not p.grad.any() for p in self.task.parameters())
                self.consecutive_idle = self.consecutive_idle + 1 if not self._any_rank(not idle) else 0
                zero = True
                if self.consecutive_idle >= IDLE_UPDATES:
                    raise TrainingError(
                        f"the loss was exactly 0 with a zero gradient for {self.consecutive_idle} updates in a row "
                        f"(at step {self.step}): nothing is being learnt. A task that masks no frame (task.mask_prob "
                        "too small for these utterances' lengths), an objective of weight 0 or labels that are all "
                        "ignored give this; fix the config. The last checkpoint is "
                        f"{self.latest_checkpoint() or 'none'}"
                    )
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.step += 1
                bar.update(1)
                if after_update is not None:
                    done_early = self._any_rank(bool(after_update(self._update_loss(update_loss))))
                update_loss = [0.0, 0.0]
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    values = {k: s / max(n, 1e-9) for k, (s, n) in running.items()}
                    values.update(
                        lr=self.scheduler.get_last_lr()[0],
                        grad_norm=float(grad_norm),
                        bad_steps=self.bad_steps,
                        skipped_utterances=self.skipped_utterances,
                    )
                    self._log("train", values)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if k in ("loss", "acc", "lr")})
                    logger.info("step %d %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in values.items()))
                    running = {}
                if self.valid_data is not None and (self.step % cfg.valid_every == 0 or self.step == cfg.max_steps):
                    last_valid = self.validate()
                    self._log("valid", last_valid)
                    logger.info("step %d valid %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in last_valid.items()))
                if done_early:
                    logger.info("step %d: the task asked to stop (converged)", self.step)
                    if self.valid_data is not None and self.step % cfg.valid_every != 0:
                        last_valid = self.validate()
                        self._log("valid", last_valid)
                if self.step % cfg.save_every == 0 or self.step in (cfg.max_steps, stop_at) or done_early:
                    self.save()
                if self.step >= cfg.max_steps or self.step == stop_at or done_early:
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
                continue
            break
        bar.close()
        if stop_at is not None and self.step < cfg.max_steps and not done_early:
            return last_valid
        if self.export is not None and self._is_main():
            self.export(self.task, os.path.join(cfg.exp_dir, "model.pt"))
        if self.world > 1:
            dist.barrier()
        logger.info("finished %d steps in %.1f s", self.step, time.time() - t0)
        return last_valid
