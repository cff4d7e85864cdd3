"""Masked-prediction pre-training (HuBERT on waveforms, MelHuBERT on log-Mel) from one YAML config.

Config sections::

    model:   {factory: hubert_config | melhubert_config | star_hubert_config, args: {...}}
    data:    {train, valid, train_labels, valid_labels, max_seconds, batch_seconds, batch_size, stats_utts}
    task:    {mask_prob, mask_length}
    trainer: TrainerConfig fields (exp_dir, max_steps, lr, ...)

Outputs in ``trainer.exp_dir``: ``model.pt`` (our format; loads with ``melhubert_local`` /
``star_hubert_local`` / ``load_pretrained``), and for waveform HuBERTs also ``hubert_local.pt``
(s3prl's own format: loads with the stock ``hubert_local`` entry), plus checkpoints/ and tensorboard/.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

import torch

from s3prl_plugins.config import ConfigError, check_fields, check_keys, check_kwargs, check_mapping, from_dict, nearest
from s3prl_plugins.data.dataset import AudioDataset, batch_loader, read_labels, split_dataset
from s3prl_plugins.models import factories
from s3prl_plugins.models.checkpoint import atomic_save, save_checkpoint
from s3prl_plugins.models.config import SSLModelConfig
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.tasks.masked_prediction import MaskedPredictionTask
from s3prl_plugins.train.lock import rank0_lock
from s3prl_plugins.train.trainer import Trainer, TrainerConfig

logger = logging.getLogger(__name__)

FACTORIES = {
    "hubert_config": factories.hubert_config,
    "melhubert_config": factories.melhubert_config,
    "star_hubert_config": factories.star_hubert_config,
    "distilhubert_config": factories.distilhubert_config,
}


# What a factory's ``**overrides`` pass on to SSLModelConfig, by type (an int stands for every layer's value).
_PER_LAYER = ("num_heads", "ffn_dims", "identity_heads", "conv_heads")


def _model_field_types() -> Dict[str, Any]:
    hints = typing.get_type_hints(SSLModelConfig)
    types = {f.name: hints[f.name] for f in dataclasses.fields(SSLModelConfig)}
    types.update({k: Union[int, List[int]] for k in _PER_LAYER})
    return types


# The legal values of the factories' and SSLModelConfig's numeric arguments (a list: each element).
_POSITIVE = {"min": 1}
_FRACTION = {"min": 0, "max": 1}
MODEL_ARG_RANGES = {
    **{
        k: _POSITIVE
        for k in (
            "embed_dim",
            "num_layers",
            "head_dim",
            "n_mels",
            "stack_frames",
            "num_buckets",
            "max_distance",
            "head_conv_kernel",
            "final_dim",
            "num_classes",
            "pos_conv_groups",
            "out_dim",
            "inter_dim",
        )
    },
    **{
        k: {"min": 0}
        for k in (
            "num_heads",
            "ffn_dim",
            "ffn_dims",
            "pos_conv_kernel",
            "identity_heads",
            "conv_heads",
            "feature_grad_mult",
        )
    },
    **{k: _FRACTION for k in ("dropout", "attention_dropout", "activation_dropout", "conv_dropout")},
    "frame_length_ms": {"gt": 0},
    "frame_shift_ms": {"gt": 0},
    "weight_density": {"gt": 0, "max": 1},
}


def check_model_section(section: Any, where: str = "model") -> Dict[str, Any]:
    """``{factory, args}`` checked: the factory by name, ``args`` against its parameters and the
    :class:`SSLModelConfig` fields it passes on. Returns the normalised section."""
    section = check_mapping(section, where)
    check_keys(section, ("factory", "args"), where)
    name = section.get("factory")
    if not isinstance(name, str) or name not in FACTORIES:
        raise ConfigError(
            f"{where}.factory: must be one of {', '.join(sorted(FACTORIES))}, "
            f"not {name!r}{nearest(str(name), FACTORIES)}"
        )
    args = check_kwargs(
        FACTORIES[name], section.get("args"), f"{where}.args", extra=_model_field_types(), ranges=MODEL_ARG_RANGES
    )
    return {"factory": name, "args": args}


def build_from_section(section: Dict[str, Any], where: str = "model") -> SSLModel:
    """The model of a ``{factory, args}`` section (randomly initialised); :class:`ConfigError` naming
    the section when it cannot be built."""
    section = check_model_section(section, where)
    args = dict(section["args"])
    if "conv_layers" in args:
        args["conv_layers"] = [tuple(x) for x in args["conv_layers"]]
    try:
        return SSLModel(FACTORIES[section["factory"]](**args))
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"{where}.args: {e}") from None


@dataclass
class PretrainDataConfig:
    """The ``data:`` section of pre-training: Kaldi data dirs and their frame labels (``bin/make_targets``)."""

    train: str
    train_labels: str
    valid: Optional[str] = None
    valid_labels: Optional[str] = None
    max_seconds: Optional[float] = field(default=8.0, metadata={"gt": 0})
    batch_seconds: float = field(default=60.0, metadata={"gt": 0})
    batch_size: int = field(default=1000, metadata={"min": 1})
    stats_utts: int = field(default=200, metadata={"min": 1})

    def __post_init__(self) -> None:
        check_fields(self, "data")
        if self.valid and not self.valid_labels:
            raise ConfigError("data.valid_labels: needed with data.valid (the labels of the validation set)")


PRETRAIN_SECTIONS = ("model", "data", "task", "trainer")


def check_pretrain_config(config: Any) -> Dict[str, Any]:
    """The whole pre-training config checked and normalised (plain data): unknown sections and keys,
    types and ranges refused with the key named -- before anything is built or written."""
    config = check_mapping(config, "config")
    check_keys(config, PRETRAIN_SECTIONS, "")
    for key in ("model", "data", "trainer"):
        if key not in config:
            raise ConfigError(f"config has no '{key}' section")
    trainer = TrainerConfig.from_dict(config["trainer"])
    data = from_dict(PretrainDataConfig, config["data"], "data")
    task = check_kwargs(
        MaskedPredictionTask.__init__,
        config.get("task"),
        "task",
        skip=("model",),
        defaults=True,
        ranges=MaskedPredictionTask.RANGES,
    )
    return {
        "model": check_model_section(config["model"]),
        "data": dataclasses.asdict(data),
        "task": task,
        "trainer": dataclasses.asdict(trainer),
    }


def logmel_stats(model: SSLModel, dataset: AudioDataset, max_utts: int = 200):
    """Dataset mean/std of the log-Mel bins (MelHuBERT's normalisation), from up to ``max_utts``."""
    fe = model.frontend
    total, sq, n = 0.0, 0.0, 0
    for i in range(min(len(dataset), max_utts)):
        f = fe.fbank(dataset[i]["wav"])
        total = total + f.sum(0)
        sq = sq + (f.double() ** 2).sum(0)
        n += f.size(0)
    mean = total / n
    std = (sq / n - mean.double() ** 2).clamp(min=1e-8).sqrt().float()
    return mean.float(), std


def export_model(task: MaskedPredictionTask, path: str) -> None:
    model = copy.deepcopy(task.model).cpu().eval()
    save_checkpoint(path, model, kind="masked_prediction")
    if model.config.frontend == "conv" and model.config.head and model.config.head.get("type") == "hubert":
        from s3prl_plugins.models.convert.export import to_s3prl_hubert

        atomic_save(to_s3prl_hubert(model), os.path.join(os.path.dirname(path), "hubert_local.pt"))


def run_pretrain(config: Dict[str, Any], stop_at: Optional[int] = None, restart: bool = False) -> Dict[str, float]:
    """Train from a parsed YAML config; returns the last validation statistics.

    ``stop_at`` interrupts after that many updates (see :meth:`Trainer.train`); ``restart`` starts
    over in an experiment that holds checkpoints (they are moved aside)."""
    config = check_pretrain_config(config)
    tcfg = TrainerConfig(**config["trainer"])
    # the experiment's one writer, before anything is built or written (the trainer takes it again)
    with rank0_lock(tcfg.exp_dir):
        return _pretrain(config, tcfg, stop_at, restart)


def _pretrain(config: Dict[str, Any], tcfg: TrainerConfig, stop_at: Optional[int], restart: bool) -> Dict[str, float]:
    torch.manual_seed(tcfg.seed)  # the same initial weights on every rank
    model = build_from_section(config["model"])
    data = config["data"]
    shape = {"frame_stride": model.downsample_rate, "min_samples": model.min_samples}
    train = split_dataset(data, "train", read_labels(data["train_labels"]), **shape)
    if model.config.frontend == "logmel":
        mean, std = logmel_stats(model, train, int(data.get("stats_utts", 200)))
        model.frontend.set_stats(mean, std)
    try:
        task = MaskedPredictionTask(model, **config["task"])
    except ValueError as e:
        raise ConfigError(f"task: {e}") from None
    # the process group is joined inside Trainer; torchrun's variables tell the shard already
    vset = split_dataset(data, "valid", read_labels(data["valid_labels"]) if data.get("valid") else None, **shape)
    valid = batch_loader(vset, data, shuffle=False) if vset is not None else None
    # resuming compares the saved config with this one: the model's shape (its built config) and the task
    # are fixed, trainer settings are applied
    trainer = Trainer(
        tcfg,
        task,
        batch_loader(train, data, shuffle=True, seed=tcfg.seed),
        valid,
        export=export_model,
        run_config={**config, "model": model.config.to_dict()},
        fixed_keys=("model", "task"),
    )
    return trainer.train(stop_at=stop_at, restart=restart)
