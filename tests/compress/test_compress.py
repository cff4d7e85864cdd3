"""Compression (Lin et al. 2024): structured pruning, scores (eq. 4-6), weight masks (eq. 3), diagonality
(eq. 9), head replacement (eq. 10), KD (eq. 7-8), the chain, and the hub loading of the results."""

import math
import os

import pytest
import torch
from paths import REPO

from s3prl_plugins.compress import (
    PruningError,
    WeightMasks,
    density_schedule,
    diagonality,
    ffn_l1_scores,
    head_diagonality,
    head_gradient_scores,
    head_l1_scores,
    model_density,
    normalize_within_layers,
    pipeline,
    prune_ffn,
    prune_heads,
    replace_heads,
    select_global,
    select_per_layer,
    truncate_layers,
)
from s3prl_plugins.compress.weight import LossPlateau, masks_from_model, prunable_parameters
from s3prl_plugins.eval.probe.chain_measures import ProfileAndProbes
from s3prl_plugins.losses.kd import cluster_kl
from s3prl_plugins.models import distilhubert_config, melhubert_config, star_hubert_config
from s3prl_plugins.models.checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_checkpoint
from s3prl_plugins.models.ssl_model import SSLModel, zero_weight_macs_per_frame


def run_compress(config):
    """The chain as bin/compress runs it: eval/'s profile and probes as its measures."""
    return pipeline.run_compress(config, ProfileAndProbes(config.get("measure")))


CONV = [(16, 10, 5), (32, 3, 2)] + [(32, 2, 2)] * 5


def _mel(layers=3, heads=4, ffn=48, clusters=16):
    return melhubert_config(
        embed_dim=32,
        num_layers=layers,
        num_heads=heads,
        ffn_dim=ffn,
        stack_frames=2,
        pos_conv_kernel=8,
        pos_conv_groups=4,
        num_clusters=clusters,
    )


def _zoo():
    return {
        "melhubert": _mel(),
        "star": star_hubert_config(
            embed_dim=32, num_layers=3, num_heads=4, ffn_dim=48, conv_layers=CONV, pos_conv_kernel=8, pos_conv_groups=4
        ),
        "distilhubert": distilhubert_config(
            embed_dim=32, num_layers=2, num_heads=4, ffn_dim=48, conv_layers=CONV, pos_conv_kernel=8, pos_conv_groups=4
        ),
    }


def _batch():
    torch.manual_seed(1)
    return torch.randn(2, 8000) * 0.1, torch.tensor([8000, 5600])


def _states(model, wavs, lengths):
    model.eval()
    with torch.no_grad():
        out = model(wavs, lengths)
    return [h[:, : int(out.lengths.min())] for h in out.hidden_states]


def _close(a, b, atol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=atol, rtol=1e-5)


# --------------------------------------------------------------------- structured pruning
@pytest.mark.parametrize("name", ["melhubert", "star", "distilhubert"])
def test_prune_heads_and_ffn_equal_the_model_with_those_columns_zeroed(name):
    torch.manual_seed(0)
    model = SSLModel(_zoo()[name]).eval()
    d = model.config.head_dim
    with torch.no_grad():
        att = model.encoder.layers[0].attention
        att.out_proj.weight[:, 1 * d : 2 * d] = 0  # head 1
        att.out_proj.weight[:, 3 * d : 4 * d] = 0  # head 3
        model.encoder.layers[1].feed_forward.fc2.weight[:, [0, 5, 47]] = 0
    wavs, lengths = _batch()
    ref = _states(model, wavs, lengths)
    pruned = prune_ffn(prune_heads(model, {0: [1, 3]}), {1: [0, 5, 47]})
    assert pruned.config.num_heads[:2] == [2, 4] and pruned.config.ffn_dims[:2] == [48, 45]
    assert isinstance(pruned, SSLModel)
    _close(_states(pruned, wavs, lengths), ref)
    # and the model itself is untouched
    assert model.config.num_heads[0] == 4 and model.encoder.layers[0].attention.q_proj.out_features == 4 * d


def test_a_layer_pruned_to_nothing_keeps_its_biases():
    torch.manual_seed(0)
    model = SSLModel(_mel()).eval()
    with torch.no_grad():
        model.encoder.layers[2].attention.out_proj.weight.zero_()
        model.encoder.layers[2].feed_forward.fc2.weight.zero_()
    wavs, lengths = _batch()
    ref = _states(model, wavs, lengths)
    pruned = prune_ffn(prune_heads(model, {2: [0, 1, 2, 3]}), {2: list(range(48))})
    assert pruned.config.num_heads[2] == 0 and pruned.config.ffn_dims[2] == 0
    _close(_states(pruned, wavs, lengths), ref)


