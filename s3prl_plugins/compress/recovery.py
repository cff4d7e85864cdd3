"""Training after a pruning step with the model's own objective (Lin et al. 2024 §II: "train the pruned
network until the loss converges").

:class:`RecoveryTask` wraps any trainer task (masked prediction, distillation, KD) and, after every
optimiser update (the trainer's ``after_update`` hook), re-applies the weight-pruning masks and asks the
convergence trigger whether to stop. Masks and trigger state are buffers of the task, so training
checkpoints keep them and a killed run resumes with the same zeros and the same moving average.

The objective a model recovers with is one of :data:`RECOVERY_OBJECTIVES` (the chain config's
``objective.type``): each checks its section against the task it builds (the keys are that task's
arguments), builds the task, and says what the chain must provide (k-means labels, the model's head, the
teacher's shortest input). A new kind is one class here, registered with :func:`register_recovery`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple, Type

from torch import Tensor, nn

from s3prl_plugins.compress.structured import PruningError
from s3prl_plugins.compress.weight import LossPlateau, WeightMasks
from s3prl_plugins.config import ConfigError, check_kwargs, check_type
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.tasks.distillation import DistillationTask, check_sections
from s3prl_plugins.tasks.masked_prediction import MaskedPredictionTask

TeacherOf = Callable[[str], SSLModel]  # a teacher checkpoint -> the loaded model (the chain keeps them loaded)


class RecoveryTask(nn.Module):
    """Args:
    task: the objective (``task(batch) -> (loss, logs)``).
    model: the network inside ``task`` being compressed.
    masks: weight-pruning masks to keep applied (None: structured pruning, nothing to mask).
    plateau: stop when the loss has converged (None: train the fixed number of updates).
    """

    def __init__(
        self,
        task: nn.Module,
        model: SSLModel,
        masks: Optional[WeightMasks] = None,
        plateau: Optional[LossPlateau] = None,
    ):
        super().__init__()
        self.task = task
        self.masks = masks
        self.plateau = plateau
        self._model = [model]  # not a submodule: it is already one of ``task``'s
        self._density = None
        if masks is not None:
            masks.apply(model)
            self._density = masks.density()  # fixed while the model recovers: counted once, not per batch

    @property
    def model(self) -> SSLModel:
        return self._model[0]

    def forward(self, batch: Dict[str, Tensor]) -> Tuple[Tensor, Dict[str, Tuple[float, float]]]:
        loss, logs = self.task(batch)
        if self._density is not None:
            logs = dict(logs)
            logs["density"] = (self._density, 1.0)
        return loss, logs

    def after_update(self, loss: float) -> bool:
        if self.masks is not None:  # an update moves pruned weights off zero (Adam's moments): back to zero
            self.masks.apply(self.model)
        if self.plateau is not None and loss == loss:  # NaN never counts
            return self.plateau.update(loss)
        return False


class RecoveryObjective:
    """One kind of recovery objective (see the module docstring)."""

    name: ClassVar[str] = ""
    keeps_head: ClassVar[bool] = False  # the model to compress is loaded with its prediction head (it trains it)
    needs_labels: ClassVar[bool] = False  # reads data.<split>_labels (the k-means codes)

    def keys(self) -> List[str]:
        """The keys of the ``objective`` section (``type`` included)."""
        raise NotImplementedError

    def check(self, objective: Dict[str, Any]) -> None:
        """Types and ranges of the section (``ConfigError`` naming the key)."""

    def build(self, model: SSLModel, objective: Dict[str, Any], teacher_of: TeacherOf) -> nn.Module:
        raise NotImplementedError

    def min_samples(self, objective: Dict[str, Any], teacher_of: TeacherOf) -> int:
        """The shortest input the objective can use beside the model's own (a teacher's)."""
        return 0


RECOVERY_OBJECTIVES: Dict[str, RecoveryObjective] = {}


def register_recovery(cls: Type[RecoveryObjective]) -> Type[RecoveryObjective]:
    """Class decorator: make a recovery objective available to chains under ``cls.name``."""
    if not cls.name or cls.name in RECOVERY_OBJECTIVES:
        raise ValueError(f"a recovery objective needs a new name, not {cls.name!r}")
    RECOVERY_OBJECTIVES[cls.name] = cls()
    return cls


@register_recovery
class MaskedPrediction(RecoveryObjective):
    """The model's own pre-training loss (Lin et al. 2024 eq. 1-2): :class:`MaskedPredictionTask`, its
    arguments the section's keys."""

    name = "masked_prediction"
    keeps_head = True
    needs_labels = True

    def keys(self):
        params = inspect.signature(MaskedPredictionTask.__init__).parameters
        return ["type"] + [n for n in params if n not in ("self", "model")]

    def check(self, objective):
        check_kwargs(
            MaskedPredictionTask.__init__,
            {k: v for k, v in objective.items() if k != "type"},
            "objective",
            skip=("model",),
            ranges=MaskedPredictionTask.RANGES,
        )

    def build(self, model, objective, teacher_of):
        if model.mask_emb is None or model.head is None:
            raise PruningError(
                "objective masked_prediction needs a model with a mask embedding and a cluster head; this one "
                "(a distilled student?) has none: use objective {type: distillation, teacher: ..., "
                "objectives: {cluster_kl: 1.0}}"
            )
        return MaskedPredictionTask(model, **{k: v for k, v in objective.items() if k != "type"})


def distillation_sections(objective: Dict[str, Any], log: bool = True) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A distillation objective's ``objectives`` (default: MelHuBERT KD, ``cluster_kl``) and ``loss`` checked
    and normalised, as :func:`s3prl_plugins.train.distill.check_task_sections` does for a distillation config
    (an objective's setting given in ``loss`` by an older config moved to its section)."""
    return check_sections(objective.get("objectives") or {"cluster_kl": 1.0}, objective.get("loss"), "objective.", log)


@register_recovery
class Distillation(RecoveryObjective):
    """Distillation from a teacher checkpoint (a student's own objective: KD's ``cluster_kl`` by default,
    Lin et al. §VI-B): :class:`DistillationTask` with the section's ``objectives`` and ``loss``."""

    name = "distillation"

    def keys(self):
        return ["type", "teacher", "objectives", "loss"]

    def check(self, objective):
        if "teacher" not in objective:
            raise ConfigError("objective.teacher: missing (the checkpoint the student is distilled from)")
        check_type(objective["teacher"], str, "objective.teacher")
        distillation_sections(objective)

    def build(self, model, objective, teacher_of):
        objectives, loss = distillation_sections(objective, log=False)
        return DistillationTask(teacher_of(str(objective["teacher"])), model, objectives, **loss)

    def min_samples(self, objective, teacher_of):
        return teacher_of(str(objective["teacher"])).min_samples
