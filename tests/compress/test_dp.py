"""Distil and prune at once to a MACs budget (compress.dp, the chain's ``dp`` step; issue 31): the hard concrete
gates against Louizos et al.'s formulas, the expected MACs against the profiler's count, the pruned model against
the gated one, the Lagrangian's ascent, the step in a chain with its refusals and an exact resume."""

import copy
import math
import os

import pytest
import torch

from s3prl_plugins.compress import pipeline
from s3prl_plugins.compress.dp import (
    ExpectedMacs,
    Gates,
    HardConcrete,
    Lagrangian,
    PruneTask,
    prune_gated,
)
from s3prl_plugins.compress.structured import PruningError
from s3prl_plugins.config import ConfigError
from s3prl_plugins.models import hubert_config, melhubert_config, star_hubert_config
from s3prl_plugins.models.checkpoint import load_checkpoint, save_checkpoint
from s3prl_plugins.models.macs import ssl_macs
from s3prl_plugins.models.ssl_model import SSLModel

CONV = [(16, 10, 5), (32, 3, 2)] + [(32, 2, 2)] * 5
TINY = dict(num_layers=2, num_heads=4, ffn_dim=48, conv_layers=CONV, pos_conv_kernel=8, pos_conv_groups=4)
DURATIONS = [0.5, 1.3, 2.0]


def _models():
    return {
        "hubert": hubert_config(with_head=False, embed_dim=48, **TINY),  # CNN 32 -> projection -> 48
        "star": star_hubert_config(embed_dim=32, **TINY),  # no projection: the CNN's last layer is not gated
        "melhubert": melhubert_config(embed_dim=32, num_clusters=None, **{**TINY, "conv_layers": []}),
    }


def _random_gates(gates, seed):
    g = torch.Generator().manual_seed(seed)
    values = {k: (torch.rand(x.n, generator=g) < 0.6).float() for k, x in gates.gates.items()}
    for k, x in gates.gates.items():
        if values[k].sum() < x.min_keep:
            values[k][0] = 1.0
    return values


# --------------------------------------------------------------------------------------------- the gates
def test_hard_concrete_samples_follow_the_stretched_clipped_concrete():
    """Louizos et al. 2018 §4: P(z > 0) = sigmoid(log_alpha - beta log(-l / r)); samples are exactly 0 or 1 with
    the probabilities of the stretched binary concrete below 0 and above 1."""
    torch.manual_seed(0)
    gate = HardConcrete(3)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-1.0, 0.5, 2.0]))
    beta, l, r = 2 / 3, -0.1, 1.1
    with torch.no_grad():
        z = torch.stack([gate() for _ in range(20000)])
    assert float(z.min()) == 0.0 and float(z.max()) == 1.0
    expected = torch.sigmoid(gate.log_alpha.detach() - beta * math.log(-l / r))
    torch.testing.assert_close(gate.keep_probability().detach(), expected)
    torch.testing.assert_close((z > 0).float().mean(0), expected, atol=0.012, rtol=0)
    # P(z = 1) = P(s > (1 - l) / (r - l)), the logistic's upper tail
    upper = torch.sigmoid(gate.log_alpha.detach() - beta * math.log((1 - l) / (r - 1)))
    torch.testing.assert_close((z == 1).float().mean(0), upper, atol=0.012, rtol=0)
    gate.eval()  # deterministic: the expected count kept (here 2.51 -> 3), by log_alpha
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-3.0, 0.5, -1.0]))  # P(z > 0) = 0.20, 0.89, 0.65: 1.74 -> 2 kept
    assert gate().tolist() == [0.0, 1.0, 1.0] and torch.equal(gate(), gate())


def test_a_cnn_layer_keeps_one_channel_whatever_its_gates_say():
    gate = HardConcrete(5, min_keep=1).eval()
    with torch.no_grad():
        gate.log_alpha.fill_(-20.0)
        gate.log_alpha[3] = -10.0
    assert gate().tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("kind", ["hubert", "star", "melhubert"])