def test_truncate_layers_is_stopping_the_forward_early():
    torch.manual_seed(0)
    model = SSLModel(_mel(layers=4)).eval()
    wavs, lengths = _batch()
    with torch.no_grad():
        ref = model(wavs, lengths, num_layers=2).hidden_states
    first2 = truncate_layers(model, 2)
    assert first2.config.num_layers == 2 and len(first2.encoder.layers) == 2
    with torch.no_grad():
        _close(first2(wavs, lengths).hidden_states, ref)
    with pytest.raises(PruningError, match="cannot keep 5 of 4"):
        truncate_layers(model, 5)


def test_bad_pruning_plans_are_refused_by_name():
    model = SSLModel(_mel())
    with pytest.raises(PruningError, match=r"heads \[4, 7\] do not exist \(the layer has 4\)"):
        prune_heads(model, {0: [1, 4, 7]})
    with pytest.raises(PruningError, match="layer 5 does not exist"):
        prune_heads(model, {5: [0]})
    with pytest.raises(PruningError, match="lists an index twice"):
        prune_ffn(model, {0: [3, 3]})
    with pytest.raises(PruningError, match="without heads"):
        prune_heads(model, {1: [0, 1, 2, 3]}, allow_empty_layer=False)
    with pytest.raises(PruningError, match="are not attention heads"):
        replace_heads(replace_heads(model, {0: [0]}, "identity"), {0: [3]}, "conv")
    # scores that would take every head of a layer, or more than it has
    with pytest.raises(PruningError, match="layer 0 has 4 heads: cannot remove 4 and keep 1"):
        select_per_layer(head_l1_scores(model), 4, min_keep=1)
    with pytest.raises(PruningError, match="cannot remove 10 heads: keeping 1 per layer leaves 9"):
        select_global(head_l1_scores(model), 10, min_keep_per_layer=1)


def test_a_pruned_checkpoint_does_not_load_into_the_unpruned_architecture(tmp_path):
    model = SSLModel(_mel())
    pruned = prune_heads(model, {0: [0]})
    with pytest.raises(CheckpointError, match="shape mismatch|another architecture"):
        load_state_strict(SSLModel(_mel()), pruned.state_dict(), "pruned.pt")


def test_pruned_model_loads_through_s3prl_hub_with_identical_outputs(tmp_path):
    import s3prl.hub as hub

    import s3prl_plugins  # noqa: F401 - registers the entries

    torch.manual_seed(0)
    model = SSLModel(_mel())
    model = replace_heads(
        prune_ffn(prune_heads(model, {0: [1], 2: [0, 3]}), {1: list(range(0, 48, 3))}), {1: [0], 2: [1]}, "conv"
    )
    model = replace_heads(model, {1: [1]}, "identity")
    with torch.no_grad():
        model.encoder.layers[2].attention.head_conv.weight.normal_()
    masks = WeightMasks(model)
    masks.prune_to(model, 0.7)
    model.config.weight_density = round(model_density(model), 6)
    path = str(tmp_path / "pruned.pt")
    save_checkpoint(path, model.eval())
    expert = hub.melhubert_pruned_local(ckpt=path).eval()
    wavs = [torch.randn(8000) * 0.1, torch.randn(5600) * 0.1]
    with torch.no_grad():
        got = expert(wavs)["hidden_states"]
        lengths = torch.tensor([8000, 5600])
        ref = model(torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths).hidden_states
    assert [h.shape for h in got] == [h.shape for h in ref]
    for g, r in zip(got, ref):
        torch.testing.assert_close(g[0], r[0], atol=1e-6, rtol=0)
    cfg = load_checkpoint(path)[0].config
    assert cfg.num_heads == [3, 2, 1] and cfg.identity_heads == [0, 1, 0] and cfg.conv_heads == [0, 1, 1]
    assert cfg.ffn_dims == [48, 32, 48] and cfg.weight_density == pytest.approx(0.7, abs=1e-4)


# --------------------------------------------------------------------------- scores
def test_head_l1_is_eq4_and_ffn_l1_is_eq6():
    torch.manual_seed(0)
    model = SSLModel(_mel())
    att = model.encoder.layers[1].attention
    d = att.head_dim
    want = [
        sum(
            float(w[h * d : (h + 1) * d].abs().sum()) for w in (att.q_proj.weight, att.k_proj.weight, att.v_proj.weight)
        )
        for h in range(4)
    ]
    torch.testing.assert_close(head_l1_scores(model)[1], torch.tensor(want), rtol=1e-5, atol=1e-4)
    ff = model.encoder.layers[2].feed_forward
    U, V = ff.fc1.weight.t(), ff.fc2.weight.t()  # the paper's U (d x 3072) and V (3072 x d)
    want = [sum(float(U[k, i].abs() + V[i, k].abs()) for k in range(32)) for i in range(48)]
    torch.testing.assert_close(ffn_l1_scores(model)[2], torch.tensor(want), rtol=1e-5, atol=1e-4)


