"""DistilHuBERT as s3prl trains it (Chang et al. 2022): initialisation from the teacher, the heads'
parameter count, export to s3prl's own distiller_local format (the stock entry gives our hidden states),
and the report's frame-rate plot."""

import os

import pytest
import torch

from s3prl_plugins.models.convert.export import to_s3prl_distiller
from s3prl_plugins.models.convert.keymap import ConversionError
from s3prl_plugins.models.factories import distilhubert_config, hubert_config
from s3prl_plugins.models.ssl_model import SSLModel, count_parameters
from s3prl_plugins.train.distill import init_from_teacher

CONV = [(32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 2, 2), (32, 2, 2)]


def _teacher():
    torch.manual_seed(1)
    return SSLModel(
        hubert_config(
            embed_dim=48,
            num_layers=4,
            num_heads=4,
            ffn_dim=96,
            with_head=False,
            conv_layers=CONV,
            pos_conv_kernel=8,
            pos_conv_groups=4,
        )
    )


def _student(pred=(2, 4), **kw):
    torch.manual_seed(2)
    return SSLModel(
        distilhubert_config(
            num_layers=2,
            embed_dim=48,
            num_heads=4,
            ffn_dim=96,
            conv_layers=CONV,
            pred_layers=pred,
            out_dim=48,
            pos_conv_kernel=8,
            pos_conv_groups=4,
            **kw,
        )
    )


def test_heads_kept_give_the_papers_27_03_m():
    """Chang et al. 2022 Table 3 (keep the heads): 27.03 M; without them 23.49 M."""
    with torch.device("meta"):
        with_heads = SSLModel(distilhubert_config())
        without = SSLModel(distilhubert_config(pred_layers=None))
    assert round(count_parameters(with_heads) / 1e6, 2) == 27.03
    assert round(count_parameters(without) / 1e6, 2) == 23.49


def test_init_from_teacher_copies_cnn_projection_posconv_and_first_layers():
    teacher, student = _teacher(), _student()
    copied = init_from_teacher(student, teacher)
    t, s = teacher.state_dict(), student.state_dict()
    for key in (
        "frontend.conv_layers.0.conv.weight",
        "feature_projection.weight",
        "encoder.pos_conv.conv.bias",
        "encoder.layers.0.attention.q_proj.weight",
        "encoder.layers.1.feed_forward.fc2.weight",
    ):
        assert key in copied and torch.equal(t[key], s[key])
    assert not any(
        k.startswith(("head.", "encoder.layer_norm")) for k in copied
    )  # as s3prl: heads random, LN not copied
    narrow = SSLModel(
        distilhubert_config(
            num_layers=2,
            embed_dim=32,
            num_heads=4,
            ffn_dim=96,
            conv_layers=CONV,
            pred_layers=None,
            pos_conv_kernel=8,
            pos_conv_groups=4,
        )
    )
    with pytest.raises(ValueError, match=r"init_from_teacher: \S+ is \(32"):
        init_from_teacher(narrow, teacher)


def test_init_from_teacher_through_the_distillation_config(tmp_path):
    from s3prl_plugins.models.checkpoint import save_checkpoint
    from s3prl_plugins.train.distill import build_task

    teacher = _teacher()
    path = str(tmp_path / "teacher.pt")
    save_checkpoint(path, teacher)
    cfg = {
        "teacher": {"source": path},
        "student": {
            "factory": "distilhubert_config",
            "args": dict(
                num_layers=2,
                embed_dim=48,
                num_heads=4,
                ffn_dim=96,
                conv_layers=[list(c) for c in CONV],
                pred_layers=[2, 4],
                out_dim=48,
                pos_conv_kernel=8,
                pos_conv_groups=4,
            ),
            "init_from_teacher": True,
        },
        "objectives": {"l1_cos": 1.0},
    }
    task = build_task(cfg)
    assert torch.equal(
        task.student.state_dict()["encoder.layers.1.attention.k_proj.weight"],
        teacher.state_dict()["encoder.layers.1.attention.k_proj.weight"],
    )
    cfg["student"]["init_from_teacher"] = {"layers": False, "cnn": True}
    with pytest.raises(ValueError, match="unknown key"):
        build_task(cfg)