def test_expected_macs_is_the_profilers_count_for_any_0_1_gating_and_the_pruned_model_equals_the_gated(kind):
    torch.manual_seed(0)
    model = SSLModel(_models()[kind]).eval()
    gates = Gates(model, ["conv", "heads", "ffn", "layers"])
    assert ("conv_6" in gates.gates) == (kind == "hubert")  # STaR's CNN feeds the layers directly
    macs = ExpectedMacs(model, DURATIONS)

    def count(m):
        return sum(ssl_macs(m, int(round(d * 16000)))["macs"] for d in DURATIONS)

    assert macs.total == count(model) and float(macs({})) == macs.total
    g = torch.Generator().manual_seed(3)
    wavs, lengths = torch.randn(2, 8000, generator=g) * 0.1, torch.tensor([8000, 5600])
    for seed in range(3):
        values = _random_gates(gates, seed)
        pruned = prune_gated(model, values)
        assert float(macs(values)) == count(pruned)
        gates.set_on(model, values)
        with torch.no_grad():
            ref = model(wavs, lengths)
        Gates.clear(model)
        with torch.no_grad():
            out = pruned.eval()(wavs, lengths)
        n = int(ref.lengths.min())
        for a, b in zip(out.hidden_states, ref.hidden_states):
            torch.testing.assert_close(a[:, :n], b[:, :n], atol=1e-5, rtol=1e-5)


def test_expected_macs_is_differentiable_and_a_sum_of_products_of_expectations():
    torch.manual_seed(0)
    model = SSLModel(_models()["hubert"])
    gates = Gates(model, ["conv", "heads", "ffn"])
    macs = ExpectedMacs(model, DURATIONS)
    keep = gates.keep_probabilities()
    value = macs(keep)
    value.backward()
    assert all(g.log_alpha.grad is not None and float(g.log_alpha.grad.abs().sum()) > 0 for g in gates.gates.values())
    # one CNN layer's term: E[c_i] E[c_{i-1}] k T_i -- halving every keep probability of layer 3 halves the terms
    # of layers 3 and 4 that involve it
    half = {k: v.detach() for k, v in keep.items()}
    half["conv_3"] = half["conv_3"] / 2
    frames = macs.cnn_frames
    c2, c3, c4 = (float(keep[f"conv_{i}"].detach().double().sum()) for i in (2, 3, 4))
    drop = (c3 / 2) * c2 * 2 * frames[3] + (c3 / 2) * c4 * 2 * frames[4]
    assert float(macs(keep) - macs(half)) == pytest.approx(drop, rel=1e-6)


def test_the_lagrangian_multipliers_ascend_while_the_model_descends():
    lag = Lagrangian()
    opt = torch.optim.SGD(lag.parameters(), lr=0.1)
    kept = torch.tensor(0.8, requires_grad=True)
    loss = lag(kept, 0.5)  # 0.3 over the target
    loss.backward()
    opt.step()
    assert float(lag.lambda1) == pytest.approx(0.03) and float(lag.lambda2) == pytest.approx(0.009)
    loss = lag(kept, 0.5)
    kept.grad = None
    loss.backward()
    assert float(kept.grad) > 0  # the penalty now pushes the kept fraction down


def test_a_trainer_gives_the_gates_and_multipliers_their_own_learning_rate(tmp_path):
    from s3prl_plugins.train.trainer import Trainer, TrainerConfig

    torch.manual_seed(0)
    model = SSLModel(_models()["star"])
    gates = Gates(model, ["heads"])
    task = PruneTask(_ConstantTask(model), model, gates, ExpectedMacs(model, DURATIONS), 0.5, 10, 0.02)
    trainer = Trainer(TrainerConfig(exp_dir=str(tmp_path), lr=1e-4, max_steps=10), task, ([], [], None))
    assert sorted(g["initial_lr"] for g in trainer.optimizer.param_groups) == [1e-4, 0.02, 0.02]
    assert {g.get("fixed_lr") for g in trainer.optimizer.param_groups} == {None, 0.02}
    assert all(g["weight_decay"] == 0.0 for g in trainer.optimizer.param_groups if g.get("fixed_lr"))


class _ConstantTask(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        loss = sum(p.sum() for p in self.model.parameters()) * 0
        return loss, {"loss": (0.0, 1.0)}


# --------------------------------------------------------------------------------------------- the step
@pytest.fixture(scope="module")
def dp_inputs(tmp_path_factory):
    from tiny_data import make_tiny_data

    root = tmp_path_factory.mktemp("dp")
    data, labels = make_tiny_data(str(root), n_utts=8, classes=16)
    torch.manual_seed(0)
    teacher = str(root / "teacher.pt")
    cfg = hubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=48,
        conv_layers=[(32, 10, 5), (32, 8, 4), (32, 4, 4), (32, 4, 4)],
        pos_conv_kernel=8,
        pos_conv_groups=4,
        with_head=True,
        final_dim=16,
        num_classes=(16,),
    )
    save_checkpoint(teacher, SSLModel(cfg))
    return root, data, labels, teacher


def _dp_config(root, data, labels, model, name, **step):
    from tiny_data import tiny_chain_config

    dp = {"method": "dp", "target_macs": 0.5, "updates": 10, "warmup": 2, "reg_lr": 2.0, **step}
    return tiny_chain_config(model, data, labels, root / name, [dp])


