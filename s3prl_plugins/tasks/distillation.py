"""Teacher -> student distillation as a trainer task, with pluggable objectives.

Objectives (the config's ``objectives`` mapping: a weight, or the objective's own section of settings; a term
with weight 0 or absent is off), each a class of :mod:`s3prl_plugins.tasks.objectives` that declares what it
needs of the two models and takes its own settings:

==============  =================================================================================
``layer_wise``  layer-wise TGM loss (STaR, Jang, Kim and Kim 2024 eq. 3-4); ``normalize``, ``method``
``intra_layer`` intra-layer TGM loss (STaR eq. 5-6); STaR's final loss = layer_wise + intra_layer
``avg_attn``    average attention map KL over all layers (STaR eq. 1)
``last_attn``   last layer's attention map KL (the paper's L_last-attn baseline)
``l1_cos``      DistilHuBERT's L1 + cosine loss of the student's prediction heads against the teacher
                layers the heads name (Chang et al. 2022 eq. 1); the student needs a ``distil`` head;
                ``cos_weight`` (lambda)
``cardinality`` CIF cardinality guidance (Meng et al. 2022 eq. 3; K from its ``frames_per_segment``)
``segment``     segment-based guidance from a given segmentation (eq. 4)
``frame``       frame-based guidance, α against 1 / segment length (eq. 5)
``cluster_kl``  KL between the teacher's and the student's cluster posteriors (Lin et al. 2024
                eq. 7-8; MelHuBERT KD): both need a ``cluster`` (or ``hubert``) head; ``temperature``
==============  =================================================================================

A student with sequence subsampling (``config.subsampling``, Meng et al. 2022) is distilled either
against upsampled outputs -- its ``upsample`` option, Fig. 1a, eq. 1: the heads read the last layer
brought back to the front-end's rate -- or against the teacher's hidden states subsampled the same
way (Fig. 1b, eq. 2): average pooling with the student's stride, or CIF with the student's α (§5.2;
the gradient reaches α through both sides unless ``detach_teacher_alpha``). The guidance objectives
and the ``segments`` topline read a segmentation from ``batch["labels"]`` (per-frame segment labels
at the front-end's rate, padded with -100: the data pipeline's frame labels).

The teacher is frozen (``requires_grad=False``, kept in eval mode whatever ``train()`` is called with)
and runs under ``torch.inference_mode``; its outputs are cloned out of inference mode so the losses can
use them next to the student's autograd graph. Only the layers the objectives use are computed.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from s3prl_plugins.config import check_keys, check_kwargs, check_mapping
from s3prl_plugins.losses import star
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.nn.subsampling import fit_segment_ids
from s3prl_plugins.tasks.objectives import (
    OBJECTIVES,
    Objective,
    Pairing,
    Views,
    build_objective,
    check_objectives,
    cluster_logits,
    setting_names,
)


class DistillationTask(nn.Module):
    """Args:
    teacher: a loaded :class:`SSLModel` (frozen here).
    student: the model to train.
    objectives: objective name -> its weight, or its section (``{weight: 1.0, cos_weight: 0.5}``: the
        objective's fields, :mod:`s3prl_plugins.tasks.objectives`), or a built :class:`Objective`.
    layer_map: student state -> teacher state (:func:`s3prl_plugins.losses.star.map_layers`); None
        needs equal depths.
    max_mismatch: frames by which teacher and student lengths may differ.
    detach_teacher_alpha: pool the teacher's states with a detached α (the gradient then reaches α
        only through the student's side and the guidance).
    """

    # the legal values of the keyword arguments (what configs are checked against)
    RANGES = {"max_mismatch": {"min": 0}}

    def __init__(
        self,
        teacher: SSLModel,
        student: SSLModel,
        objectives: Mapping[str, Union[float, Mapping[str, Any], Objective]],
        layer_map: Union[None, str, Sequence[int]] = None,
        max_mismatch: int = 2,
        detach_teacher_alpha: bool = False,
    ):
        super().__init__()
        built = {name: build_objective(name, spec) for name, spec in objectives.items()}
        self.weights = {k: float(o.weight) for k, o in built.items() if float(o.weight) != 0.0}
        if not self.weights:
            raise ValueError("no distillation objective has a non-zero weight")
        if teacher.downsample_rate != student.downsample_rate:
            raise ValueError(
                f"teacher frames are {teacher.downsample_rate} samples apart and student frames "
                f"{student.downsample_rate}: every objective matches frame by frame, so the student's "
                "front-end must have the teacher's total stride"
            )
        # in the registry's order (the order the terms are summed in)
        self.objectives: List[Objective] = [built[k] for k in OBJECTIVES if k in self.weights]
        sub = student.subsampler
        self.subsampler_kind = None if sub is None else sub.kind
        self.upsampled = student.upsampler is not None
        self.detach_teacher_alpha = detach_teacher_alpha
        if student.mask_emb is not None:
            raise ValueError("the student has a mask embedding that distillation never trains: build it without one")
        self.pair = Pairing(teacher, student, [], int(max_mismatch), self.upsampled, self.objectives)
        for o in self.objectives:
            o.setup(self.pair)
        if student.head is not None and not any(o.trains_head for o in self.objectives):
            raise ValueError(
                "the student has a prediction head that no objective trains: "
                "build it without one or add l1_cos / cluster_kl"
            )
        if any(o.maps_layers for o in self.objectives):
            self.pair.layer_map = star.map_layers(teacher.config.num_layers, student.config.num_layers, layer_map)
        self.layer_map, self.max_mismatch = self.pair.layer_map, self.pair.max_mismatch
        self.keeps_head = any(o.keeps_head for o in self.objectives)
        teacher.requires_grad_(False)
        # the targets in float32 on a CPU too (cpu_bf16 would run a wide teacher's layers in bf16 there)
        self.teacher = teacher.eval().set_speed_options(cpu_bf16="off")
        self.student = student
        self.teacher_states_read = sorted({i for o in self.objectives for i in o.teacher_layers(self.pair)})
        self.teacher_layers_needed = max(self.teacher_states_read, default=0)
        self.need_attention = any(o.attention for o in self.objectives)
        self.need_logits = any(o.logits for o in self.objectives)
        self.needs_segments = self.subsampler_kind == "segments" or any(o.segments for o in self.objectives)

    def train(self, mode: bool = True) -> "DistillationTask":
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_outputs(self, wavs: Tensor, lengths: Tensor):
        """The teacher's hidden states, attention maps and lengths (the layers the objectives read)."""
        states, attns, lengths, _ = self._teacher(wavs, lengths)
        return states, attns, lengths

    def _teacher(self, wavs: Tensor, lengths: Tensor):
        with torch.inference_mode():
            out = self.teacher(
                wavs, lengths, need_attention=self.need_attention, num_layers=max(self.teacher_layers_needed, 1)
            )
            logits = cluster_logits(self.teacher, out.hidden_states[-1]) if self.need_logits else None
        # out of inference mode: these tensors are saved for the student's backward pass
        states = [h.clone() for h in out.hidden_states]
        attns = [a.clone() for a in out.attentions]
        return states, attns, out.lengths.clone(), None if logits is None else logits.clone()

    def forward(self, batch: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tuple[float, float]]]:
        wavs, lengths = batch["wavs"], batch["lengths"]
        segment_ids = batch.get("labels")
        if self.needs_segments and segment_ids is None:
            raise ValueError(
                "this student needs a segmentation (the 'segments' topline, or segment / frame guidance): give "
                "data.segmentation (s3prl_plugins.bin.segment writes one)"
            )
        t_states, t_attns, t_lengths, t_logits = self._teacher(wavs, lengths)
        s_out = self.student(
            wavs,
            lengths,
            need_attention=self.need_attention,
            upsample=self.upsampled,
            segment_ids=segment_ids if self.subsampler_kind == "segments" else None,
        )
        if segment_ids is not None and s_out.subsampled is not None:
            segment_ids = fit_segment_ids(segment_ids.to(wavs.device), s_out.subsampled.frames)
        if self.subsampler_kind is not None and not self.upsampled:
            # Fig. 1b / eq. 2: the teacher's states subsampled like the student's input
            sub = self.student.subsampler
            pooled = s_out.subsampled
            if self.detach_teacher_alpha and pooled.alpha is not None:
                pooled = type(pooled)(pooled.x, pooled.lengths, pooled.alpha.detach(), pooled.frames)
            t_pooled = {}
            for i in self.teacher_states_read:
                t_pooled[i], t_len = sub.pool_like(t_states[i], t_lengths, pooled)
            t_states = [t_pooled.get(i) for i in range(len(t_states))]
            t_lengths = t_len
        frames = torch.minimum(s_out.lengths, t_lengths)
        views = Views(self.pair, s_out, t_states, t_attns, t_lengths, frames, segment_ids, t_logits)
        terms: Dict[str, Tensor] = {o.name: o.term(views) for o in self.objectives}
        loss = sum(self.weights[k] * v for k, v in terms.items())
        batch_size = float(wavs.size(0))
        logs = {k: (float(v.detach()) * batch_size, batch_size) for k, v in terms.items()}
        logs["loss"] = (float(loss.detach()) * batch_size, batch_size)
        if self.subsampler_kind is not None:  # the student's average frame rate (encoder frames per second)
            frames_in = float(s_out.frontend_lengths.sum())
            logs["frame_rate_hz"] = (
                float(s_out.lengths.sum()) * 16000.0 / self.student.downsample_rate,
                max(frames_in, 1.0),
            )
        return loss, logs


