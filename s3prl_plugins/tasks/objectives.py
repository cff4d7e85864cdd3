"""The distillation objectives, one class each, collected in :data:`OBJECTIVES` (the order their terms are
summed in).

An objective declares what it needs of the two models -- the student -> teacher layer map, attention maps,
cluster logits, a segmentation, a CIF student -- so that :class:`~s3prl_plugins.tasks.distillation.
DistillationTask` computes only that; ``setup`` checks the models it is given (a ``ValueError`` with the
fix) and ``term`` computes its loss from one forward pass's :class:`Views`. A new objective is one class
here, registered with :func:`register_objective` (the config's ``objectives`` names it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Type

import torch
from torch import Tensor

from s3prl_plugins.losses import cif as cif_losses
from s3prl_plugins.losses import kd, star
from s3prl_plugins.losses.distil import l1_cos_loss
from s3prl_plugins.models.ssl_model import SSLModel

# An objective sees the task that holds it (a DistillationTask: its weights, layer map, loss settings and
# models) without importing its module, which imports this one.
Task = Any


@dataclass
class Views:
    """What one forward pass computed, read by the objectives: the student's output, the teacher's states
    (subsampled like the student's input for a subsampled student, Fig. 1b), attention maps and lengths,
    the frames both have, the segmentation, the teacher's cluster logits; ``cache`` holds terms that are
    computed together (the two TGM losses share their products)."""

    task: Task
    student: Any  # SSLOutput
    teacher_states: List[Optional[Tensor]]
    teacher_attentions: List[Tensor]
    teacher_lengths: Tensor
    frames: Tensor
    segment_ids: Optional[Tensor]
    teacher_logits: Optional[Tensor]
    cache: Dict[str, Any] = field(default_factory=dict)


class Objective:
    """One distillation objective (see the module docstring)."""

    name: ClassVar[str] = ""
    maps_layers: ClassVar[bool] = False  # uses the student -> teacher layer map (``loss.layer_map``)
    attention: ClassVar[bool] = False  # compares both models' head-averaged attention maps
    logits: ClassVar[bool] = False  # compares both models' cluster posteriors
    segments: ClassVar[bool] = False  # reads a segmentation (``batch["labels"]``)
    cif: ClassVar[bool] = False  # guides a CIF student's weights α
    trains_head: ClassVar[bool] = False  # trains the student's prediction head

    def setup(self, task: Task, teacher: SSLModel, student: SSLModel) -> None:
        """Refuse models this objective cannot compare (``ValueError`` naming the fix)."""

    def teacher_layers(self, task: Task) -> List[int]:
        """The teacher's hidden states (0: the input to the first layer) the term reads."""
        return list(task.layer_map) if self.maps_layers else []

    def term(self, v: Views) -> Tensor:
        raise NotImplementedError


OBJECTIVES: Dict[str, Objective] = {}


def register_objective(cls: Type[Objective]) -> Type[Objective]:
    """Class decorator: make an objective available to distillation configs under ``cls.name``."""
    if not cls.name or cls.name in OBJECTIVES:
        raise ValueError(f"a distillation objective needs a new name, not {cls.name!r}")
    OBJECTIVES[cls.name] = cls()
    return cls


# ------------------------------------------------------------------------------------ STaR (TGM, attention)
class _TGM(Objective):
    maps_layers = True

    def setup(self, task, teacher, student):
        if task.upsampled:
            raise ValueError(
                "an upsampler (Fig. 1a) feeds the prediction heads only: "
                "use l1_cos, or subsample the targets (no upsample)"
            )

    def term(self, v: Views) -> Tensor:
        if "tgm" not in v.cache:  # both TGM losses at once: the D x D form shares its products
            t = v.task
            t_sel = [v.teacher_states[i] for i in t.layer_map]
            v.cache["tgm"] = star.tgm_losses(
                t_sel,
                v.student.hidden_states,
                v.frames,
                layer_wise="layer_wise" in t.weights,
                intra_layer="intra_layer" in t.weights,
                normalize=t.normalize,
                method=t.method,
                max_mismatch=t.max_mismatch,
            )
        return v.cache["tgm"][self.name]


@register_objective
class LayerWise(_TGM):
    """Layer-wise TGM loss (Jang, Kim and Kim 2024, STaR eq. 3-4): :func:`s3prl_plugins.losses.star.tgm_losses`."""

    name = "layer_wise"


@register_objective
class IntraLayer(_TGM):
    """Intra-layer TGM loss (STaR eq. 5-6); STaR's final loss is layer_wise + intra_layer."""

    name = "intra_layer"


class _Attention(Objective):
    maps_layers = True
    attention = True

    def setup(self, task, teacher, student):
        if student.subsampler is not None:
            raise ValueError(
                "attention objectives compare frame-by-frame maps: not available with a subsampled student"
            )

    def teacher_maps(self, v: Views) -> List[Tensor]:
        return [v.teacher_attentions[i - 1] for i in v.task.layer_map[1:]]


@register_objective
class AverageAttention(_Attention):
    """Average attention map KL over all layers (STaR eq. 1): :func:`s3prl_plugins.losses.star.avg_attention_kl`."""

    name = "avg_attn"

    def term(self, v: Views) -> Tensor:
        return star.avg_attention_kl(
            self.teacher_maps(v), v.student.attentions, v.frames, max_mismatch=v.task.max_mismatch
        )


@register_objective
class LastAttention(_Attention):
    """The last layer's attention map KL (STaR's L_last-attn baseline)."""

    name = "last_attn"

    def term(self, v: Views) -> Tensor:
        return star.last_attention_kl(
            self.teacher_maps(v), v.student.attentions, v.frames, max_mismatch=v.task.max_mismatch
        )


# ------------------------------------------------------------------------------------------- DistilHuBERT
@register_objective
class L1Cosine(Objective):
    """DistilHuBERT's L1 + cosine loss of the student's prediction heads against the teacher layers the
    heads name (Chang et al. 2022 eq. 1): :func:`s3prl_plugins.losses.distil.l1_cos_loss`. On an upsampled
    student (Meng et al. 2022 Fig. 1a, eq. 1) the heads read the last layer at the teacher's rate."""

    name = "l1_cos"
    trains_head = True

    def setup(self, task, teacher, student):
        if student.head is None or student.config.head.get("type") != "distil":
            raise ValueError(
                "objective l1_cos needs a student with a 'distil' prediction head (head: {type: distil, layers: [...]})"
            )
        layers = list(student.head.layers)
        if max(layers) > teacher.config.num_layers:
            raise ValueError(
                f"the student's head predicts teacher layer {max(layers)}; the teacher has {teacher.config.num_layers}"
            )
        if student.head.out_dim != teacher.config.embed_dim:
            raise ValueError(
                f"the student's head predicts width {student.head.out_dim}; the teacher's is {teacher.config.embed_dim}"
            )

    def teacher_layers(self, task):
        return list(task.student.head.layers)

    def term(self, v: Views) -> Tensor:
        task, s = v.task, v.student
        frames = v.frames
        if task.upsampled:  # Fig. 1a / eq. 1: heads on the upsampled output, at the teacher's rate
            preds = task.student.head(s.upsampled)
            frames = torch.minimum(s.frontend_lengths, v.teacher_lengths)
        else:
            preds = task.student.head(s.hidden_states[-1])  # (B, heads, T, D)
        targets = [v.teacher_states[i] for i in task.student.head.layers]
        return l1_cos_loss(targets, list(preds.unbind(1)), frames, task.cos_weight, task.max_mismatch)


# ------------------------------------------------------------------------------------------- CIF guidance
class _Guidance(Objective):
    cif = True

    def setup(self, task, teacher, student):
        sub = student.subsampler
        if sub is None or sub.kind != "cif":
            raise ValueError(
                f"objective(s) ['{self.name}'] guide a CIF module: the student needs subsampling: {{type: cif}}"
            )


@register_objective
class Cardinality(_Guidance):
    """CIF cardinality guidance (Meng et al. 2022 eq. 3; K from ``frames_per_segment``)."""

    name = "cardinality"

    def term(self, v: Views) -> Tensor:
        return cif_losses.cardinality_loss(
            v.student.subsampled.alpha, v.student.frontend_lengths, v.task.frames_per_segment
        )


@register_objective
class SegmentGuidance(_Guidance):
    """Segment-based guidance from a given segmentation (Meng et al. 2022 eq. 4)."""

    name = "segment"
    segments = True

    def term(self, v: Views) -> Tensor:
        return cif_losses.segment_loss(v.student.subsampled.alpha, v.segment_ids, v.student.frontend_lengths)


@register_objective
class FrameGuidance(_Guidance):
    """Frame-based guidance: α against 1 / segment length (Meng et al. 2022 eq. 5)."""

    name = "frame"
    segments = True

    def term(self, v: Views) -> Tensor:
        return cif_losses.frame_loss(v.student.subsampled.alpha, v.segment_ids, v.student.frontend_lengths)


# --------------------------------------------------------------------------------------- MelHuBERT KD
@register_objective
class ClusterKL(Objective):
    """KL between the teacher's and the student's cluster posteriors (Lin et al. 2024 eq. 7-8; MelHuBERT
    KD): both need a ``cluster`` (or ``hubert``) head; ``temperature``."""

    name = "cluster_kl"
    logits = True
    trains_head = True

    def setup(self, task, teacher, student):
        for who, m in (("student", student), ("teacher", teacher)):
            if m.head is None or m.config.head.get("type") not in ("cluster", "hubert"):
                raise ValueError(f"objective cluster_kl needs a {who} with a cluster (or hubert) prediction head")
        if num_classes(student) != num_classes(teacher):
            raise ValueError(
                f"the student's head predicts {num_classes(student)} clusters, the teacher's {num_classes(teacher)}"
            )
        if student.subsampler is not None:
            raise ValueError("cluster_kl matches posteriors frame by frame: not available with a subsampled student")

    def teacher_layers(self, task):
        return [task.teacher.config.num_layers]

    def term(self, v: Views) -> Tensor:
        return kd.cluster_kl(
            v.teacher_logits, cluster_logits(v.task.student, v.student.hidden_states[-1]), v.frames, v.task.temperature
        )


def num_classes(model: SSLModel) -> int:
    head = model.config.head
    return int(
        head["num_classes"][0]
        if isinstance(head.get("num_classes"), (list, tuple))
        else head.get("num_classes", 512 if head["type"] == "cluster" else 504)
    )


def cluster_logits(model: SSLModel, last: Tensor) -> Tensor:
    """The cluster logits of a model's last layer (eq. 2 / 8; a HuBERT head's first codebook)."""
    logits = model.head(last)
    return logits[0] if isinstance(logits, list) else logits
