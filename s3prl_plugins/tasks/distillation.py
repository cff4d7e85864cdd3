"""Teacher -> student distillation as a trainer task, with pluggable objectives.

Objectives (weights in the config's ``objectives`` mapping; a term with weight 0 or absent is off):

==============  =================================================================================
``layer_wise``  layer-wise TGM loss (STaR, Jang, Kim and Kim 2024 eq. 3-4)
``intra_layer`` intra-layer TGM loss (STaR eq. 5-6); STaR's final loss = layer_wise + intra_layer
``avg_attn``    average attention map KL over all layers (STaR eq. 1)
``last_attn``   last layer's attention map KL (the paper's L_last-attn baseline)
``l1_cos``      DistilHuBERT's L1 + cosine loss of the student's prediction heads against the teacher
                layers the heads name (Chang et al. 2022 eq. 1); the student needs a ``distil`` head
``cardinality`` CIF cardinality guidance (Meng et al. 2022 eq. 3; K from ``frames_per_segment``)
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

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from s3prl_plugins.losses import cif as cif_losses
from s3prl_plugins.losses import kd
from s3prl_plugins.losses import star
from s3prl_plugins.losses.distil import l1_cos_loss
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.nn.subsampling import fit_segment_ids

OBJECTIVES = ("layer_wise", "intra_layer", "avg_attn", "last_attn", "l1_cos", "cardinality", "segment", "frame", "cluster_kl")
ATTENTION_OBJECTIVES = ("avg_attn", "last_attn")
GUIDANCE_OBJECTIVES = ("cardinality", "segment", "frame")


class DistillationTask(nn.Module):
    """Args:
        teacher: a loaded :class:`SSLModel` (frozen here).
        student: the model to train.
        objectives: weight per objective (see the module docstring).
        layer_map: student state -> teacher state (:func:`s3prl_plugins.losses.star.map_layers`); None
            needs equal depths.
        normalize, method: passed to the TGM losses.
        cos_weight: DistilHuBERT's lambda.
        max_mismatch: frames by which teacher and student lengths may differ.
        frames_per_segment: the cardinality target K = T / frames_per_segment (default: the student's
            ``subsampling.stride``).
        detach_teacher_alpha: pool the teacher's states with a detached α (the gradient then reaches α
            only through the student's side and the guidance).
        temperature: of ``cluster_kl`` (both distributions).
    """

    # the legal values of the keyword arguments (what configs are checked against)
    RANGES = {"cos_weight": {"min": 0}, "max_mismatch": {"min": 0}, "frames_per_segment": {"gt": 0}, "temperature": {"gt": 0}}

    def __init__(
        self,
        teacher: SSLModel,
        student: SSLModel,
        objectives: Mapping[str, float],
        layer_map: Union[None, str, Sequence[int]] = None,
        normalize: str = "l2",
        method: str = "auto",
        cos_weight: float = 1.0,
        max_mismatch: int = 2,
        frames_per_segment: Optional[float] = None,
        detach_teacher_alpha: bool = False,
        temperature: float = 1.0,
    ):
        super().__init__()
        unknown = sorted(set(objectives) - set(OBJECTIVES))
        if unknown:
            raise ValueError(f"unknown objective(s) {unknown}; choose from {list(OBJECTIVES)}")
        self.weights = {k: float(v) for k, v in objectives.items() if float(v) != 0.0}
        if not self.weights:
            raise ValueError("no distillation objective has a non-zero weight")
        if teacher.downsample_rate != student.downsample_rate:
            raise ValueError(
                f"teacher frames are {teacher.downsample_rate} samples apart and student frames "
                f"{student.downsample_rate}: every objective matches frame by frame, so the student's "
                "front-end must have the teacher's total stride"
            )
        sub = student.subsampler
        self.subsampler_kind = None if sub is None else sub.kind
        guidance = [k for k in GUIDANCE_OBJECTIVES if k in self.weights]
        if guidance and (sub is None or sub.kind != "cif"):
            raise ValueError(f"objective(s) {guidance} guide a CIF module: the student needs subsampling: {{type: cif}}")
        if sub is not None and any(k in self.weights for k in ATTENTION_OBJECTIVES):
            raise ValueError("attention objectives compare frame-by-frame maps: not available with a subsampled student")
        self.upsampled = student.upsampler is not None
        if self.upsampled and any(k in self.weights for k in ("layer_wise", "intra_layer")):
            raise ValueError("an upsampler (Fig. 1a) feeds the prediction heads only: use l1_cos, or subsample the targets (no upsample)")
        self.frames_per_segment = float(frames_per_segment or (sub.stride if sub is not None else 1))
        self.detach_teacher_alpha = detach_teacher_alpha
        if student.mask_emb is not None:
            raise ValueError("the student has a mask embedding that distillation never trains: build it without one")
        t_layers, s_layers = teacher.config.num_layers, student.config.num_layers
        self.layer_map: List[int] = []
        if any(k in self.weights for k in ("layer_wise", "intra_layer") + ATTENTION_OBJECTIVES):
            self.layer_map = star.map_layers(t_layers, s_layers, layer_map)
        self.head_layers: List[int] = []
        if "l1_cos" in self.weights:
            if student.head is None or student.config.head.get("type") != "distil":
                raise ValueError("objective l1_cos needs a student with a 'distil' prediction head (head: {type: distil, layers: [...]})")
            self.head_layers = list(student.head.layers)
            if max(self.head_layers) > t_layers:
                raise ValueError(f"the student's head predicts teacher layer {max(self.head_layers)}; the teacher has {t_layers}")
            if student.head.out_dim != teacher.config.embed_dim:
                raise ValueError(f"the student's head predicts width {student.head.out_dim}; the teacher's is {teacher.config.embed_dim}")
        elif "cluster_kl" in self.weights:
            for who, m in (("student", student), ("teacher", teacher)):
                if m.head is None or m.config.head.get("type") not in ("cluster", "hubert"):
                    raise ValueError(f"objective cluster_kl needs a {who} with a cluster (or hubert) prediction head")
            if _num_classes(student) != _num_classes(teacher):
                raise ValueError(f"the student's head predicts {_num_classes(student)} clusters, the teacher's {_num_classes(teacher)}")
            if sub is not None:
                raise ValueError("cluster_kl matches posteriors frame by frame: not available with a subsampled student")
        elif student.head is not None:
            raise ValueError("the student has a prediction head that no objective trains: build it without one or add l1_cos / cluster_kl")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, not {temperature}")
        self.temperature = float(temperature)
        self.teacher_layers_needed = max(self.layer_map + self.head_layers + ([t_layers] if "cluster_kl" in self.weights else []))
        self.need_attention = any(k in self.weights for k in ATTENTION_OBJECTIVES)
        self.normalize, self.method, self.cos_weight, self.max_mismatch = normalize, method, cos_weight, max_mismatch
        teacher.requires_grad_(False)
        self.teacher = teacher.eval()
        self.student = student

    def train(self, mode: bool = True) -> "DistillationTask":
        super().train(mode)
        self.teacher.eval()
        return self

    def teacher_outputs(self, wavs: Tensor, lengths: Tensor):
        with torch.inference_mode():
            out = self.teacher(wavs, lengths, need_attention=self.need_attention, num_layers=max(self.teacher_layers_needed, 1))
            logits = _logits(self.teacher, out.hidden_states[-1]) if "cluster_kl" in self.weights else None
        # out of inference mode: these tensors are saved for the student's backward pass
        states = [h.clone() for h in out.hidden_states]
        attns = [a.clone() for a in out.attentions]
        self._teacher_logits = None if logits is None else logits.clone()
        return states, attns, out.lengths.clone()

    def forward(self, batch: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tuple[float, float]]]:
        wavs, lengths = batch["wavs"], batch["lengths"]
        segment_ids = batch.get("labels")
        needs_segments = self.subsampler_kind == "segments" or any(k in self.weights for k in ("segment", "frame"))
        if needs_segments and segment_ids is None:
            raise ValueError(
                "this student needs a segmentation (the 'segments' topline, or segment / frame guidance): give "
                "data.segmentation (s3prl_plugins.bin.segment writes one)"
            )
        t_states, t_attns, t_lengths = self.teacher_outputs(wavs, lengths)
        s_out = self.student(
            wavs, lengths, need_attention=self.need_attention, upsample=self.upsampled,
            segment_ids=segment_ids if self.subsampler_kind == "segments" else None,
        )
        terms: Dict[str, Tensor] = {}
        if segment_ids is not None and s_out.subsampled is not None:
            segment_ids = fit_segment_ids(segment_ids.to(wavs.device), s_out.subsampled.frames)
        if self.subsampler_kind is not None and not self.upsampled:
            # Fig. 1b / eq. 2: the teacher's states subsampled like the student's input
            sub = self.student.subsampler
            pooled = s_out.subsampled
            if self.detach_teacher_alpha and pooled.alpha is not None:
                pooled = type(pooled)(pooled.x, pooled.lengths, pooled.alpha.detach(), pooled.frames)
            needed = set(self.layer_map) | set(self.head_layers)
            t_pooled = {}
            for i in needed:
                t_pooled[i], t_len = sub.pool_like(t_states[i], t_lengths, pooled)
            t_states = [t_pooled.get(i) for i in range(len(t_states))]
            t_lengths = t_len
        frames = torch.minimum(s_out.lengths, t_lengths)
        kw = dict(normalize=self.normalize, method=self.method, max_mismatch=self.max_mismatch)
        if self.layer_map:
            t_sel = [t_states[i] for i in self.layer_map]
            lw, il = "layer_wise" in self.weights, "intra_layer" in self.weights
            if lw or il:  # together: the D x D form shares its products between both losses
                terms.update(star.tgm_losses(t_sel, s_out.hidden_states, frames, layer_wise=lw, intra_layer=il, **kw))
            if self.need_attention:
                t_att = [t_attns[i - 1] for i in self.layer_map[1:]]
                if "avg_attn" in self.weights:
                    terms["avg_attn"] = star.avg_attention_kl(t_att, s_out.attentions, frames, max_mismatch=self.max_mismatch)
                if "last_attn" in self.weights:
                    terms["last_attn"] = star.last_attention_kl(t_att, s_out.attentions, frames, max_mismatch=self.max_mismatch)
        if "l1_cos" in self.weights:
            if self.upsampled:  # Fig. 1a / eq. 1: heads on the upsampled output, at the teacher's rate
                preds = self.student.head(s_out.upsampled)
                frames = torch.minimum(s_out.frontend_lengths, t_lengths)
            else:
                preds = self.student.head(s_out.hidden_states[-1])  # (B, heads, T, D)
            targets = [t_states[i] for i in self.head_layers]
            terms["l1_cos"] = l1_cos_loss(targets, list(preds.unbind(1)), frames, self.cos_weight, self.max_mismatch)
        if "cluster_kl" in self.weights:
            terms["cluster_kl"] = kd.cluster_kl(self._teacher_logits, _logits(self.student, s_out.hidden_states[-1]), frames, self.temperature)
            self._teacher_logits = None
        if self.subsampler_kind == "cif":
            alpha, n = s_out.subsampled.alpha, s_out.frontend_lengths
            if "cardinality" in self.weights:
                terms["cardinality"] = cif_losses.cardinality_loss(alpha, n, self.frames_per_segment)
            if "segment" in self.weights:
                terms["segment"] = cif_losses.segment_loss(alpha, segment_ids, n)
            if "frame" in self.weights:
                terms["frame"] = cif_losses.frame_loss(alpha, segment_ids, n)
        loss = sum(self.weights[k] * v for k, v in terms.items())
        batch_size = float(wavs.size(0))
        logs = {k: (float(v.detach()) * batch_size, batch_size) for k, v in terms.items()}
        logs["loss"] = (float(loss.detach()) * batch_size, batch_size)
        if self.subsampler_kind is not None:  # the student's average frame rate (encoder frames per second)
            frames_in = float(s_out.frontend_lengths.sum())
            logs["frame_rate_hz"] = (float(s_out.lengths.sum()) * 16000.0 / self.student.downsample_rate, max(frames_in, 1.0))
        return loss, logs


def _num_classes(model: SSLModel) -> int:
    head = model.config.head
    return int(head["num_classes"][0] if isinstance(head.get("num_classes"), (list, tuple)) else head.get("num_classes", 512 if head["type"] == "cluster" else 504))


def _logits(model: SSLModel, last: Tensor) -> Tensor:
    """The cluster logits of a model's last layer (eq. 2 / 8; a HuBERT head's first codebook)."""
    logits = model.head(last)
    return logits[0] if isinstance(logits, list) else logits


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
