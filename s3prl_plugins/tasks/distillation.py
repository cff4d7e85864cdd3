"""Teacher -> student distillation as a trainer task, with pluggable objectives.

Objectives (weights in the config's ``objectives`` mapping; a term with weight 0 or absent is off):

==============  =================================================================================
``layer_wise``  layer-wise TGM loss (STaR, Jang, Kim and Kim 2024 eq. 3-4)
``intra_layer`` intra-layer TGM loss (STaR eq. 5-6); STaR's final loss = layer_wise + intra_layer
``avg_attn``    average attention map KL over all layers (STaR eq. 1)
``last_attn``   last layer's attention map KL (the paper's L_last-attn baseline)
``l1_cos``      DistilHuBERT's L1 + cosine loss of the student's prediction heads against the teacher
                layers the heads name (Chang et al. 2022 eq. 1); the student needs a ``distil`` head
==============  =================================================================================

The teacher is frozen (``requires_grad=False``, kept in eval mode whatever ``train()`` is called with)
and runs under ``torch.inference_mode``; its outputs are cloned out of inference mode so the losses can
use them next to the student's autograd graph. Only the layers the objectives use are computed.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from s3prl_plugins.losses import star
from s3prl_plugins.losses.distil import l1_cos_loss
from s3prl_plugins.models.ssl_model import SSLModel

OBJECTIVES = ("layer_wise", "intra_layer", "avg_attn", "last_attn", "l1_cos")
ATTENTION_OBJECTIVES = ("avg_attn", "last_attn")


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
    """

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
        elif student.head is not None:
            raise ValueError("the student has a prediction head that no objective trains: build it without one or add l1_cos")
        self.teacher_layers_needed = max(self.layer_map + self.head_layers)
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
        # out of inference mode: these tensors are saved for the student's backward pass
        states = [h.clone() for h in out.hidden_states]
        attns = [a.clone() for a in out.attentions]
        return states, attns, out.lengths.clone()

    def forward(self, batch: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tuple[float, float]]]:
        wavs, lengths = batch["wavs"], batch["lengths"]
        t_states, t_attns, t_lengths = self.teacher_outputs(wavs, lengths)
        s_out = self.student(wavs, lengths, need_attention=self.need_attention)
        frames = torch.minimum(s_out.lengths, t_lengths)
        terms: Dict[str, Tensor] = {}
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
            preds = self.student.head(s_out.hidden_states[-1])  # (B, heads, T, D)
            targets = [t_states[i] for i in self.head_layers]
            terms["l1_cos"] = l1_cos_loss(targets, list(preds.unbind(1)), frames, self.cos_weight, self.max_mismatch)
        loss = sum(self.weights[k] * v for k, v in terms.items())
        batch_size = float(wavs.size(0))
        logs = {k: (float(v.detach()) * batch_size, batch_size) for k, v in terms.items()}
        logs["loss"] = (float(loss.detach()) * batch_size, batch_size)
        return loss, logs


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
