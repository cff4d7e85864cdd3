"""Distillation (STaR, DistilHuBERT-style, attention KD) from one YAML config.

Config sections::

    teacher:    {source: hubert_base | wavlm_base | wav2vec2 | a checkpoint file | a HF folder,
                 model_config: the published .yaml when source is a published STaRHuBERT .ckpt}
    student:    {preset: star_hubert} or {factory: star_hubert_config, args: {...}}
                or {source: a checkpoint to continue from, model_config: ...};
                init_from_teacher: true | {frontend, layers} (DistilHuBERT's initialisation)
    objectives: {layer_wise: 1.0, intra_layer: 1.0}          # see s3prl_plugins.tasks.distillation
                or an objective's own section: {l1_cos: {weight: 1.0, cos_weight: 0.5}}
    loss:       {layer_map: null, max_mismatch: 2, detach_teacher_alpha: false}   # how the two are paired
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
import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from s3prl_plugins.config import (
    ConfigError,
    check_fields,
    check_keys,
    check_mapping,
    check_type,
    from_dict,
    nearest,
)
from s3prl_plugins.data.dataset import batch_loader, split_dataset
from s3prl_plugins.models import factories
from s3prl_plugins.models.checkpoint import save_checkpoint
from s3prl_plugins.models.loading import load_pretrained
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.tasks.distillation import DistillationTask, check_sections, student_without_head
from s3prl_plugins.train.lock import rank0_lock
from s3prl_plugins.train.pretrain import build_from_section, check_model_section
from s3prl_plugins.train.trainer import Trainer, TrainerConfig

logger = logging.getLogger(__name__)

DISTILL_SECTIONS = ("teacher", "student", "objectives", "loss", "data", "trainer")


@dataclass
class DistillDataConfig:
    """The ``data:`` section of distillation: Kaldi data dirs (and ``.seg`` files for CIF guidance)."""

    train: str
    valid: Optional[str] = None
    max_seconds: Optional[float] = field(default=8.0, metadata={"gt": 0})
    batch_seconds: float = field(default=60.0, metadata={"gt": 0})
    batch_size: int = field(default=1000, metadata={"min": 1})
    train_segmentation: Optional[str] = None
    valid_segmentation: Optional[str] = None

    def __post_init__(self) -> None:
        check_fields(self, "data")


def check_teacher_section(section: Any) -> Dict[str, Any]:
    """``teacher: SOURCE`` or ``teacher: {source, model_config}``, normalised to the mapping."""
    if isinstance(section, str):
        section = {"source": section}
    section = check_mapping(section, "teacher")
    check_keys(section, ("source", "model_config"), "teacher")
    if not section.get("source"):
        raise ConfigError(
            "teacher.source is empty: give a hub name (hubert_base, wavlm_base, wav2vec2) or a checkpoint path"
        )
    return {
        "source": check_type(section["source"], str, "teacher.source"),
        "model_config": check_type(section.get("model_config"), Optional[str], "teacher.model_config"),
    }


def check_student_section(section: Any) -> Dict[str, Any]:
    """One of ``{preset}``, ``{factory, args}``, ``{source, model_config}``, each with an optional
    ``init_from_teacher`` (true or ``{frontend, layers}``)."""
    section = dict(check_mapping(section, "student"))
    check_keys(section, ("preset", "factory", "args", "source", "model_config", "init_from_teacher"), "student")
    kinds = [k for k in ("preset", "factory", "source") if k in section]
    if len(kinds) != 1:
        raise ConfigError(
            f"student: give exactly one of preset, factory (+ args) or source (+ model_config), not {kinds or 'none'}"
        )
    init = section.pop("init_from_teacher", None)
    if isinstance(init, dict):
        check_keys(init, ("frontend", "layers"), "student.init_from_teacher")
        init = {k: check_type(v, bool, f"student.init_from_teacher.{k}") for k, v in init.items()}
    elif init is not None:
        init = check_type(init, bool, "student.init_from_teacher")
    out: Dict[str, Any]
    if kinds == ["preset"]:
        check_keys(section, ("preset",), "student")
        name = section["preset"]
        if name not in factories.PRESETS:
            raise ConfigError(
                f"student.preset: unknown preset {name!r}{nearest(str(name), factories.PRESETS)}; "
                f"presets: {', '.join(sorted(factories.PRESETS))}"
            )
        out = {"preset": name}
    elif kinds == ["factory"]:
        out = check_model_section(section, "student")
    else:
        check_keys(section, ("source", "model_config"), "student")
        out = {
            "source": str(section["source"]),
            "model_config": check_type(section.get("model_config"), Optional[str], "student.model_config"),
        }
    if init is not None:
        out["init_from_teacher"] = init
    return out


def check_task_sections(config: Dict[str, Any], log: bool = True) -> Dict[str, Any]:
    """teacher, student, objectives and loss checked and normalised (what :func:`build_task` reads); an
    objective's settings given in ``loss`` by an older config are moved to its section."""
    for key in ("teacher", "student", "objectives"):
        if key not in config:
            raise ConfigError(f"config has no '{key}' section")
    objectives, loss = check_sections(config["objectives"], config.get("loss"), log=log)
    return {
        "teacher": check_teacher_section(config["teacher"]),
        "student": check_student_section(config["student"]),
        "objectives": objectives,
        "loss": loss,
    }


