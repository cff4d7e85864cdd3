"""Distillation (STaR, DistilHuBERT-style, attention KD) from one YAML config.

Config sections::

    teacher:    {source: hubert_base | wavlm_base | wav2vec2 | a checkpoint file | a HF folder,
                 model_config: the published .yaml when source is a published STaRHuBERT .ckpt}
    student:    {preset: star_hubert} or {factory: star_hubert_config, args: {...}}
                or {source: a checkpoint to continue from, model_config: ...};
                init_from_teacher: true | {frontend, layers} (DistilHuBERT's initialisation)
    objectives: {layer_wise: 1.0, intra_layer: 1.0}          # see s3prl_plugins.tasks.distillation
    loss:       {normalize: l2, method: auto, layer_map: null, cos_weight: 1.0, max_mismatch: 2,
                 frames_per_segment (CIF cardinality target), detach_teacher_alpha}
    data:       {train, valid, max_seconds, batch_seconds, batch_size (utterances per batch, optional),
                 train_segmentation, valid_segmentation: .seg files (s3prl_plugins.bin.segment) for CIF
                 guidance and the segments topline}
    trainer:    TrainerConfig fields (exp_dir, max_steps, lr, schedule, accum_steps, ...)

The paper's recipe (Jang, Kim and Kim 2024, §3.1) is ``conf/star.yaml`` of the recipes: AdamW, lr 1e-3,
cosine schedule, effective batch 48 utterances through gradient accumulation.

Outputs in ``trainer.exp_dir``: ``model.pt`` (the student without prediction heads, our format: loads
with ``star_hubert_local`` / ``distilhubert_cif_local`` / ``S3PRLUpstream(..., path_or_url=...)``),
``distiller_local.pt`` for a DistilHuBERT-shaped student (s3prl's own format, heads kept), checkpoints/
(student and optimiser only; the teacher is not copied) and tensorboard/.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any, Dict, List, Optional

import torch

from s3prl_plugins.data.dataset import AudioDataset, BucketBatchSampler, collate
from s3prl_plugins.models import factories
from s3prl_plugins.models.checkpoint import save_checkpoint
from s3prl_plugins.models.loading import load_pretrained
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.tasks.distillation import DistillationTask, student_without_head
from s3prl_plugins.train.pretrain import build_from_section
from s3prl_plugins.train.trainer import Trainer, TrainerConfig

logger = logging.getLogger(__name__)

LOSS_KEYS = ("normalize", "method", "layer_map", "cos_weight", "max_mismatch", "frames_per_segment", "detach_teacher_alpha", "temperature")


def init_from_teacher(student: SSLModel, teacher: SSLModel, frontend: bool = True, layers: bool = True) -> List[str]:
    """DistilHuBERT's initialisation (Chang et al. 2022 §3.1; s3prl's ``init_teacher_conv_layers`` /
    ``init_teacher_encoder_layers``): copy the teacher's CNN and feature projection (``frontend``), and its
    positional convolution and first ``student.num_layers`` transformer layers (``layers``) into the
    student, as s3prl does (its encoder LayerNorm is not copied). Returns the copied parameter names;
    a shape mismatch raises naming the tensor (the student is not shaped like the teacher there)."""
    t_state = teacher.state_dict()
    n = student.config.num_layers
    prefixes = []
    if frontend:
        prefixes += ["frontend.", "feature_projection."]
    if layers:
        prefixes += ["encoder.pos_conv."] + [f"encoder.layers.{i}." for i in range(n)]
    copied, state = [], student.state_dict()
    for key in state:
        if not any(key.startswith(p) for p in prefixes):
            continue
        if key not in t_state:
            raise ValueError(f"init_from_teacher: the teacher has no {key!r} (its architecture differs: {teacher.config.name})")
        if tuple(t_state[key].shape) != tuple(state[key].shape):
            raise ValueError(
                f"init_from_teacher: {key} is {tuple(state[key].shape)} in the student, {tuple(t_state[key].shape)} in the "
                "teacher: give the student the teacher's shape there (DistilHuBERT keeps HuBERT's CNN and layer widths)"
            )
        state[key] = t_state[key].detach().clone()
        copied.append(key)
    if not copied:
        raise ValueError("init_from_teacher copied nothing: the student has none of the teacher's modules")
    student.load_state_dict(state)
    return copied


def build_student(section: Dict[str, Any]) -> SSLModel:
    """``{preset: name}`` or ``{factory: ..., args: {...}}`` -> a randomly initialised student;
    ``{source: checkpoint, model_config: yaml}`` -> a pre-trained one to continue training (any format
    :func:`load_pretrained` reads, e.g. a published STaRHuBERT ``.ckpt`` with its ``.yaml``)."""
    section = {k: v for k, v in section.items() if k != "init_from_teacher"}
    if "source" in section:
        unknown = sorted(set(section) - {"source", "model_config"})
        if unknown:
            raise ValueError(f"student: {unknown} cannot be combined with 'source' (the checkpoint fixes the shape)")
        return load_pretrained(str(section["source"]), model_config=section.get("model_config")).train()
    if "preset" in section:
        return SSLModel(factories.preset_config(section["preset"]))
    return build_from_section(section)


def export_student(task: DistillationTask, path: str) -> None:
    """``model.pt`` (ours, heads dropped) and, for a DistilHuBERT-shaped student with heads, also
    ``distiller_local.pt`` beside it: s3prl's own DistilHuBERT format (``s3prl.hub.distiller_local``).
    A KD student (``cluster_kl``) keeps its cluster head W_hat (eq. 8): it is the student's own objective
    when it is compressed further (Lin et al. §VI-B); upstreams never read it."""
    if "cluster_kl" in task.weights:
        save_checkpoint(path, copy.deepcopy(task.student).cpu().eval(), kind="distillation", objectives=dict(task.weights))
        return
    save_checkpoint(path, student_without_head(task), kind="distillation", objectives=dict(task.weights))
    student = task.student
    if student.head is not None and student.config.head.get("type") == "distil":
        from s3prl_plugins.models.checkpoint import atomic_save
        from s3prl_plugins.models.convert.export import to_s3prl_distiller
        from s3prl_plugins.models.convert.keymap import ConversionError

        try:
            exported = to_s3prl_distiller(copy.deepcopy(student).cpu())
        except ConversionError as e:
            logger.info("no distiller_local.pt: %s", e)
            return
        atomic_save(exported, os.path.join(os.path.dirname(os.path.abspath(path)), "distiller_local.pt"))


def build_task(config: Dict[str, Any]) -> DistillationTask:
    for key in ("teacher", "student", "objectives"):
        if key not in config:
            raise ValueError(f"config has no '{key}' section")
    section = config["teacher"] if isinstance(config["teacher"], dict) else {"source": config["teacher"]}
    source = section.get("source")
    if not source:
        raise ValueError("teacher.source is empty: give a hub name (hubert_base, wavlm_base, wav2vec2) or a checkpoint path")
    teacher = load_pretrained(str(source), model_config=section.get("model_config"))
    student = build_student(config["student"])
    init = config["student"].get("init_from_teacher")
    if init:
        opts = init if isinstance(init, dict) else {}
        unknown = sorted(set(opts) - {"frontend", "layers"})
        if unknown:
            raise ValueError(f"student.init_from_teacher: unknown key(s) {unknown} (frontend, layers)")
        copied = init_from_teacher(student, teacher, bool(opts.get("frontend", True)), bool(opts.get("layers", True)))
        logger.info("student initialised from the teacher: %d tensors (CNN, projection, positional conv, first layers)", len(copied))
    loss = dict(config.get("loss") or {})
    unknown = sorted(set(loss) - set(LOSS_KEYS))
    if unknown:
        raise ValueError(f"unknown loss option(s) {unknown}; options: {list(LOSS_KEYS)}")
    return DistillationTask(teacher, student, config["objectives"], **loss)


def _segment_labels(data: Dict[str, Any], split: str):
    """Per-frame segment labels of ``data.<split>_segmentation`` (checked against the audio), or None."""
    path = data.get(f"{split}_segmentation")
    if not path:
        return None
    from s3prl_plugins.segment.segmentation import check_against_audio, labels_for, read_segmentation

    seg = read_segmentation(str(path))
    missing = check_against_audio(seg, data[split])
    if missing:
        logger.warning("%s: %d utterance(s) of %s have no segmentation and are left out, e.g. %s", path, len(missing), data[split], missing[:3])
    return labels_for(seg)


def run_distill(config: Dict[str, Any], stop_at: Optional[int] = None) -> Dict[str, float]:
    """Distil from a parsed YAML config; returns the last validation statistics.

    ``stop_at`` interrupts after that many updates (see :meth:`Trainer.train`)."""
    if "data" not in config or "trainer" not in config:
        raise ValueError("config needs 'data' and 'trainer' sections")
    tcfg = TrainerConfig(**config["trainer"])
    torch.manual_seed(tcfg.seed)  # the same initial student on every rank
    task = build_task(config)
    student = task.student
    data = config["data"]
    min_samples = max(student.min_samples, task.teacher.min_samples)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    train_seg = _segment_labels(data, "train")
    train = AudioDataset(data["train"], train_seg, data.get("max_seconds", 8.0), frame_stride=student.downsample_rate, min_samples=min_samples)
    batch_seconds = data.get("batch_seconds", 60.0)
    sampler = BucketBatchSampler([train.duration(i) for i in range(len(train))], batch_seconds, shuffle=True, seed=tcfg.seed, num_replicas=world, rank=rank, max_batch_size=int(data.get("batch_size", 1000)))
    valid = None
    if data.get("valid"):
        vset = AudioDataset(data["valid"], _segment_labels(data, "valid"), None, frame_stride=student.downsample_rate, min_samples=min_samples)
        valid = (vset, BucketBatchSampler([vset.duration(i) for i in range(len(vset))], batch_seconds, shuffle=False, num_replicas=world, rank=rank, max_batch_size=int(data.get("batch_size", 1000))), collate)
    logger.info(
        "distilling %s (%d layers) -> student %s (%d layers, width %d); objectives %s",
        task.teacher.config.name, task.teacher.config.num_layers, student.config.name, student.config.num_layers,
        student.config.embed_dim, task.weights,
    )
    trainer = Trainer(tcfg, task, (train, sampler, collate), valid, export=export_student)
    return trainer.train(stop_at=stop_at)
