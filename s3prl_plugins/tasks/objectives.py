"""The distillation objectives, one class each, collected in :data:`OBJECTIVES` (the order their terms are
summed in).

An objective is a dataclass: its fields are its settings (``weight`` and what else it takes, typed and
range-checked from their annotations and metadata), given in the config as a number (the weight) or as its
own section::

    objectives: {layer_wise: 1.0, l1_cos: {weight: 1.0, cos_weight: 0.5}}

It declares what it needs of the two models -- the student -> teacher layer map, attention maps, cluster
logits, a segmentation, a CIF student -- so that :class:`~s3prl_plugins.tasks.distillation.DistillationTask`
computes only that, and what it keeps of the student (``keeps_head``); ``setup`` checks the models it is
given (a ``ValueError`` with the fix) and ``term`` computes its loss from one forward pass's :class:`Views`.
A new objective is one class here, registered with :func:`register_objective`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type

import torch
from torch import Tensor

from s3prl_plugins.config import ConfigError, check_keys, check_mapping, check_range, check_type, from_dict, nearest
from s3prl_plugins.losses import cif as cif_losses
from s3prl_plugins.losses import kd, star
from s3prl_plugins.losses.distil import l1_cos_loss
from s3prl_plugins.models.ssl_model import SSLModel

logger = logging.getLogger(__name__)


@dataclass
class Pairing:
    """What the objectives of one task share: the two models, the student -> teacher layer map
    (:func:`s3prl_plugins.losses.star.map_layers`; empty when no objective maps layers), the frames by which
    the two models' lengths may differ, whether the student is upsampled (Meng et al. 2022 Fig. 1a), and the
    task's objectives (terms computed together look for their mates here)."""

    teacher: SSLModel
    student: SSLModel
    layer_map: List[int]
    max_mismatch: int
    upsampled: bool
    objectives: List["Objective"] = field(default_factory=list)


