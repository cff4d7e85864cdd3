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
import logging
import os
from typing import Any, Dict, Optional

import torch

from s3prl_plugins.data.dataset import AudioDataset, BucketBatchSampler, collate, read_labels
from s3prl_plugins.models import factories
from s3prl_plugins.models.checkpoint import atomic_save, save_checkpoint
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.tasks.masked_prediction import MaskedPredictionTask
from s3prl_plugins.train.trainer import Trainer, TrainerConfig

logger = logging.getLogger(__name__)

FACTORIES = {
    "hubert_config": factories.hubert_config,
    "melhubert_config": factories.melhubert_config,
    "star_hubert_config": factories.star_hubert_config,
    "distilhubert_config": factories.distilhubert_config,
}


def build_from_section(section: Dict[str, Any]) -> SSLModel:
    name = section.get("factory")
    if name not in FACTORIES:
        raise ValueError(f"model.factory must be one of {sorted(FACTORIES)}, not {name!r}")
    args = dict(section.get("args", {}))
    if "conv_layers" in args:
        args["conv_layers"] = [tuple(x) for x in args["conv_layers"]]
    return SSLModel(FACTORIES[name](**args))


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


def run_pretrain(config: Dict[str, Any], stop_at: Optional[int] = None) -> Dict[str, float]:
    """Train from a parsed YAML config; returns the last validation statistics.

    ``stop_at`` interrupts after that many updates (see :meth:`Trainer.train`)."""
    for key in ("model", "data", "trainer"):
        if key not in config:
            raise ValueError(f"config has no '{key}' section")
    tcfg = TrainerConfig(**config["trainer"])
    torch.manual_seed(tcfg.seed)  # the same initial weights on every rank
    model = build_from_section(config["model"])
    data = config["data"]
    stride = model.downsample_rate
    train_labels = read_labels(data["train_labels"])
    train = AudioDataset(data["train"], train_labels, data.get("max_seconds", 8.0), frame_stride=stride, min_samples=model.min_samples)
    if model.config.frontend == "logmel":
        mean, std = logmel_stats(model, train, int(data.get("stats_utts", 200)))
        model.frontend.set_stats(mean, std)
    task = MaskedPredictionTask(model, **config.get("task", {}))
    # the process group is joined inside Trainer; torchrun's variables tell the shard already
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    sampler = BucketBatchSampler([train.duration(i) for i in range(len(train))], data.get("batch_seconds", 60.0), shuffle=True, seed=tcfg.seed, num_replicas=world, rank=rank, max_batch_size=int(data.get("batch_size", 1000)))
    valid = None
    if data.get("valid"):
        vset = AudioDataset(data["valid"], read_labels(data["valid_labels"]), None, frame_stride=stride, min_samples=model.min_samples)
        valid = (vset, BucketBatchSampler([vset.duration(i) for i in range(len(vset))], data.get("batch_seconds", 60.0), shuffle=False, num_replicas=world, rank=rank, max_batch_size=int(data.get("batch_size", 1000))), collate)
    trainer = Trainer(tcfg, task, (train, sampler, collate), valid, export=export_model)
    return trainer.train(stop_at=stop_at)
