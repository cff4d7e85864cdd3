"""ARCHITECTURE.md's "Adding a method": its two classes, run as written in their modules' namespaces --
registered, used, and a bad config refused by name -- so that the page cannot drift from the API."""

import os
import re

import pytest
import torch
from tiny_data import make_tiny_teacher

from s3prl_plugins.compress import steps
from s3prl_plugins.config import ConfigError
from s3prl_plugins.models.loading import load_pretrained
from s3prl_plugins.models.ssl_model import SSLModel
from s3prl_plugins.tasks import objectives
from s3prl_plugins.tasks.distillation import DistillationTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blocks():
    with open(os.path.join(ROOT, "ARCHITECTURE.md")) as f:
        text = f.read()
    section = text.split("## Adding a method", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "ARCHITECTURE.md's 'Adding a method' shows an objective and a step"
    return blocks


def _run(block, module):
    namespace = dict(vars(module))  # the module's own names, as the class would see them there
    exec(compile(block, "ARCHITECTURE.md", "exec"), namespace)


def test_the_objective_of_the_page_is_one_class_with_its_own_setting(tmp_path):
    _run(_blocks()[0], objectives)
    try:
        assert objectives.check_objectives({"change_rate": {"weight": 1.0, "scale": 2.0}})[0] == {
            "change_rate": {"weight": 1.0, "scale": 2.0}
        }
        with pytest.raises(ConfigError, match=r"objectives.change_rate.scael: unknown key \(did you mean 'scale'\?\)"):
            objectives.check_objectives({"change_rate": {"scael": 2.0}})
        with pytest.raises(ConfigError, match=r"objectives.change_rate.scale: must be > 0, not 0"):
            objectives.check_objectives({"change_rate": {"scale": 0}})
        teacher = load_pretrained(make_tiny_teacher(str(tmp_path / "teacher.pt")))
        c = teacher.config
        student = SSLModel(
            c.replace(num_layers=1, num_heads=c.num_heads[:1], ffn_dims=c.ffn_dims[:1], head=None, mask_embedding=False)
        )
        task = DistillationTask(teacher, student, {"change_rate": {"scale": 2.0}}, layer_map="uniform").eval()
        wavs = torch.randn(2, 8000) * 0.1
        lengths = torch.tensor([8000, 8000])
        loss, logs = task({"wavs": wavs, "lengths": lengths})
        with torch.no_grad():
            rates = []
            for x in (teacher(wavs, lengths).hidden_states[-1], student(wavs, lengths).hidden_states[-1]):
                rates.append((x[:, 1:] - x[:, :-1]).norm(dim=-1) / x[:, 1:].norm(dim=-1))
            want = 2.0 * ((rates[0] - rates[1]) ** 2).mean()
        assert float(want) > 1e-3
        assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5) and set(logs) == {"change_rate", "loss"}
    finally:
        objectives.OBJECTIVES.pop("change_rate", None)


def test_the_step_of_the_page_is_one_class_with_a_required_key(tmp_path):
    _run(_blocks()[1], steps)
    try:
        with pytest.raises(ConfigError, match=r"steps\[1\].heads: missing \(the drop_heads step needs heads\)"):
            steps.check_step({"method": "drop_heads", "updates": 0}, "steps[1]", lambda section, where: None)
        step = steps.check_step({"method": "drop_heads", "heads": 1}, "steps[1]", lambda section, where: None)
        teacher = load_pretrained(make_tiny_teacher(str(tmp_path / "teacher.pt")))
        impl = steps.STEPS["drop_heads"]
        (action,) = list(impl.iterations(step, teacher))
        applied = impl.apply(None, teacher, step, action, {"type": "masked_prediction"}, {})
        assert applied.model.config.heads_per_layer() == [h - 1 for h in teacher.config.heads_per_layer()]
        assert applied.updates == 0
    finally:
        steps.STEPS.pop("drop_heads", None)