@dataclass
class Views:
    """What one forward pass computed, read by the objectives: the student's output, the teacher's states
    (subsampled like the student's input for a subsampled student, Fig. 1b), attention maps and lengths,
    the frames both have, the segmentation, the teacher's cluster logits; ``cache`` holds terms that are
    computed together (the two TGM losses share their products)."""

    pair: Pairing
    student: Any  # SSLOutput
    teacher_states: List[Optional[Tensor]]
    teacher_attentions: List[Tensor]
    teacher_lengths: Tensor
    frames: Tensor
    segment_ids: Optional[Tensor]
    teacher_logits: Optional[Tensor]
    cache: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Objective:
    """One distillation objective (see the module docstring). ``weight``: its factor in the sum (0: off)."""

    name: ClassVar[str] = ""
    maps_layers: ClassVar[bool] = False  # uses the student -> teacher layer map (``loss.layer_map``)
    attention: ClassVar[bool] = False  # compares both models' head-averaged attention maps
    logits: ClassVar[bool] = False  # compares both models' cluster posteriors
    segments: ClassVar[bool] = False  # reads a segmentation (``batch["labels"]``)
    cif: ClassVar[bool] = False  # guides a CIF student's weights α
    trains_head: ClassVar[bool] = False  # trains the student's prediction head
    keeps_head: ClassVar[bool] = False  # the saved student keeps that head (it is the student's objective later)

    weight: float = field(default=1.0, metadata={"min": 0})

    def setup(self, pair: Pairing) -> None:
        """Refuse models this objective cannot compare (``ValueError`` naming the fix)."""

    def teacher_layers(self, pair: Pairing) -> List[int]:
        """The teacher's hidden states (0: the input to the first layer) the term reads."""
        return list(pair.layer_map) if self.maps_layers else []

    def term(self, v: Views) -> Tensor:
        raise NotImplementedError

    def settings(self) -> Dict[str, Any]:
        """The objective as its config section (every field, defaults filled in)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


OBJECTIVES: Dict[str, Type[Objective]] = {}


def register_objective(cls: Type[Objective]) -> Type[Objective]:
    """Class decorator: make an objective available to distillation configs under ``cls.name``."""
    if not cls.name or cls.name in OBJECTIVES:
        raise ValueError(f"a distillation objective needs a new name, not {cls.name!r}")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"objective {cls.name!r}: Objective subclasses are dataclasses (their fields: the settings)")
    OBJECTIVES[cls.name] = cls
    return cls


def build_objective(name: str, spec: Any, where: str = "objectives") -> Objective:
    """One objective from its config entry: a number (its weight) or a section of its fields -- unknown
    names and keys refused with the nearest valid one, types and ranges checked (``ConfigError``)."""
    if name not in OBJECTIVES:
        raise ConfigError(
            f"{where}: unknown objective {name!r}{nearest(name, OBJECTIVES)}; choose from {list(OBJECTIVES)}"
        )
    key = f"{where}.{name}"
    if isinstance(spec, Objective):
        return spec
    if not isinstance(spec, Mapping):
        spec = {"weight": check_type(spec, float, key)}
        check_range(spec["weight"], {"min": 0}, key)
    return from_dict(OBJECTIVES[name], spec, key)


def _owners(key: str) -> List[str]:
    """The registered objectives with a setting called ``key``."""
    if key == "weight":
        return []
    return [n for n, cls in OBJECTIVES.items() if key in {f.name for f in dataclasses.fields(cls)}]


def check_objectives(
    section: Any,
    loss: Any = None,
    where: str = "objectives",
    loss_where: str = "loss",
    log: bool = True,
) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """A config's ``objectives`` (and ``loss``) section checked and normalised: ``(objectives, loss)`` with
    each objective as its full section (``{name: {weight, settings...}}``) and ``loss`` holding what the task
    itself takes (``layer_map``, ``max_mismatch``, ...).

    Older configs gave an objective's settings in ``loss`` (``loss.cos_weight``, ``loss.temperature``,
    ``loss.frames_per_segment``, ``loss.normalize`` / ``loss.method``): such a key is read as the setting of
    every objective of this config that has it (one log line says where it lives now); given in both places
    it is refused (which one is meant is unclear); a non-default value no objective here reads is ignored
    with a warning."""
    section = check_mapping(section, where)
    check_keys(section, OBJECTIVES, where)
    built = {name: build_objective(name, spec, where) for name, spec in section.items()}
    loss = dict(check_mapping(loss, loss_where))
    for key in [k for k in loss if _owners(k)]:
        value = loss.pop(key)
        # its type and range checked, and named, where it was given
        value = getattr(from_dict(OBJECTIVES[_owners(key)[0]], {key: value}, loss_where), key)
        owners = [n for n in _owners(key) if n in built]
        if not owners:
            default = {f.name: f.default for f in dataclasses.fields(OBJECTIVES[_owners(key)[0]])}[key]
            if value != default and value is not None and log:
                logger.warning(
                    "%s.%s: ignored (it is a setting of %s, and this config has none of them)",
                    loss_where,
                    key,
                    " / ".join(_owners(key)),
                )
            continue
        for name in owners:
            if isinstance(section[name], Mapping) and key in section[name]:
                raise ConfigError(
                    f"{loss_where}.{key} and {where}.{name}.{key} are both given: keep {where}.{name}.{key} "
                    f"(an objective's settings live in its own section now) and remove {loss_where}.{key}"
                )
            setattr(built[name], key, value)
            if log:
                logger.info(
                    "%s.%s is read as %s.%s.%s (its place now: %s: {%s: {weight: %g, %s: %s}})",
                    loss_where,
                    key,
                    where,
                    name,
                    key,
                    where.split(".")[-1],
                    name,
                    built[name].weight,
                    key,
                    value,
                )
    return {name: o.settings() for name, o in built.items()}, loss


def setting_names() -> List[str]:
    """Every registered objective's settings but ``weight`` (the keys an older config gave in ``loss``)."""
    return sorted({f.name for cls in OBJECTIVES.values() for f in dataclasses.fields(cls)} - {"weight"})