def test_dp_prunes_a_waveform_teacher_towards_the_budget_and_the_result_loads_as_star_hubert_local(dp_inputs):
    import s3prl.hub as hub

    import s3prl_plugins  # noqa: F401 - registers the entries

    root, data, labels, teacher = dp_inputs
    cfg = _dp_config(root, data, labels, teacher, "dp", final_updates=2)
    rows = pipeline.run_compress(cfg)
    row = rows[1]
    assert row["method"] == "dp" and row["prune_updates"] == 10 and row["updates"] == 2
    assert row["objective_after"]["type"] == "distillation"
    assert row["objective_after"]["objectives"] == {"layer_wise": 1.0, "intra_layer": 1.0}
    assert os.path.isfile(os.path.join(cfg["exp_dir"], "00_teacher.pt"))  # the unpruned model distils the pruned
    out = os.path.join(cfg["exp_dir"], "01_dp1")
    assert os.path.isdir(os.path.join(out, "prune", "checkpoints"))
    pruned = load_checkpoint(os.path.join(out, "model.pt"))[0].eval()
    whole = load_checkpoint(teacher)[0]
    assert row["macs_kept_gated"] < 1.0  # the profiler's count of what was left, against the whole model's:
    assert ExpectedMacs(pruned).total / ExpectedMacs(whole).total == pytest.approx(row["macs_kept_gated"], abs=1e-6)
    assert pruned.config.embed_dim == whole.config.embed_dim and pruned.config.num_layers == 2
    assert row["shape"].startswith("CNN ")
    expert = hub.star_hubert_local(ckpt=os.path.join(out, "model.pt")).eval()
    wav = torch.randn(4000) * 0.1
    with torch.no_grad():
        got = expert([wav])["hidden_states"]
        ref = pruned(wav[None]).hidden_states
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=0)


