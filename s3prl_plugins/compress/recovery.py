"""Training after a pruning step with the model's own objective (Lin et al. 2024 §II: "train the pruned
network until the loss converges").

:class:`RecoveryTask` wraps any trainer task (masked prediction, distillation, KD) and, after every
optimiser update (the trainer's ``after_update`` hook), re-applies the weight-pruning masks and asks the
convergence trigger whether to stop. Masks and trigger state are buffers of the task, so training
checkpoints keep them and a killed run resumes with the same zeros and the same moving average.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from torch import Tensor, nn

from s3prl_plugins.compress.weight import LossPlateau, WeightMasks
from s3prl_plugins.models.ssl_model import SSLModel


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