def check_sections(
    objectives: Any, loss: Any, prefix: str = "", log: bool = True
) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """A config's ``objectives`` and ``loss`` sections checked and normalised together -- each objective as its full
    section, ``loss`` as the task's own keys (defaults filled in), an objective's setting given in ``loss`` by an
    older config moved to its section -- named under ``prefix`` (``"objective."`` in a compression chain)."""
    objectives, loss = check_objectives(objectives, loss, f"{prefix}objectives", f"{prefix}loss", log=log)
    return objectives, check_loss(loss, f"{prefix}loss")


def check_loss(loss: Any, where: str) -> Dict[str, Any]:
    """The task's own settings (``layer_map``, ``max_mismatch``, ``detach_teacher_alpha``), defaults filled in;
    a misspelt key is named with the nearest of these and of the objectives' settings (an older config's)."""
    given = ("self", "teacher", "student", "objectives")  # the task's arguments that are no loss settings
    names = [n for n in inspect.signature(DistillationTask.__init__).parameters if n not in given]
    check_keys(check_mapping(loss, where), names + setting_names(), where)
    return check_kwargs(
        DistillationTask.__init__,
        loss,
        where,
        skip=("teacher", "student", "objectives"),
        defaults=True,
        ranges=DistillationTask.RANGES,
    )


def student_without_head(task: DistillationTask) -> Optional[SSLModel]:
    """The student as an upstream: a copy with the prediction head dropped (DistilHuBERT's heads are
    removed after distillation, Chang et al. 2022 §3.1)."""
    import copy
    import dataclasses

    student = task.student
    if student.head is None:
        return copy.deepcopy(student).cpu().eval()
    cfg = dataclasses.replace(student.config, head=None)
    out = SSLModel(cfg)
    state = {k: v for k, v in student.state_dict().items() if not k.startswith("head.")}
    out.load_state_dict(state)
    return out.cpu().eval()
