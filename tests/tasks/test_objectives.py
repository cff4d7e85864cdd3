"""The distillation objectives (tasks/objectives.py): each built from its own config section -- typed and
range-checked from its fields --, an older config's settings in ``loss`` read as their objective's (resume
included), and a new objective with its own setting is one class, checked before anything is written."""

import glob
import io
import logging
import os
from contextlib import redirect_stderr
from dataclasses import dataclass, field

import pytest
import torch
import yaml
from tiny_data import make_tiny_data, make_tiny_teacher, tiny_distill_config, tiny_student

from s3prl_plugins.bin import distill as distill_cli
from s3prl_plugins.config import ConfigError
from s3prl_plugins.losses import star
from s3prl_plugins.losses.distil import l1_cos_loss
from s3prl_plugins.models.loading import load_pretrained
from s3prl_plugins.tasks import objectives
from s3prl_plugins.tasks.distillation import DistillationTask, check_loss
from s3prl_plugins.tasks.objectives import check_objectives
from s3prl_plugins.train.distill import build_student, build_task, run_distill
from s3prl_plugins.train.trainer import TrainingError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    data, _ = make_tiny_data(str(root))
    return data, make_tiny_teacher(str(root / "teacher.pt"))


def _batch():
    g = torch.Generator().manual_seed(0)
    n = [16000, 11000]
    wavs = torch.zeros(2, max(n))
    for i, k in enumerate(n):
        wavs[i, :k] = torch.randn(k, generator=g) * 0.1
    return {"wavs": wavs, "lengths": torch.tensor(n)}


def _distil_student():
    torch.manual_seed(0)
    return tiny_student()


def test_an_objective_is_its_weight_or_its_own_section():
    objs, loss = check_objectives({"layer_wise": 0.5, "l1_cos": {"cos_weight": 0.25}, "cluster_kl": {"weight": 2}})
    assert objs == {
        "layer_wise": {"weight": 0.5, "normalize": "l2", "method": "auto"},
        "l1_cos": {"weight": 1.0, "cos_weight": 0.25},
        "cluster_kl": {"weight": 2.0, "temperature": 1.0},
    }
    assert loss == {}
    assert check_objectives(objs)[0] == objs  # the normal form reads as itself (saved configs, resume)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"l1_cos": {"cos_wieght": 1}}, "objectives.l1_cos.cos_wieght: unknown key (did you mean 'cos_weight'?)"),
        ({"l1_cos": {"cos_weight": "x"}}, "objectives.l1_cos.cos_weight: expected a number"),
        ({"l1_cos": {"cos_weight": -1}}, "objectives.l1_cos.cos_weight: must be >= 0, not -1"),
        ({"cluster_kl": {"temperature": 0}}, "objectives.cluster_kl.temperature: must be > 0, not 0"),
        ({"cardinality": {"frames_per_segment": 0}}, "objectives.cardinality.frames_per_segment: must be > 0"),
        ({"layer_wise": {"normalize": "l1"}}, "objectives.layer_wise.normalize: must be one of l2, dim, none"),
        ({"layer_wise": -1}, "objectives.layer_wise: must be >= 0, not -1"),
        ({"layer_wise": {"weight": -1}}, "objectives.layer_wise.weight: must be >= 0, not -1"),
        ({"layer_wize": 1}, "objectives.layer_wize: unknown key (did you mean 'layer_wise'?)"),
    ],
)
def test_a_bad_setting_is_named_by_its_key(section, message):
    with pytest.raises(ConfigError) as e:
        check_objectives(section)
    assert message in str(e.value)


