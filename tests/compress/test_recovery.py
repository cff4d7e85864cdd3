"""The recovery objectives' registry (compress/recovery.py): the chain's ``objective`` section is checked
against the task each kind builds -- its keys are that task's arguments, not a list restated beside it --
and a new kind is one registered class."""

import inspect

import pytest
import torch
from tiny_data import tiny_chain_config, tiny_student

from s3prl_plugins.compress import pipeline, recovery
from s3prl_plugins.config import ConfigError
from s3prl_plugins.tasks.masked_prediction import MaskedPredictionTask


def _config(objective):
    config = tiny_chain_config("model.pt", "data", "labels", "exp", [{"method": "train", "updates": 1}])
    return {**config, "objective": objective}


def test_masked_predictions_keys_are_its_tasks_arguments():
    params = [n for n in inspect.signature(MaskedPredictionTask.__init__).parameters if n not in ("self", "model")]
    assert recovery.RECOVERY_OBJECTIVES["masked_prediction"].keys() == ["type"] + params
    pipeline.check_config(_config({"type": "masked_prediction", "max_label_mismatch": 3}))


@pytest.mark.parametrize(
    "objective, message",
    [
        ({"type": "masked_predicton"}, "objective.type: must be one of masked_prediction, distillation"),
        ({"type": "masked_prediction", "mask_prb": 0.1}, "objective.mask_prb: unknown key (did you mean 'mask_prob'?)"),
        ({"type": "masked_prediction", "mask_prob": -1}, "objective.mask_prob"),
        ({"type": "masked_prediction", "teacher": "t.pt"}, "objective.teacher: unknown key"),
        ({"type": "distillation"}, "objective.teacher: missing"),
        ({"type": "distillation", "teacher": "t.pt", "objectives": {"cluster_kl": {"temperatur": 2}}}, "temperatur"),
        ({"type": "distillation", "teacher": "t.pt", "loss": {"max_mismatch": -1}}, "objective.loss.max_mismatch"),
    ],
)
def test_a_bad_objective_section_is_named_before_anything_is_written(objective, message):
    with pytest.raises(ConfigError) as e:
        pipeline.check_config(_config(objective))
    assert message in str(e.value)


def test_a_new_recovery_objective_is_one_registered_class():
    @recovery.register_recovery
    class Reconstruction(recovery.RecoveryObjective):
        """The last layer's states against the input features, for a test."""

        name = "reconstruction"

        def keys(self):
            return ["type", "weight"]

        def build(self, model, objective, teacher_of):
            class Task(torch.nn.Module):
                def forward(self, batch):
                    out = model(batch["wavs"], batch["lengths"])
                    loss = objective.get("weight", 1.0) * out.hidden_states[-1].pow(2).mean()
                    return loss, {"loss": (float(loss), 1.0)}

            return Task()

    try:
        pipeline.check_config(_config({"type": "reconstruction", "weight": 0.5}))
        with pytest.raises(ConfigError, match=r"objective.wieght: unknown key \(did you mean 'weight'\?\)"):
            pipeline.check_config(_config({"type": "reconstruction", "wieght": 0.5}))
        chain = pipeline.Chain(_config({"type": "reconstruction", "weight": 0.5}))
        model = tiny_student(head=False)
        loss, _ = chain.build_task(model)({"wavs": torch.randn(1, 4000), "lengths": torch.tensor([4000])})
        assert loss.requires_grad and float(loss) > 0
    finally:
        recovery.RECOVERY_OBJECTIVES.pop("reconstruction", None)