@pytest.mark.parametrize(
    "pred, cnn_pruned", [((2, 4), False), ((4,), False), ((2, 4), True)], ids=["three_heads_style", "one_head", "cnn"]
)
def test_stock_distiller_local_gives_our_hidden_states(tmp_path, pred, cnn_pruned):
    """s3prl's own DistillerModel, from our export: projected features, every layer and every head agree --
    also with the CNN's channels pruned (per-layer widths in s3prl's conv spec string)."""
    import s3prl.hub as hub

    from s3prl_plugins.compress import prune_conv_channels

    student = _student(pred).eval()
    if cnn_pruned:
        student = prune_conv_channels(student, {0: [0, 5], 3: list(range(10)), 6: [1, 2, 3]}).eval()
    path = str(tmp_path / "distiller_local.pt")
    torch.save(to_s3prl_distiller(student), path)
    stock = hub.distiller_local(ckpt=path).eval()
    wavs = [torch.randn(16000), torch.randn(11000)]
    with torch.no_grad():
        ref = stock(wavs)["hidden_states"]
        x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        out = student(x, torch.tensor([16000, 11000]))
        preds = student.head(out.hidden_states[-1]).unbind(1)
    ours = [out.features] + out.hidden_states[1:] + list(preds)
    assert len(ref) == len(ours) == 1 + 2 + len(pred)
    n = int(out.lengths[1])
    for r, o in zip(ref, ours):
        torch.testing.assert_close(r[0], o[0], atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(r[1, :n], o[1, :n], atol=2e-4, rtol=1e-4)


def test_distiller_export_refuses_what_s3prl_cannot_hold():
    with pytest.raises(ConversionError, match="sequence subsampling"):
        to_s3prl_distiller(_student(subsampling={"type": "avg", "stride": 2}))
    with pytest.raises(ConversionError, match="no DistilHuBERT prediction heads"):
        to_s3prl_distiller(_student(pred=None))


def test_distillation_exports_distiller_local_beside_model_pt(tmp_path):
    from tiny_data import make_tiny_data, make_tiny_teacher, tiny_distill_config

    from s3prl_plugins.train.distill import run_distill

    data, _ = make_tiny_data(str(tmp_path))
    teacher = make_tiny_teacher(str(tmp_path / "teacher.pt"))
    cfg = tiny_distill_config(str(tmp_path), data, teacher, {"l1_cos": 1.0}, max_steps=2, valid_every=2)
    cfg["student"] = {
        "factory": "distilhubert_config",
        "args": dict(
            num_layers=1,
            embed_dim=16,
            num_heads=2,
            ffn_dim=32,
            conv_layers=[[16, 10, 5], [16, 8, 4], [16, 4, 4], [16, 4, 4]],
            pred_layers=[1, 2],
            out_dim=32,
            pos_conv_kernel=8,
            pos_conv_groups=4,
        ),
    }
    run_distill(cfg)
    exp = cfg["trainer"]["exp_dir"]
    assert os.path.isfile(os.path.join(exp, "model.pt")) and os.path.isfile(os.path.join(exp, "distiller_local.pt"))
    import s3prl.hub as hub

    assert (
        len(hub.distiller_local(ckpt=os.path.join(exp, "distiller_local.pt"))([torch.randn(8000)])["hidden_states"])
        == 1 + 1 + 2
    )


def test_report_plots_per_against_frame_rate(tmp_path):
    pytest.importorskip("matplotlib")
    from s3prl_plugins.eval.report.report import plot_rate_tradeoff

    report = {
        "base": {"probe_per": 0.25, "frame_rate_hz": 50.0, "gmacs_c_per_second": 0.08},
        "avg4": {"probe_per": 0.31, "frame_rate_hz": 12.5, "gmacs_c_per_second": 0.02},
        "no_probe": {"probe_per": None, "frame_rate_hz": 25.0, "gmacs_c_per_second": 0.04},
    }
    path = plot_rate_tradeoff(report, str(tmp_path / "plot.png"), "test")
    assert path and os.path.getsize(path) > 10_000
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert plot_rate_tradeoff({"base": report["base"]}, str(tmp_path / "none.png")) is None