class _SquareLoss(torch.nn.Module):
    """A deterministic objective on a model's last layer (eq. 5 holds for any loss)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        out = self.model(batch["wavs"], batch["lengths"])
        h = out.hidden_states[-1]
        valid = (~out.padding_mask).unsqueeze(-1).to(h.dtype)
        loss = ((h - 0.3) ** 2 * valid).sum() / valid.sum()
        return loss, {"loss": (float(loss), 1.0)}


def test_head_gradient_score_is_eq5_by_finite_differences():
    torch.manual_seed(0)
    model = SSLModel(_mel()).double().eval()
    wavs, lengths = _batch()
    batches = [{"wavs": wavs[i : i + 1, : int(lengths[i])].double(), "lengths": lengths[i : i + 1]} for i in range(2)]
    task = _SquareLoss(model)
    got = head_gradient_scores(task, model, batches)
    assert all(p.requires_grad for p in model.parameters())  # restored
    d, eps = model.config.head_dim, 1e-5
    for layer in (0, 2):
        att = model.encoder.layers[layer].attention
        for h in range(4):
            total = 0.0
            for b in batches:  # |dL/d xi_h| per utterance: scale the head's output columns
                vals = []
                for s in (1 + eps, 1 - eps):
                    with torch.no_grad():
                        att.out_proj.weight[:, h * d : (h + 1) * d] *= s
                        vals.append(float(task(b)[0]))
                        att.out_proj.weight[:, h * d : (h + 1) * d] /= s
                total += abs(vals[0] - vals[1]) / (2 * eps)
            assert float(got[layer][h]) == pytest.approx(total, rel=1e-4, abs=1e-8)


def test_global_selection_normalises_within_layers_and_keeps_a_head_per_layer():
    raw = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([100.0, 1.0, 1.0]), torch.tensor([0.1, 0.1, 0.1])]
    norm = normalize_within_layers(raw)
    torch.testing.assert_close(norm[0], raw[0] / math.sqrt(14))
    plan = select_global(norm, 5, min_keep_per_layer=1)
    assert sum(len(v) for v in plan.values()) == 5
    assert all(len(v) < 3 for v in plan.values())  # never a whole layer
    assert plan[1] == [1, 2]  # layer 1's small heads are small relative to its big one
    assert select_per_layer(raw, 1) == {0: [0], 1: [1], 2: [0]}


# ----------------------------------------------------------------------------- weights
def test_density_schedule_is_the_papers():
    s = density_schedule(1.0, 0.05)
    assert s[:9] == [0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.325, 0.3]
    assert s[9:11] == [0.29, 0.28] and s[28] == 0.1 and s[29] == 0.095 and s[-1] == 0.05
    assert len(s) == 9 + 20 + 10
    assert density_schedule(0.6, 0.4) == [0.5, 0.45, 0.4]


def test_global_magnitude_masks_are_eq3_and_never_revive():
    torch.manual_seed(0)
    model = SSLModel(_mel())
    params = prunable_parameters(model)
    assert {n.rsplit(".", 2)[-2] for n in params} == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    values = torch.cat([p.detach().abs().flatten() for p in params.values()])
    orig = {n: p.detach().clone() for n, p in params.items()}
    masks = WeightMasks(model)
    delta = masks.prune_to(model, 0.6)
    kept = int(round(0.6 * values.numel()))
    assert delta == pytest.approx(float(values.sort(descending=True).values[kept - 1]))
    for name, p in params.items():  # eq. 3: m = 0 where |theta| < delta, one threshold for every matrix
        assert torch.equal(masks.mask(name), orig[name].abs() >= delta)
        assert bool((p[~masks.mask(name)] == 0).all())
    assert masks.density() == pytest.approx(0.6, abs=1e-4)
    assert model_density(model) == pytest.approx(0.6, abs=1e-4)
    before = {n: masks.mask(n).clone() for n in masks.names}
    with torch.no_grad():  # weights that grew back after pruning stay pruned at the next step
        for p in params.values():
            p.add_(1.0)
    masks.prune_to(model, 0.5)
    assert all(bool((masks.mask(n) <= before[n]).all()) for n in masks.names)
    with pytest.raises(PruningError, match="at density 0.5000 already, below the target 0.6000"):
        masks.prune_to(model, 0.6)
    assert zero_weight_macs_per_frame(model) == sum(
        int((p == 0).sum()) for n, p in params.items() if n.endswith(".weight")
    )
    rebuilt = masks_from_model(model)
    assert all(torch.equal(rebuilt.mask(n), masks.mask(n)) for n in masks.names)


def test_loss_plateau_is_an_ema_compared_with_window_updates_before():
    trig = LossPlateau(decay=0.9, window=3, tolerance=0.01)
    losses = [5.0, 4.0, 3.0, 2.5, 2.4, 2.4, 2.4, 2.4, 2.4, 2.4] + [2.4] * 40
    ema, hist, fired = None, [], None
    for i, x in enumerate(losses):
        ema = x if ema is None else 0.9 * ema + 0.1 * x
        hist.append(ema)
        want = i >= 3 and abs(hist[i] - hist[i - 3]) < 0.01
        assert trig.update(x) == want
        if want and fired is None:
            fired = i
    assert fired is not None
    state = trig.state_dict()
    again = LossPlateau(decay=0.9, window=3, tolerance=0.01)
    again.load_state_dict(state)
    assert again.update(2.4) == trig.update(2.4)


def test_weight_masks_survive_optimizer_steps_and_a_resume(tmp_path):
    from s3prl_plugins.compress.recovery import RecoveryTask
    from s3prl_plugins.train.trainer import Trainer, TrainerConfig

    torch.manual_seed(0)
    wavs, lengths = _batch()

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"wavs": wavs[i % 2 : i % 2 + 1], "lengths": lengths[i % 2 : i % 2 + 1].clamp(max=8000)}

    data = (Data(), [[0], [1], [2], [3]], lambda items: items[0])

    def run(folder, stop_at=None):
        torch.manual_seed(0)
        model = SSLModel(_mel())
        masks = WeightMasks(model)
        masks.prune_to(model, 0.5)
        task = RecoveryTask(_SquareLoss(model), model, masks=masks)
        cfg = TrainerConfig(exp_dir=str(tmp_path / folder), max_steps=6, lr=1e-2, log_every=1, save_every=2)
        Trainer(cfg, task, data).train(stop_at=stop_at)
        return model, masks

    full, full_masks = run("a")
    params = prunable_parameters(full)
    for name, m in full_masks.items():
        assert bool((params[name][~m] == 0).all())
    assert model_density(full) == pytest.approx(0.5, abs=1e-4)
    assert any(float(p.abs().max()) > 0 for p in params.values())
    run("b", stop_at=3)  # killed after 3 updates
    resumed, resumed_masks = run("b")  # the same folder: resumes from update 3 (masks from the checkpoint)
    for name, m in full_masks.items():
        assert torch.equal(resumed_masks.mask(name), m)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_training_stops_when_the_task_says_it_converged(tmp_path):
    from s3prl_plugins.compress.recovery import RecoveryTask
    from s3prl_plugins.train.trainer import Trainer, TrainerConfig

    torch.manual_seed(0)
    model = SSLModel(_mel())
    wavs, lengths = _batch()
    data = ([{"wavs": wavs, "lengths": lengths}] * 4, [[0], [1], [2], [3]], lambda items: items[0])
    task = RecoveryTask(_SquareLoss(model), model, plateau=LossPlateau(decay=0.5, window=2, tolerance=1e9))
    trainer = Trainer(TrainerConfig(exp_dir=str(tmp_path), max_steps=50, lr=1e-3), task, data)
    trainer.train()
    assert trainer.step == 3  # the first update after the window
    assert os.path.isfile(trainer.latest_checkpoint())


# --------------------------------------------------------------------- diagonal heads
def _diag_direct(a, n):
    total = 0.0
    for i in range(1, n + 1):
        num = sum(float(a[i - 1, j - 1]) * abs(i - j) for j in range(1, n + 1))
        den = max(abs(i - j) for j in range(1, n + 1))
        total += num / den if den else 0.0
    return 1 - total / n


def test_diagonality_is_eq9_on_a_padded_batch():
    torch.manual_seed(0)
    a = torch.softmax(torch.randn(3, 7, 7), -1)
    lengths = torch.tensor([7, 4, 1])
    for b, n in enumerate(lengths.tolist()):
        a[b, :, n:] = 0
        a[b, :n, :n] = a[b, :n, :n] / a[b, :n, :n].sum(-1, keepdim=True)
    got = diagonality(a, lengths)
    for b, n in enumerate(lengths.tolist()):
        assert float(got[b]) == pytest.approx(_diag_direct(a[b], n), abs=1e-6)
    assert float(diagonality(torch.eye(5)[None])[0]) == pytest.approx(1.0)
    assert float(got[2]) == 1.0


def test_head_diagonality_averages_each_head_over_utterances():
    torch.manual_seed(0)
    model = SSLModel(_mel()).eval()
    wavs, lengths = _batch()
    per_head = head_diagonality(model, [{"wavs": wavs, "lengths": lengths}])
    assert [t.shape for t in per_head] == [torch.Size([4])] * 3
    # direct: each utterance alone, the map recomputed from the layer input
    att = model.encoder.layers[1].attention
    seen = {}
    h = att.register_forward_hook(lambda m, args, out: seen.__setitem__("x", args[0]))
    want = torch.zeros(4)
    for i in range(2):
        seen.clear()
        with torch.no_grad():
            model(wavs[i : i + 1, : int(lengths[i])])
            for head, probs in enumerate(att.head_attention(seen["x"])):
                want[head] += _diag_direct(probs[0], probs.size(1)) / 2
    h.remove()
    torch.testing.assert_close(per_head[1], want, atol=1e-5, rtol=0)


def test_replaced_heads_start_as_the_identity_and_match_attention_on_one_frame():
    torch.manual_seed(0)
    model = SSLModel(_mel()).eval()
    ident = replace_heads(model, {0: [1, 2], 2: [0]}, "identity")
    conv = replace_heads(model, {0: [1, 2], 2: [0]}, "conv")
    assert ident.config.num_heads == [2, 4, 3] and ident.config.identity_heads == [2, 0, 1]
    assert conv.config.conv_heads == [2, 0, 1] and conv.encoder.layers[0].attention.head_conv.weight.shape == (2, 1, 21)
    assert not hasattr(ident.encoder.layers[0].attention, "head_conv")
    wavs, lengths = _batch()
    _close(_states(conv, wavs, lengths), _states(ident, wavs, lengths))  # a centre tap is the identity
    one = torch.randn(1, 400) * 0.1  # one 20 ms frame: every attention map is the identity (eq. 10 exact)
    _close(_states(ident, one, None), _states(model, one, None))
    # the identity head skips queries and keys: fewer parameters, the values kept
    q = model.encoder.layers[0].attention.q_proj.weight
    assert ident.encoder.layers[0].attention.q_proj.weight.shape[0] == q.shape[0] // 2


def test_conv_heads_ignore_padded_frames():
    torch.manual_seed(0)
    model = replace_heads(SSLModel(_mel()).eval(), {1: [0, 1]}, "conv")
    with torch.no_grad():
        model.encoder.layers[1].attention.head_conv.weight.normal_()
    wavs, lengths = _batch()
    batched = _states(model, wavs, lengths)
    alone = _states(model, wavs[1:, :5600], None)
    for b, a in zip(batched, alone):
        torch.testing.assert_close(b[1, : a.size(1)], a[0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------- KD
def test_cluster_kl_is_eq7_on_a_padded_batch():
    torch.manual_seed(0)
    t, s = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    lengths = torch.tensor([5, 3])
    for tau in (1.0, 2.0):
        want = 0.0
        for b, n in enumerate(lengths.tolist()):
            kl = 0.0
            for f in range(n):
                p = torch.softmax(t[b, f] / tau, -1)
                q = torch.softmax(s[b, f] / tau, -1)
                kl += float((p * (p.log() - q.log())).sum())
            want += kl / n / 2
        assert float(cluster_kl(t, s, lengths, tau)) == pytest.approx(want, rel=1e-5)
    assert float(cluster_kl(t, t, lengths)) == pytest.approx(0.0, abs=1e-6)


def test_kd_task_trains_a_student_on_the_teachers_posteriors():
    from s3prl_plugins.tasks.distillation import DistillationTask

    torch.manual_seed(0)
    teacher = SSLModel(_mel(layers=3))
    student = SSLModel(_mel(layers=1).replace(mask_embedding=False))
    task = DistillationTask(teacher, student, {"cluster_kl": {"temperature": 2.0}})
    wavs, lengths = _batch()
    loss, logs = task({"wavs": wavs, "lengths": lengths})
    loss.backward()
    assert student.head.final_proj.weight.grad is not None and teacher.head.final_proj.weight.grad is None
    assert "cluster_kl" in logs
    with pytest.raises(ValueError, match="cluster_kl needs a student with a cluster"):
        DistillationTask(teacher, SSLModel(_mel(layers=1, clusters=None)), {"cluster_kl": 1.0})


# ------------------------------------------------------------------------------ the chain
@pytest.fixture(scope="module")
def chain_inputs(tmp_path_factory):
    from tiny_data import make_tiny_data

    root = tmp_path_factory.mktemp("chain")
    data, labels = make_tiny_data(str(root), n_utts=8, classes=16)
    torch.manual_seed(0)
    path = str(root / "melhubert.pt")
    save_checkpoint(path, SSLModel(_mel(layers=3)))
    return root, data, labels, path


def _chain_config(root, data, labels, path, steps, name):
    from tiny_data import tiny_chain_config

    measure = {"diagonality": 4, "rtf_seconds": 0.5, "rtf_repeats": 1}
    return tiny_chain_config(path, data, labels, root / name, steps, measure)


@pytest.mark.slow
def test_the_chain_runs_every_method_keeps_weight_zeros_and_resumes(chain_inputs):
    import csv

    root, data, labels, path = chain_inputs
    steps = [
        {"method": "weight", "densities": [0.8, 0.6], "trigger": {"type": "fixed", "updates": 2}},
        {"method": "heads", "score": "gradient", "remove": 3, "score_fraction": 0.5, "updates": 2},
        {"method": "ffn", "remove": 16, "until": 16, "updates": 1},
        {"method": "replace_heads", "kind": "conv", "remove": 2, "utterances": 4, "updates": 2},
        {"method": "kd", "layers": 2, "updates": 2},
        {"method": "heads", "score": "l1", "remove": 1, "updates": 2},
        {"method": "first_k", "layers": 1},
        {"method": "train", "updates": 2},
    ]
    cfg = _chain_config(root, data, labels, path, steps, "chain")
    cfg["measure"]["sid"] = {"train": data, "test": data}  # the speaker probe of every iteration (Fig. 5's SID)
    rows = run_compress(cfg)
    names = [r["name"] for r in rows]
    assert names == [
        "00_base",
        "01_weight1",
        "02_weight2",
        "03_heads1",
        "04_ffn1",
        "05_ffn2",
        "06_replace_heads1",
        "07_kd1",
        "08_heads1",
        "09_first_k1",
        "10_train1",
    ]
    by = {r["name"]: r for r in rows}
    assert by["02_weight2"]["weight_density"] == pytest.approx(0.6, abs=1e-3)
    # structured steps after weight pruning keep its zeros (the kept weights' zeros are sliced, not revived)
    assert by["03_heads1"]["weight_density"] < 0.65 and by["06_replace_heads1"]["weight_density"] < 0.65
    assert by["03_heads1"]["attention_heads"] == 9 and by["04_ffn1"]["ffn_units"] == 3 * 32
    assert by["05_ffn2"]["ffn_units"] == 3 * 16 and by["06_replace_heads1"]["attention_heads"] == 7
    assert by["07_kd1"]["layers"] == 2 and by["07_kd1"]["objective"] == "distillation"
    assert by["09_first_k1"]["layers"] == 1 and by["09_first_k1"]["updates"] == 0
    assert by["10_train1"]["updates"] == 2 and by["10_train1"]["params"] == by["09_first_k1"]["params"]
    w2 = load_checkpoint(os.path.join(cfg["exp_dir"], "02_weight2", "model.pt"))[0]
    saved = by["02_weight2"]["macs_per_second"] - by["02_weight2"]["macs_nonzero_per_second"]
    assert saved == pytest.approx(zero_weight_macs_per_frame(w2) * 50.0, rel=0.02)  # 50 encoder frames a second
    assert all(0 < r["diagonality"] <= 1 for r in rows if r["attention_heads"])
    assert all(0 <= r["sid_accuracy"] <= 1 for r in rows)
    for r in rows:
        assert math.isfinite(r["loss"]) and r["params"] > 0 and r["rtf_cpu"] > 0
        model, ckpt = load_checkpoint(os.path.join(cfg["exp_dir"], r["name"], "model.pt"))
        assert sum(model.config.num_heads) == r["attention_heads"]
    pruned = load_checkpoint(os.path.join(cfg["exp_dir"], "06_replace_heads1", "model.pt"))[0]
    assert sum(pruned.config.conv_heads) == 2 and pruned.config.weight_density < 0.65
    with open(os.path.join(cfg["exp_dir"], "trajectory.csv")) as f:
        table = list(csv.DictReader(f))
    assert [t["name"] for t in table] == names
    # what each step adds (Step.columns) reaches the table; each row names the field its density is read from
    assert float(table[1]["threshold"]) > 0 and table[3]["removed"].startswith("{") and table[6]["replaced"]
    assert [r.get("density_of") for r in rows[:7]] == [None, "weight_density", "weight_density"] + [
        "attention_heads",
        "ffn_units",
        "ffn_units",
        "attention_heads",
    ]
    from s3prl_plugins.eval.report.compression_report import relative_density

    dens = relative_density(rows)
    assert dens[2] == pytest.approx(0.6, abs=1e-3) and dens[3] == pytest.approx(9 / 12) and dens[7] is None
    from s3prl_plugins.eval.report.compression_report import write_report

    files = write_report([cfg["exp_dir"]], str(root / "report"))
    for key in ("tradeoff", "density", "weight_density", "diagonality", "report"):
        assert files[key] and os.path.getsize(files[key]) > 1000, key
    report = open(files["report"]).read()
    assert "| chain | 02_weight2 |" in report and "SID acc. (%)" in report
    # a rerun finds every iteration done: nothing is trained again, the same rows come back
    stamp = os.path.getmtime(os.path.join(cfg["exp_dir"], "03_heads1", "model.pt"))
    again = run_compress(cfg)
    assert [r["name"] for r in again] == names and again[3]["loss"] == rows[3]["loss"]
    assert os.path.getmtime(os.path.join(cfg["exp_dir"], "03_heads1", "model.pt")) == stamp


def test_the_chain_refuses_bad_steps_before_writing(chain_inputs):

    root, data, labels, path = chain_inputs
    with pytest.raises(ValueError, match=r"steps\[0\].method: must be one of"):
        run_compress(_chain_config(root, data, labels, path, [{"method": "magic"}], "bad0"))
    with pytest.raises(ValueError, match=r"steps\[0\] \(heads\).heads: unknown key"):
        run_compress(_chain_config(root, data, labels, path, [{"method": "heads", "heads": 3}], "bad1"))
    # a key the step cannot do without (issue 32 item 2: it was a KeyError after 00_base was written)
    steps = [{"method": "ffn", "remove": 16, "updates": 1}, {"method": "kd", "updates": 1}]
    with pytest.raises(ValueError, match=r"steps\[1\].layers: missing \(the kd step needs layers\)"):
        run_compress(_chain_config(root, data, labels, path, steps, "bad1b"))
    with pytest.raises(ValueError, match=r"steps\[0\].layers: missing \(the first_k step needs layers\)"):
        run_compress(_chain_config(root, data, labels, path, [{"method": "first_k"}], "bad1c"))
    assert not any(os.path.exists(root / n) for n in ("bad0", "bad1", "bad1b", "bad1c"))
    # a schedule that would take a whole layer's heads; a density the model is already below
    cfg = _chain_config(
        root, data, labels, path, [{"method": "heads", "score": "l1", "remove": 4, "updates": 1}], "bad2"
    )
    with pytest.raises(PruningError, match="layer 0 has 4 heads: cannot remove 4 and keep 1"):
        run_compress(cfg)
    assert not os.path.exists(root / "bad2" / "01_heads1")
    cfg = _chain_config(
        root,
        data,
        labels,
        path,
        [{"method": "weight", "densities": [0.5, 0.7], "trigger": {"type": "fixed", "updates": 1}}],
        "bad3",
    )
    with pytest.raises(ValueError, match=r"steps\[0\].densities: each density must be below the one before"):
        run_compress(cfg)  # a rising schedule: refused before iteration 1 runs (it used to be after)
    assert not os.path.exists(root / "bad3")
    # a chain step whose input has no attention heads left
    cfg = _chain_config(
        root,
        data,
        labels,
        path,
        [
            {"method": "replace_heads", "remove": 12, "utterances": 2, "updates": 1},
            {"method": "replace_heads", "remove": 1, "updates": 1},
        ],
        "bad4",
    )
    with pytest.raises(PruningError, match="no attention heads left"):
        run_compress(cfg)
    # masked prediction on a student without a mask embedding
    cfg = _chain_config(
        root,
        data,
        labels,
        path,
        [{"method": "kd", "layers": 1, "updates": 1}, {"method": "heads", "remove": 1, "updates": 1}],
        "bad5",
    )
    cfg["steps"][1]["score"] = "l1"
    rows = run_compress(cfg)  # after kd the objective is the student's distillation loss: this works
    assert rows[-1]["objective"] == "distillation"


def test_a_waveform_student_is_pruned_with_its_distillation_loss_and_loads_as_star_hubert_local(chain_inputs, tmp_path):
    import s3prl.hub as hub

    import s3prl_plugins  # noqa: F401 - registers the entries

    root, data, labels, _ = chain_inputs
    torch.manual_seed(0)
    star = star_hubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=48,
        conv_layers=[(32, 10, 5), (32, 8, 4), (32, 4, 4), (32, 4, 4)],
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    teacher, student = str(tmp_path / "teacher.pt"), str(tmp_path / "student.pt")
    save_checkpoint(teacher, SSLModel(star.replace(num_layers=3, num_heads=[4] * 3, ffn_dims=[48] * 3)))
    save_checkpoint(student, SSLModel(star))
    cfg = _chain_config(
        root,
        data,
        labels,
        student,
        [
            {"method": "heads", "score": "gradient", "remove": 2, "updates": 2},
            {
                "method": "weight",
                "densities": [0.5],
                "trigger": {"type": "plateau", "decay": 0.5, "window": 1, "tolerance": 1e9, "max_updates": 5},
            },
        ],
        "star_chain",
    )
    cfg["objective"] = {
        "type": "distillation",
        "teacher": teacher,
        "objectives": {"layer_wise": 1.0, "intra_layer": 1.0},
        "loss": {"layer_map": [0, 2, 3]},
    }
    rows = run_compress(cfg)
    assert rows[1]["attention_heads"] == 6 and rows[1]["objective"] == "distillation"
    assert rows[2]["updates"] == 2  # the plateau fired on the second update
    path = os.path.join(cfg["exp_dir"], "02_weight1", "model.pt")
    expert = hub.star_hubert_local(ckpt=path).eval()
    model = load_checkpoint(path)[0]
    assert model.config.weight_density == pytest.approx(0.5, abs=1e-3)
    wav = torch.randn(4000) * 0.1
    with torch.no_grad():
        got = expert([wav])["hidden_states"]
        ref = model(wav[None]).hidden_states
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=1e-6, rtol=0)


REPO = REPO


@pytest.mark.parametrize("recipe", ["egs/mini/conf/compress", "egs/librispeech/melhubert/conf/compress"])
def test_every_recipe_chain_is_a_valid_config(recipe):
    import yaml

    from s3prl_plugins.compress.pipeline import check_config
    from s3prl_plugins.config import merge

    folder = os.path.join(REPO, recipe)
    with open(os.path.join(folder, "common.yaml")) as f:
        common = yaml.safe_load(f)
    chains = sorted(n for n in os.listdir(folder) if n.endswith(".yaml") and n != "common.yaml")
    assert {
        "weight.yaml",
        "heads.yaml",
        "heads_l1.yaml",
        "ffn.yaml",
        "kd.yaml",
        "first_k.yaml",
        "combined.yaml",
        "identity.yaml",
        "conv.yaml",
    } <= set(chains)
    for name in chains:
        with open(os.path.join(folder, name)) as f:
            cfg = merge(common, yaml.safe_load(f))
        check_config(cfg)
        assert cfg["exp_dir"].endswith(name[:-5])
        from s3prl_plugins.train.trainer import TrainerConfig

        TrainerConfig(**cfg.get("trainer", {}))


def test_librispeech_pretraining_configs_build_melhubert_base():
    import yaml

    from s3prl_plugins.models.ssl_model import count_parameters
    from s3prl_plugins.train.pretrain import build_from_section

    for frame, stack, it in ((10, 1, 1), (10, 1, 2), (20, 2, 1), (20, 2, 2)):
        with open(os.path.join(REPO, f"egs/librispeech/melhubert/conf/melhubert_{frame}ms_it{it}.yaml")) as f:
            cfg = yaml.safe_load(f)
        assert cfg["trainer"]["exp_dir"] == f"exp/melhubert_{frame}ms_it{it}"
        assert cfg["data"]["train_labels"] == f"exp/targets/it{it}_{frame}ms/train.km"
        with torch.device("meta"):
            model = build_from_section(cfg["model"])
        c = model.config
        assert (c.num_layers, c.embed_dim, c.num_heads[0], c.ffn_dims[0], c.stack_frames, c.head["num_classes"]) == (
            12,
            768,
            12,
            3072,
            stack,
            512,
        )
        assert count_parameters(model, include_head=False) > 85e6
        assert (cfg["task"]["mask_prob"], cfg["task"]["mask_length"]) == ((0.07, 10) if frame == 10 else (0.14, 5))


def test_compression_plots_keep_each_chain_in_one_colour(monkeypatch, tmp_path):
    """The diagonality panel has only the head-pruning chains, the PER panel also the replacement chains,
    and only the first panel has the legend: a chain must have the same colour in every panel."""
    from s3prl_plugins.eval.report import compression_report as cr

    figs = []
    monkeypatch.setattr(cr, "save_png", lambda fig, path: figs.append(fig) or path)

    def rows(method, diag):
        return [
            {
                "name": f"{i:02d}",
                "method": "none" if i == 0 else method,
                "attention_heads": 16 - 4 * i,
                "per": 0.3 + 0.01 * i,
                "diagonality": (0.5 + 0.01 * i) if diag else None,
                "loss": 2.8,
                "macs_nonzero_per_second": 1e8 - 1e7 * i,
                "params_nonzero": 1e6 - 1e5 * i,
                "rtf_cpu": None if method == "replace_heads" else 0.01,
            }
            for i in range(3)
        ]

    chains = {"identity": rows("replace_heads", False), "heads": rows("heads", True)}
    for plot in (cr.plot_diagonality, cr.plot_tradeoff, cr.plot_density):
        assert plot(chains, str(tmp_path / "x.png"))
        fig = figs.pop()
        colours = {}
        for ax in fig.axes:
            for line in ax.lines:
                assert colours.setdefault(line.get_label(), line.get_color()) == line.get_color(), (
                    plot.__name__,
                    line.get_label(),
                )
        assert set(colours) == {"identity", "heads"} and len(set(colours.values())) == 2


def test_a_new_method_is_one_registered_class(chain_inputs):
    """The registry's promise: a step class declares its keys, iterations and apply; the chain checks,
    runs, measures and resumes it with nothing else edited."""
    from s3prl_plugins.compress import steps

    @steps.register_step
    class DropLastLayer(steps.Step):
        name = "drop_last"
        keys = {"times": (int, {"min": 1}), **steps.UPDATES}

        def iterations(self, step, model):
            for _ in range(int(step.get("times", 1))):
                yield {}

        def apply(self, ctx, model, step, action, objective, row):
            return steps.Applied(
                truncate_layers(model, model.config.num_layers - 1), objective, int(step.get("updates", 1))
            )

    root, data, labels, path = chain_inputs
    try:
        with pytest.raises(ValueError, match=r"steps\[0\].times: must be >= 1, not 0"):
            run_compress(_chain_config(root, data, labels, path, [{"method": "drop_last", "times": 0}], "drop0"))
        rows = run_compress(
            _chain_config(root, data, labels, path, [{"method": "drop_last", "times": 2, "updates": 1}], "drop")
        )
        assert [r["name"] for r in rows] == ["00_base", "01_drop_last1", "02_drop_last2"] and [
            r["layers"] for r in rows
        ] == [3, 2, 1]
        assert rows[2]["updates"] == 1 and rows[2]["rtf_cpu"] > 0
    finally:
        steps.STEPS.pop("drop_last")


def test_compress_imports_nothing_from_eval():
    import ast
    import glob

    folder = os.path.join(REPO, "s3prl_plugins", "compress")
    for path in glob.glob(os.path.join(folder, "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("s3prl_plugins.eval"), (path, node.module)