def test_each_objective_computes_with_its_own_settings(tiny):
    teacher = load_pretrained(tiny[1])
    student = _distil_student()
    batch = _batch()
    task = DistillationTask(teacher, student, {"l1_cos": {"cos_weight": 0.25}}).eval()
    loss, _ = task(batch)
    with torch.no_grad():
        t = teacher(batch["wavs"], batch["lengths"])
        s = student(batch["wavs"], batch["lengths"])
        preds = list(student.head(s.hidden_states[-1]).unbind(1))
        frames = torch.minimum(s.lengths, t.lengths)
        ref = l1_cos_loss([t.hidden_states[1], t.hidden_states[2]], preds, frames, cos_weight=0.25)
        other = l1_cos_loss([t.hidden_states[1], t.hidden_states[2]], preds, frames, cos_weight=1.0)
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-5) and abs(float(ref) - float(other)) > 1e-3

    # the two TGM terms share one computation only when their settings agree: here each has its own
    student = build_student(tiny_distill_config("x", *tiny)["student"])
    task = DistillationTask(
        teacher, student, {"layer_wise": {"normalize": "none"}, "intra_layer": {"normalize": "l2"}}
    ).eval()
    _, logs = task(batch)
    with torch.no_grad():
        t = teacher(batch["wavs"], batch["lengths"])
        s = student(batch["wavs"], batch["lengths"])
        frames = torch.minimum(s.lengths, t.lengths)
        states = [t.hidden_states[i] for i in task.layer_map]
        want = {
            name: float(star.tgm_losses(states, s.hidden_states, frames, normalize=norm)[name])
            for name, norm in (("layer_wise", "none"), ("intra_layer", "l2"))
        }
        wrong = float(star.tgm_losses(states, s.hidden_states, frames, normalize="l2")["layer_wise"])
    for name, value in want.items():
        assert logs[name][0] / logs[name][1] == pytest.approx(value, rel=1e-5), name
    assert abs(wrong - want["layer_wise"]) > 1e-3


def test_an_older_configs_settings_in_loss_are_read_as_their_objectives(caplog):
    with caplog.at_level(logging.INFO, logger="s3prl_plugins.tasks.objectives"):
        objs, loss = check_objectives({"l1_cos": 1.0}, {"cos_weight": 0.5, "max_mismatch": 3})
    assert objs == {"l1_cos": {"weight": 1.0, "cos_weight": 0.5}} and loss == {"max_mismatch": 3}
    assert "loss.cos_weight is read as objectives.l1_cos.cos_weight" in caplog.text
    assert "{l1_cos: {weight: 1, cos_weight: 0.5}}" in caplog.text  # what to write instead, in one line
    # a setting two objectives share goes to both
    objs, _ = check_objectives({"layer_wise": 1, "intra_layer": 1}, {"normalize": "dim"})
    assert objs["layer_wise"]["normalize"] == objs["intra_layer"]["normalize"] == "dim"
    # ambiguous: given in both places
    with pytest.raises(ConfigError, match=r"loss.cos_weight and objectives.l1_cos.cos_weight are both given"):
        check_objectives({"l1_cos": {"cos_weight": 1.0}}, {"cos_weight": 0.5})
    # checked where it was given
    with pytest.raises(ConfigError, match=r"loss.cos_weight: must be >= 0, not -1"):
        check_objectives({"l1_cos": 1.0}, {"cos_weight": -1})
    # read by no objective of this config: its default passes silently (older configs stored every
    # default), another value is ignored with a warning
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="s3prl_plugins.tasks.objectives"):
        assert check_objectives({"layer_wise": 1}, {"temperature": 1.0}) == check_objectives({"layer_wise": 1})
        assert not caplog.records
        assert check_objectives({"layer_wise": 1}, {"temperature": 2.0}) == check_objectives({"layer_wise": 1})
    assert "loss.temperature: ignored (it is a setting of cluster_kl" in caplog.text
    # ``weight`` is each objective's own: never taken from loss
    with pytest.raises(ConfigError, match=r"loss.weight: unknown key"):
        check_loss(check_objectives({"layer_wise": 1}, {"weight": 2.0})[1], "loss")
    with pytest.raises(ConfigError, match=r"loss.normalise: unknown key \(did you mean 'normalize'\?\)"):
        check_loss(check_objectives({"layer_wise": 1}, {"normalise": "l2"})[1], "loss")


def _old_form(path, **loss):
    """Rewrite a training checkpoint's stored run config as an older release wrote it: objectives as
    weights, every objective setting in ``loss``."""
    ckpt = torch.load(path, weights_only=True)
    run = ckpt["run_config"]
    run["objectives"] = {k: v["weight"] if isinstance(v, dict) else v for k, v in run["objectives"].items()}
    run["loss"] = {
        **run["loss"],
        "normalize": "l2",
        "method": "auto",
        "cos_weight": 1.0,
        "frames_per_segment": None,
        "temperature": 1.0,
        **loss,
    }
    torch.save(ckpt, path)