def migrate_run_config(saved: Dict[str, Any]) -> Dict[str, Any]:
    """A saved run's config in today's form (an objective's settings in its own section), so that resuming
    an experiment of an older release compares like with like; left as it is where it does not read."""
    try:
        objectives, loss = check_sections(saved["objectives"], saved.get("loss"), log=False)
        return {**saved, "objectives": objectives, "loss": loss}
    except (KeyError, ValueError):
        return saved


def check_distill_config(config: Any) -> Dict[str, Any]:
    """The whole distillation config checked and normalised (plain data): unknown sections and keys,
    types and ranges refused with the key named -- before anything is loaded or written."""
    config = check_mapping(config, "config")
    check_keys(config, DISTILL_SECTIONS, "")
    for key in ("data", "trainer"):
        if key not in config:
            raise ConfigError(f"config has no '{key}' section")
    trainer = TrainerConfig.from_dict(config["trainer"])
    data = from_dict(DistillDataConfig, config["data"], "data")
    return {**check_task_sections(config), "data": dataclasses.asdict(data), "trainer": dataclasses.asdict(trainer)}


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
            raise ValueError(
                f"init_from_teacher: the teacher has no {key!r} (its architecture differs: {teacher.config.name})"
            )
        if tuple(t_state[key].shape) != tuple(state[key].shape):
            raise ValueError(
                f"init_from_teacher: {key} is {tuple(state[key].shape)} in the student, "
                f"{tuple(t_state[key].shape)} in the teacher: give the student the teacher's shape there "
                "(DistilHuBERT keeps HuBERT's CNN and layer widths)"
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
    if task.keeps_head:
        save_checkpoint(
            path, copy.deepcopy(task.student).cpu().eval(), kind="distillation", objectives=dict(task.weights)
        )
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
    """The distillation task of a config's teacher, student, objectives and loss sections."""
    config = {**config, **check_task_sections(config)}
    section = config["teacher"]
    teacher = load_pretrained(section["source"], model_config=section.get("model_config"))
    student = build_student(config["student"])
    init = config["student"].get("init_from_teacher")
    if init:
        opts = init if isinstance(init, dict) else {}
        unknown = sorted(set(opts) - {"frontend", "layers"})
        if unknown:
            raise ValueError(f"student.init_from_teacher: unknown key(s) {unknown} (frontend, layers)")
        copied = init_from_teacher(student, teacher, bool(opts.get("frontend", True)), bool(opts.get("layers", True)))
        logger.info(
            "student initialised from the teacher: %d tensors (CNN, projection, positional conv, first layers)",
            len(copied),
        )
    return DistillationTask(teacher, student, config["objectives"], **config["loss"])


def _segment_labels(data: Dict[str, Any], split: str):
    """Per-frame segment labels of ``data.<split>_segmentation`` (checked against the audio), or None."""
    path = data.get(f"{split}_segmentation")
    if not path:
        return None
    from s3prl_plugins.segment.segmentation import check_against_audio, labels_for, read_segmentation

    seg = read_segmentation(str(path))
    missing = check_against_audio(seg, data[split])
    if missing:
        logger.warning(
            "%s: %d utterance(s) of %s have no segmentation and are left out, e.g. %s",
            path,
            len(missing),
            data[split],
            missing[:3],
        )
    return labels_for(seg)


def run_distill(config: Dict[str, Any], stop_at: Optional[int] = None, restart: bool = False) -> Dict[str, float]:
    """Distil from a parsed YAML config; returns the last validation statistics.

    ``stop_at`` interrupts after that many updates (see :meth:`Trainer.train`); ``restart`` starts
    over in an experiment that holds checkpoints (they are moved aside)."""
    config = check_distill_config(config)
    tcfg = TrainerConfig(**config["trainer"])
    # the experiment's one writer, before anything is built or written (the trainer takes it again)
    with rank0_lock(tcfg.exp_dir):
        return _distill(config, tcfg, stop_at, restart)


def _distill(config: Dict[str, Any], tcfg: TrainerConfig, stop_at: Optional[int], restart: bool) -> Dict[str, float]:
    torch.manual_seed(tcfg.seed)  # the same initial student on every rank
    task = build_task(config)
    student = task.student
    data = config["data"]
    # the teacher reads the student's input: the longer of the two shortest inputs
    shape = {"frame_stride": student.downsample_rate, "min_samples": max(student.min_samples, task.teacher.min_samples)}
    train = split_dataset(data, "train", _segment_labels(data, "train"), **shape)
    vset = split_dataset(data, "valid", _segment_labels(data, "valid") if data.get("valid") else None, **shape)
    valid = batch_loader(vset, data, shuffle=False) if vset is not None else None
    logger.info(
        "distilling %s (%d layers) -> student %s (%d layers, width %d); objectives %s",
        task.teacher.config.name,
        task.teacher.config.num_layers,
        student.config.name,
        student.config.num_layers,
        student.config.embed_dim,
        task.weights,
    )
    # resuming compares the saved config with this one: the student's shape, the teacher, the objectives
    # and the loss are fixed, trainer settings are applied
    run_config = {**config, "student": {**config["student"], "built": student.config.to_dict()}}
    trainer = Trainer(
        tcfg,
        task,
        batch_loader(train, data, shuffle=True, seed=tcfg.seed),
        valid,
        export=export_student,
        run_config=run_config,
        fixed_keys=("teacher", "student", "objectives", "loss"),
        migrate=migrate_run_config,
    )
    return trainer.train(stop_at=stop_at, restart=restart)