def test_dp_resumes_mid_pruning_where_an_uninterrupted_run_ends(dp_inputs, caplog):
    import logging

    root, data, labels, teacher = dp_inputs
    whole = _dp_config(root, data, labels, teacher, "whole", final_updates=0)
    pipeline.run_compress(whole)
    cut = _dp_config(root, data, labels, teacher, "cut", final_updates=0)
    # a run killed after 4 of the 10 pruning updates: its checkpoint at update 4 is what a resume starts from
    first = copy.deepcopy(cut)
    first["steps"][0]["updates"] = 4
    pipeline.run_compress(first)
    os.remove(os.path.join(cut["exp_dir"], "01_dp1", "metrics.json"))  # as if it had been killed before the end
    os.remove(os.path.join(cut["exp_dir"], "01_dp1", "model.pt"))
    with caplog.at_level(logging.INFO, logger="s3prl_plugins.train.trainer"):
        pipeline.run_compress(cut)
    assert "at step 4 " in caplog.text and "resumed from" in caplog.text  # the gates and multipliers with it
    a = load_checkpoint(os.path.join(whole["exp_dir"], "01_dp1", "model.pt"))[0].state_dict()
    b = load_checkpoint(os.path.join(cut["exp_dir"], "01_dp1", "model.pt"))[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dp_refuses_an_unreachable_budget_and_bad_keys_by_name(dp_inputs):
    root, data, labels, teacher = dp_inputs
    with pytest.raises(PruningError, match=r"target_macs 0.001 cannot be reached .* smallest this model can reach is"):
        pipeline.run_compress(_dp_config(root, data, labels, teacher, "tiny", target_macs=0.001))
    assert not os.path.exists(root / "tiny" / "01_dp1")
    with pytest.raises(
        ConfigError, match=r"steps\[0\].units\[1\]: must be one of conv, heads, ffn, layers, not 'head'"
    ):
        pipeline.check_config(_dp_config(root, data, labels, teacher, "x", units=["conv", "head"]))
    with pytest.raises(ConfigError, match=r"target_macs: must be < 1"):
        pipeline.check_config(_dp_config(root, data, labels, teacher, "x", target_macs=1.0))
    with pytest.raises(ConfigError, match=r"steps\[0\].objectives.star: unknown key; valid keys: avg_attn"):
        pipeline.check_config(_dp_config(root, data, labels, teacher, "x", objectives={"star": 1.0}))
    # a step's loss setting of an objective, with no objectives of the step's own: refused up front, by name
    with pytest.raises(ConfigError, match=r"steps\[0\].loss.normalize: an objective's setting; give the step its"):
        pipeline.check_config(_dp_config(root, data, labels, teacher, "x", loss={"normalize": "dim"}))
    with pytest.raises(ConfigError, match=r"steps\[0\].loss.max_mismatc: unknown key"):
        pipeline.check_config(_dp_config(root, data, labels, teacher, "x", loss={"max_mismatc": 1}))
    with pytest.raises(
        ConfigError, match=r"steps\[0\].objectives.layer_wise.normalise: unknown key \(did you mean 'normalize'\?\)"
    ):
        pipeline.check_config(
            _dp_config(root, data, labels, teacher, "x", objectives={"layer_wise": {"normalise": "l2"}})
        )


def test_a_chain_refuses_a_base_dir_measured_on_another_model(dp_inputs, tmp_path):
    root, data, labels, teacher = dp_inputs
    first = _dp_config(root, data, labels, teacher, "guard_a")
    first.update(steps=[{"method": "first_k", "layers": 1}], base_dir=str(tmp_path / "base"))
    pipeline.run_compress(first)
    other = str(tmp_path / "other.pt")
    save_checkpoint(other, load_checkpoint(teacher)[0])
    second = dict(first, model=other, exp_dir=str(tmp_path / "guard_b"))
    with pytest.raises(ConfigError, match=r"base_dir .*base holds the measurement of .*teacher.pt, not of .*other.pt"):
        pipeline.run_compress(second)


def test_the_librispeech_dphubert_config_is_a_valid_chain():
    import yaml
    from paths import REPO

    from s3prl_plugins.train.trainer import TrainerConfig

    with open(os.path.join(REPO, "egs/librispeech/star/conf/dphubert.yaml")) as f:
        cfg = yaml.safe_load(f)
    pipeline.check_config(cfg)
    TrainerConfig(**cfg["trainer"])
    (step,) = cfg["steps"]
    # DPHuBERT's schedule (pyf98/DPHuBERT run.sh) and STaRHuBERT's MACs ratio to HuBERT BASE (463.5 / 1669 G)
    assert (step["updates"], step["warmup"], step["reg_lr"], step["final_updates"]) == (50000, 5000, 0.02, 25000)
    assert step["target_macs"] == round(463.5 / 1669, 3) and cfg["model"] == "hubert_base"


def test_dp_distils_a_model_in_another_format_from_itself(dp_inputs, tmp_path):
    """As the LibriSpeech config does with ``hubert_base``: the chain's model and teacher are any load_pretrained
    source (here an s3prl HuBERT checkpoint file), converted; the model distils its pruned self."""
    from refs import s3prl_hubert_ckpt

    root, data, labels, _ = dp_inputs
    source = str(tmp_path / "hubert_s3prl.pt")
    torch.save(s3prl_hubert_ckpt(embed_dim=32, conv="[(32, 10, 5)] + [(32, 8, 4)] + [(32, 4, 4)] * 2"), source)
    cfg = _dp_config(root, data, labels, source, "foreign", final_updates=1, updates=2)
    cfg["objective"] = {"type": "distillation", "teacher": source, "objectives": {"layer_wise": 1.0}}
    cfg["exp_dir"] = str(tmp_path / "chain")
    rows = pipeline.run_compress(cfg)
    assert rows[0]["source"] == source and rows[0]["loss"] == pytest.approx(0.0, abs=1e-6)  # itself: nothing to learn
    assert rows[1]["prune_updates"] == 2 and rows[1]["objective_after"]["teacher"] == source
    assert not os.path.exists(os.path.join(cfg["exp_dir"], "00_teacher.pt"))  # its own teacher: nothing saved


def test_the_budget_alone_brings_the_expected_macs_to_the_target():
    """The Lagrangian's min-max on its own (no distillation pulling the other way): the gates and multipliers,
    at DPHuBERT's 0.02 under Adam, settle the expected fraction of MACs kept on the target and stay there."""
    torch.manual_seed(0)
    model = SSLModel(_models()["hubert"])
    gates, lag = Gates(model, ["conv", "heads", "ffn", "layers"]), Lagrangian()
    macs = ExpectedMacs(model, DURATIONS)
    opt = torch.optim.Adam([*gates.parameters(), *lag.parameters()], lr=0.02)
    kept_at = []
    for step in range(900):
        target = 1 - 0.5 * min(1.0, step / 300)
        kept = macs(gates.keep_probabilities()) / macs.total
        opt.zero_grad()
        lag(kept.float(), target).backward()
        opt.step()
        kept_at.append(float(kept))
    assert kept_at[0] > 0.99 and abs(kept_at[-1] - 0.5) < 0.01 and max(abs(k - 0.5) for k in kept_at[-100:]) < 0.02