def test_a_run_of_an_older_release_resumes_and_a_changed_setting_is_refused(tiny, tmp_path):
    cfg = tiny_distill_config(str(tmp_path), *tiny, max_steps=4)
    run_distill(cfg, stop_at=2)
    (ckpt,) = glob.glob(os.path.join(cfg["trainer"]["exp_dir"], "checkpoints", "*.pt"))
    _old_form(ckpt, normalize="dim")
    with pytest.raises(TrainingError, match=r"objectives.layer_wise.normalize: 'dim' -> 'l2'"):
        run_distill(cfg)
    _old_form(ckpt)
    stats = run_distill(cfg)  # the same settings in the old place: not a change
    assert stats and os.path.exists(os.path.join(cfg["trainer"]["exp_dir"], "model.pt"))


def test_a_new_objective_with_its_own_setting_is_one_class_checked_before_anything_is_written(tiny, tmp_path):
    """The registry's promise: an objective declares what it needs, takes its own settings and computes its
    term; the task asks the teacher for exactly those layers and sums it with the others; the CLI checks
    its section like any other."""

    @objectives.register_objective
    @dataclass
    class LastStateMSE(objectives.Objective):
        name = "last_mse"
        maps_layers = True

        scale: float = field(default=1.0, metadata={"gt": 0})

        def term(self, v):  # how fast the states move from frame to frame (the widths differ)
            rates = []
            for x in (v.teacher_states[v.pair.layer_map[-1]], v.student.hidden_states[-1]):
                x = x[:, : int(v.frames.min())]
                rates.append((x[:, 1:] - x[:, :-1]).norm(dim=-1) / x[:, 1:].norm(dim=-1))
            return self.scale * ((rates[0] - rates[1]) ** 2).mean()

    try:
        cfg = tiny_distill_config(str(tmp_path), *tiny, {"last_mse": {"weight": 1.0, "scale": 2.0}, "layer_wise": 0.5})
        task = build_task(cfg).eval()
        assert task.teacher_layers_needed == 2 and [o.name for o in task.objectives] == ["layer_wise", "last_mse"]
        loss, logs = task(_batch())
        assert set(logs) == {"last_mse", "layer_wise", "loss"} and logs["last_mse"][0] > 1e-3
        assert float(loss) == pytest.approx(logs["last_mse"][0] / 2 + 0.5 * logs["layer_wise"][0] / 2, rel=1e-5)
        once = build_task(tiny_distill_config(str(tmp_path), *tiny, {"last_mse": 1.0})).eval()
        once.load_state_dict(task.state_dict(), strict=False)
        assert float(once(_batch())[0]) * 2 == pytest.approx(logs["last_mse"][0] / 2, rel=1e-5)
        loss.backward()
        path = tmp_path / "config.yaml"
        for section, message in (
            ({"scael": 2.0}, "objectives.last_mse.scael: unknown key (did you mean 'scale'?)"),
            ({"scale": 0}, "objectives.last_mse.scale: must be > 0, not 0"),
        ):
            path.write_text(yaml.safe_dump({**cfg, "objectives": {"last_mse": section}}))
            err = io.StringIO()
            with redirect_stderr(err):
                assert distill_cli.main(["--config", str(path)]) == 2
            assert message in err.getvalue() and "Traceback" not in err.getvalue(), err.getvalue()
            assert not os.path.exists(cfg["trainer"]["exp_dir"])
    finally:
        objectives.OBJECTIVES.pop("last_mse")


def test_the_tasks_own_loss_keys_are_named_without_its_model_arguments():
    with pytest.raises(ConfigError) as e:
        check_loss({"max_mismatc": 1}, "loss")
    valid = str(e.value).split("valid keys: ")[1].split(", ")
    assert "did you mean 'max_mismatch'" in str(e.value) and not {"teacher", "student", "objectives"} & set(valid)
    with pytest.raises(ConfigError, match=r"loss.teacher: unknown key"):
        check_loss({"teacher": "t.pt"}, "loss")