# ------------------------------------------------------------------------------------ STaR (TGM, attention)
@dataclass
class _TGM(Objective):
    maps_layers = True

    normalize: str = field(default="l2", metadata={"choices": star.NORMALIZATIONS})
    method: str = field(default="auto", metadata={"choices": star.METHODS})

    def setup(self, pair):
        if pair.upsampled:
            raise ValueError(
                "an upsampler (Fig. 1a) feeds the prediction heads only: "
                "use l1_cos, or subsample the targets (no upsample)"
            )

    def term(self, v: Views) -> Tensor:
        key = f"tgm/{self.normalize}/{self.method}"
        if key not in v.cache:  # both TGM losses at once: the D x D form shares its products
            mates = {
                o.name
                for o in v.pair.objectives
                if isinstance(o, _TGM) and (o.normalize, o.method) == (self.normalize, self.method)
            }
            v.cache[key] = star.tgm_losses(
                [v.teacher_states[i] for i in v.pair.layer_map],
                v.student.hidden_states,
                v.frames,
                layer_wise="layer_wise" in mates,
                intra_layer="intra_layer" in mates,
                normalize=self.normalize,
                method=self.method,
                max_mismatch=v.pair.max_mismatch,
            )
        return v.cache[key][self.name]


@register_objective
@dataclass
class LayerWise(_TGM):
    """Layer-wise TGM loss (Jang, Kim and Kim 2024, STaR eq. 3-4): :func:`s3prl_plugins.losses.star.tgm_losses`;
    ``normalize`` the states before the Gram matrices (l2, dim, none), ``method`` of computing them."""

    name = "layer_wise"


@register_objective
@dataclass
class IntraLayer(_TGM):
    """Intra-layer TGM loss (STaR eq. 5-6); STaR's final loss is layer_wise + intra_layer."""

    name = "intra_layer"


@dataclass
class _Attention(Objective):
    maps_layers = True
    attention = True

    def setup(self, pair):
        if pair.student.subsampler is not None:
            raise ValueError(
                "attention objectives compare frame-by-frame maps: not available with a subsampled student"
            )

    def term(self, v: Views) -> Tensor:
        maps = [v.teacher_attentions[i - 1] for i in v.pair.layer_map[1:]]
        return self.kl(maps, v.student.attentions, v.frames, max_mismatch=v.pair.max_mismatch)


@register_objective
@dataclass
class AverageAttention(_Attention):
    """Average attention map KL over all layers (STaR eq. 1): :func:`s3prl_plugins.losses.star.avg_attention_kl`."""

    name = "avg_attn"
    kl = staticmethod(star.avg_attention_kl)


@register_objective
@dataclass
class LastAttention(_Attention):
    """The last layer's attention map KL (STaR's L_last-attn baseline)."""

    name = "last_attn"
    kl = staticmethod(star.last_attention_kl)


# ------------------------------------------------------------------------------------------- DistilHuBERT
@register_objective
@dataclass
class L1Cosine(Objective):
    """DistilHuBERT's L1 + cosine loss of the student's prediction heads against the teacher layers the
    heads name (Chang et al. 2022 eq. 1): :func:`s3prl_plugins.losses.distil.l1_cos_loss`; ``cos_weight`` is
    the paper's lambda (1). On an upsampled student (Meng et al. 2022 Fig. 1a, eq. 1) the heads read the last
    layer at the teacher's rate."""

    name = "l1_cos"
    trains_head = True

    cos_weight: float = field(default=1.0, metadata={"min": 0})

    def setup(self, pair):
        student, teacher = pair.student, pair.teacher
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

    def teacher_layers(self, pair):
        return list(pair.student.head.layers)

    def term(self, v: Views) -> Tensor:
        head, s = v.pair.student.head, v.student
        frames = v.frames
        if v.pair.upsampled:  # Fig. 1a / eq. 1: heads on the upsampled output, at the teacher's rate
            preds = head(s.upsampled)
            frames = torch.minimum(s.frontend_lengths, v.teacher_lengths)
        else:
            preds = head(s.hidden_states[-1])  # (B, heads, T, D)
        targets = [v.teacher_states[i] for i in head.layers]
        return l1_cos_loss(targets, list(preds.unbind(1)), frames, self.cos_weight, v.pair.max_mismatch)


# ------------------------------------------------------------------------------------------- CIF guidance
@dataclass
class _Guidance(Objective):
    cif = True

    def setup(self, pair):
        sub = pair.student.subsampler
        if sub is None or sub.kind != "cif":
            raise ValueError(
                f"objective(s) ['{self.name}'] guide a CIF module: the student needs subsampling: {{type: cif}}"
            )


@register_objective
@dataclass
class Cardinality(_Guidance):
    """CIF cardinality guidance (Meng et al. 2022 eq. 3): K = T / ``frames_per_segment`` (default: the
    student's ``subsampling.stride``)."""

    name = "cardinality"

    frames_per_segment: Optional[float] = field(default=None, metadata={"gt": 0})

    def setup(self, pair):
        super().setup(pair)
        self.rate = float(self.frames_per_segment or pair.student.subsampler.stride)

    def term(self, v: Views) -> Tensor:
        return cif_losses.cardinality_loss(v.student.subsampled.alpha, v.student.frontend_lengths, self.rate)


@dataclass
class _GivenSegments(_Guidance):
    segments = True

    def term(self, v: Views) -> Tensor:
        return self.loss(v.student.subsampled.alpha, v.segment_ids, v.student.frontend_lengths)


@register_objective
@dataclass
class SegmentGuidance(_GivenSegments):
    """Segment-based guidance from a given segmentation (Meng et al. 2022 eq. 4)."""

    name = "segment"
    loss = staticmethod(cif_losses.segment_loss)


@register_objective
@dataclass
class FrameGuidance(_GivenSegments):
    """Frame-based guidance: α against 1 / segment length (Meng et al. 2022 eq. 5)."""

    name = "frame"
    loss = staticmethod(cif_losses.frame_loss)


# --------------------------------------------------------------------------------------- MelHuBERT KD
@register_objective
@dataclass
class ClusterKL(Objective):
    """KL between the teacher's and the student's cluster posteriors at ``temperature`` (Lin et al. 2024
    eq. 7-8; MelHuBERT KD): both need a ``cluster`` (or ``hubert``) head. The student keeps its head W_hat
    (eq. 8): it is the student's own objective when it is compressed further (Lin et al. §VI-B)."""

    name = "cluster_kl"
    logits = True
    trains_head = True
    keeps_head = True

    temperature: float = field(default=1.0, metadata={"gt": 0})

    def setup(self, pair):
        for who, m in (("student", pair.student), ("teacher", pair.teacher)):
            if m.head is None or m.config.head.get("type") not in ("cluster", "hubert"):
                raise ValueError(f"objective cluster_kl needs a {who} with a cluster (or hubert) prediction head")
        if num_classes(pair.student) != num_classes(pair.teacher):
            raise ValueError(
                f"the student's head predicts {num_classes(pair.student)} clusters, "
                f"the teacher's {num_classes(pair.teacher)}"
            )
        if pair.student.subsampler is not None:
            raise ValueError("cluster_kl matches posteriors frame by frame: not available with a subsampled student")

    def teacher_layers(self, pair):
        return [pair.teacher.config.num_layers]

    def term(self, v: Views) -> Tensor:
        return kd.cluster_kl(
            v.teacher_logits, cluster_logits(v.pair.student, v.student.hidden_states[-1]), v.frames, self.temperature
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
