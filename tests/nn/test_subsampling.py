"""Sequence subsampling modules (Meng et al. 2022 §2.1-2.2, §5.3) and models built with them: each
against its slow, obvious form, padded batches, Table 2's parameter counts, the tail rule, and the
profiler's MACs falling with the frame rate."""

import json
import os
import subprocess
import sys

import pytest
import torch
from paths import REPO

from s3prl_plugins.eval.probe.profile import profile_model
from s3prl_plugins.models import build_model, preset_config
from s3prl_plugins.models.config import SSLModelConfig
from s3prl_plugins.models.factories import distilhubert_subsampled
from s3prl_plugins.models.ssl_model import SSLModel, count_parameters
from s3prl_plugins.nn.subsampling import (
    CIFWeights,
    FixedSubsampler,
    Subsampler,
    Upsampler,
    alpha_from_segments,
    average_pool,
    cif,
    cif_reference,
    concat_pool,
    expand_segments,
)


def _loop_average(x, lengths, stride):
    out = torch.zeros(x.size(0), -(-x.size(1) // stride), x.size(2), dtype=x.dtype)
    for b in range(x.size(0)):
        n = int(lengths[b])
        for k in range(-(-n // stride)):
            out[b, k] = x[b, k * stride : min(n, (k + 1) * stride)].mean(0)
    return out


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_average_pool_equals_the_loop_on_a_padded_batch(stride):
    x = torch.randn(3, 17, 4, dtype=torch.float64)
    lengths = torch.tensor([17, 9, 1])
    x[1, 9:] = 1e6  # padding never enters an average
    y, n = average_pool(x, lengths, stride)
    assert n.tolist() == [-(-int(v) // stride) for v in lengths]
    ref = _loop_average(x, lengths, stride)
    for b in range(3):
        torch.testing.assert_close(y[b, : n[b]], ref[b, : n[b]])


def test_concat_pool_stacks_consecutive_frames():
    x = torch.arange(2 * 5 * 2, dtype=torch.float32).view(2, 5, 2)
    y, n = concat_pool(x, torch.tensor([5, 3]), 2)
    assert y.shape == (2, 3, 4) and n.tolist() == [3, 2]
    assert y[0, 0].tolist() == x[0, :2].reshape(-1).tolist()
    assert y[0, 2].tolist() == x[0, 4].tolist() + [0.0, 0.0]  # partial window zero-filled
    assert y[1, 1].tolist() == x[1, 2].tolist() + [0.0, 0.0]  # frame 3 is padding


def test_conv_subsampler_gives_each_padded_utterance_what_it_gets_alone():
    torch.manual_seed(0)
    sub = FixedSubsampler("conv", 3, 6)
    x = torch.randn(2, 14, 6)
    lengths = torch.tensor([14, 8])
    y, n = sub(x, lengths)
    alone, n1 = sub(x[1:, :8], None)
    assert n.tolist() == [5, 3] and n1.tolist() == [3]
    torch.testing.assert_close(y[1, :3], alone[0])
    assert sub.conv.kernel_size == (3,) and sub.conv.stride == (3,)


def test_upsamplers_return_the_front_end_rate():
    x = torch.randn(2, 4, 8)
    rep = Upsampler("repeat", 3, 8)(x, 11)
    assert rep.shape == (2, 11, 8)
    torch.testing.assert_close(rep[:, 3:6], x[:, 1:2].expand(-1, 3, -1))
    deconv = Upsampler("deconv", 3, 8)
    assert deconv(x, 10).shape == (2, 10, 8)
    assert count_parameters(deconv) == 8 * 8 * 3 + 8


# Meng et al. 2022, Table 2 (Params, millions): DistilHuBERT 23.49, conv-deconv 2 25.20, conv-deconv 4
# 26.90, avg 23.49, CIF 24.81 (ours 24.80: see CIFWeights' docstring).
@pytest.mark.parametrize(
    "cfg,millions",
    [
        (lambda: preset_config("distilhubert"), 23.49),
        (lambda: distilhubert_subsampled("avg", 4), 23.49),
        (lambda: distilhubert_subsampled("conv", 2, "deconv"), 25.20),
        (lambda: distilhubert_subsampled("conv", 4, "deconv"), 26.90),
        (lambda: preset_config("distilhubert_cif"), 24.80),
    ],
    ids=["distilhubert", "avg", "conv_deconv2", "conv_deconv4", "cif"],
)
def test_parameter_counts_of_table_2(cfg, millions):
    with torch.device("meta"):
        model = SSLModel(cfg())
    assert round(count_parameters(model) / 1e6, 2) == millions


def test_cif_module_counts_and_padding():
    w = CIFWeights(512)
    assert count_parameters(w) == 512 * 512 * 5 + 512 + 2 * 512 + 512 + 1 == 1_312_769
    small = CIFWeights(6).eval()
    x = torch.randn(2, 12, 6)
    lengths = torch.tensor([12, 7])
    a = small(x, lengths)
    assert ((a[0] > 0) & (a[0] < 1)).all() and (a[1, 7:] == 0).all()
    torch.testing.assert_close(a[1, :7], small(x[1:, :7], None)[0])
    with pytest.raises(ValueError, match="odd kernel"):
        CIFWeights(6, kernel=4)


def test_alpha_from_segments_makes_cif_average_each_segment():
    ids = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 3], [5, 5, 6, 6, 6, 6, 7, -100, -100, -100]])
    alpha = alpha_from_segments(ids)
    x = torch.randn(2, 10, 3, dtype=torch.float64)
    seg, n = cif(x, alpha.double(), torch.tensor([10, 7]))
    assert n.tolist() == [4, 3]
    spans = [[(0, 3), (3, 5), (5, 9), (9, 10)], [(0, 2), (2, 6), (6, 7)]]
    for b, sp in enumerate(spans):
        for k, (s, e) in enumerate(sp):
            torch.testing.assert_close(seg[b, k], x[b, s:e].mean(0))
    assert (alpha[1, 7:] == 0).all()


def test_expand_segments_gives_every_frame_its_segment():
    ids = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2]])
    alpha = alpha_from_segments(ids)
    segs = torch.tensor([[[1.0], [2.0], [3.0]]])
    out = expand_segments(segs, alpha, None, torch.tensor([3]))
    assert out[0, :, 0].tolist() == [1, 1, 1, 2, 2, 3, 3, 3]


def test_tail_rule_training_inference_and_never_firing():
    """Training drops an incomplete tail; eval keeps it from 0.5; an α that never fires keeps its
    tail in both (one segment: the mean of the utterance)."""
    sub = Subsampler({"type": "cif", "stride": 4}, 2)
    x = torch.randn(3, 10, 2)
    alpha = torch.zeros(3, 10)
    alpha[0] = 0.26  # total 2.6: 2 segments + a 0.6 tail
    alpha[1] = 0.22  # total 2.2: 2 + 0.2
    alpha[2] = 0.05  # total 0.5: never fires
    lengths = torch.full((3,), 10)
    sub.train()
    assert sub(x, lengths, alpha=alpha).lengths.tolist() == [2, 2, 1]
    sub.eval()
    out = sub(x, lengths, alpha=alpha)
    assert out.lengths.tolist() == [3, 2, 1]
    torch.testing.assert_close(out.x[2, 0], x[2].mean(0))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_collapsed_alpha_still_gives_every_utterance_a_segment(mode):
    """A CIF whose α collapsed (a sigmoid saturated: total weight below 1e-6, or exactly 0) still hands the
    encoder one segment per utterance -- the weighted average, or zeros when there is no weight at all --
    equal to the loop reference; a whole batch of such utterances once reached the encoder with 0 frames.
    Below 1e-6 in total the weights are float dust (the cumulative sum snaps to 0): the plain mean."""
    sub = Subsampler({"type": "cif", "stride": 4}, 2)
    getattr(sub, mode)()
    x = torch.randn(3, 12, 2, dtype=torch.float64)
    alpha = torch.full((3, 12), 1e-9, dtype=torch.float64)
    alpha[0] = torch.linspace(0.01, 0.08, 12)  # total 0.54: never fires, a real weighted average
    alpha[2] = 0.0
    lengths = torch.tensor([12, 7, 12])
    out = sub(x, lengths, alpha=alpha)
    assert out.lengths.tolist() == [1, 1, 1]
    torch.testing.assert_close(out.x[0, 0], (alpha[0, :, None] * x[0]).sum(0) / alpha[0].sum())
    torch.testing.assert_close(out.x[1, 0], x[1, :7].mean(0))
    torch.testing.assert_close(out.x[2, 0], x[2].mean(0))
    ref, n = cif_reference(x, alpha, lengths, tail_threshold=sub._threshold(alpha, lengths))
    # and the whole model runs on such a batch (it crashed in the positional convolution)
    model = SSLModel(_tiny({"type": "cif", "stride": 2})).train()
    with torch.no_grad():
        model.subsampler.weights.proj.bias.fill_(-1e4)  # sigmoid(-1e4) = 0: every alpha exactly 0
    y = model(torch.randn(2, 4000), torch.tensor([4000, 3000]))
    assert y.subsampled.lengths.tolist() == [1, 1]
    assert n.tolist() == [1, 1, 1]
    torch.testing.assert_close(out.x, ref)


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="subsampling type"):
        SSLModelConfig(subsampling={"type": "max"})
    with pytest.raises(ValueError, match="integer stride"):
        SSLModelConfig(subsampling={"type": "avg", "stride": 2.5})
    with pytest.raises(ValueError, match="fixed subsampling only"):
        SSLModelConfig(subsampling={"type": "cif", "upsample": "repeat"})
    with pytest.raises(ValueError, match="unknown subsampling key"):
        SSLModelConfig(subsampling={"type": "avg", "rate": 2})


def _tiny(spec):
    return SSLModelConfig(
        conv_layers=[(16, 10, 5), (16, 8, 4), (16, 4, 4)],
        conv_norm="layer_norm",
        feature_layer_norm=False,
        embed_dim=24,
        num_layers=2,
        num_heads=[2, 2],
        head_dim=12,
        ffn_dims=[32, 32],
        pos_conv_kernel=8,
        pos_conv_groups=4,
        dropout=0.0,
        attention_dropout=0.0,
        subsampling=spec,
    )


@pytest.mark.parametrize(
    "spec",
    [{"type": "avg", "stride": 2}, {"type": "conv", "stride": 3, "upsample": "deconv"}, {"type": "cif", "stride": 2}],
    ids=["avg", "conv_deconv", "cif"],
)
def test_models_with_subsampling_batch_like_alone(spec):
    torch.manual_seed(0)
    model = build_model(_tiny(spec)).eval()
    wavs = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 5000])
    out = model(wavs, lengths, upsample=spec.get("upsample") is not None)
    alone = model(wavs[1:, :5000])
    n = int(out.lengths[1])
    assert n == alone.lengths[0] and n >= 1
    torch.testing.assert_close(out.hidden_states[-1][1, :n], alone.hidden_states[-1][0], atol=1e-4, rtol=1e-4)
    frames = model.to_frontend_rate(out.hidden_states[-1], out)
    assert frames.shape[:2] == (2, int(out.frontend_lengths.max()))
    if spec.get("upsample"):
        assert out.upsampled.shape == frames.shape
    if spec["type"] == "cif":
        assert out.subsampled.alpha.shape == (2, int(out.frontend_lengths.max()))


def test_segments_topline_needs_segments():
    model = build_model(_tiny({"type": "segments", "stride": 4})).eval()
    wav = torch.randn(1, 8000)
    with pytest.raises(ValueError, match="pass segment_ids"):
        model(wav)
    frames = int(model(wav, segment_ids=torch.zeros(1, 100, dtype=torch.long)).frontend_lengths[0])
    ids = torch.arange(frames)[None] // 5
    out = model(wav, segment_ids=ids)
    assert int(out.lengths[0]) == -(-frames // 5)
    assert count_parameters(model) == count_parameters(build_model(_tiny(None)))
    with pytest.raises(ValueError, match="without sequence subsampling"):
        build_model(_tiny(None))(wav, segment_ids=ids)


def test_macs_c_falls_with_the_frame_rate():
    durations = [2.0, 5.0]
    profs = {
        name: profile_model(
            build_model(preset_config(name)), name, durations, rtf_seconds=1.0, rtf_repeats=1, gpu=False
        )
        for name in ("distilhubert", "distilhubert_avg2", "distilhubert_avg4", "distilhubert_cif")
    }
    c = {k: p.macs_c_total for k, p in profs.items()}
    assert c["distilhubert"] > c["distilhubert_avg2"] > c["distilhubert_avg4"]
    assert c["distilhubert_avg4"] < c["distilhubert_cif"] < c["distilhubert_avg2"]  # + the CIF module at 50 Hz
    fr = {k: p.frame_rate_hz for k, p in profs.items()}
    assert fr["distilhubert"] == pytest.approx(50, abs=0.5) and fr["distilhubert_avg4"] == pytest.approx(12.5, abs=0.3)
    low = profile_model(
        build_model(preset_config("distilhubert_cif")),
        "cif",
        durations,
        rtf_seconds=1.0,
        rtf_repeats=1,
        gpu=False,
        frames_per_segment=8,
    )
    assert low.macs_c_total < c["distilhubert_cif"] and low.frame_rate_hz == pytest.approx(6.25, abs=0.2)


def test_profile_cli_profiles_the_cif_preset():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3prl_plugins.bin.profile",
            "distilhubert_cif",
            "--format",
            "json",
            "--rtf-repeats",
            "1",
            "--rtf-seconds",
            "1",
            "--no-gpu",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    prof = json.loads(out.stdout)
    assert prof["name"] == "distilhubert_cif" and prof["params"] == 24_803_969
    assert prof["frame_rate_hz"] == pytest.approx(12.5, abs=0.2) and prof["macs_c_per_second"] < prof["macs_per_second"]


LIBRI_CONF = os.path.join(REPO, "egs", "librispeech", "distilhubert_cif", "conf")


@pytest.mark.parametrize(
    "name,millions,kind",
    [
        ("distilhubert", 23.49, None),
        ("avg2", 23.49, "avg"),
        ("avg4", 23.49, "avg"),
        ("avg8", 23.49, "avg"),
        ("avg_repeat2", 23.49, "avg"),
        ("conv_deconv2", 25.20, "conv"),
        ("card4", 24.80, "cif"),
        ("dp12.5", 24.80, "cif"),
        ("mfa", 23.49, "segments"),
    ],
)
def test_librispeech_configs_build_the_students_of_table_2(name, millions, kind):
    """Each config of egs/librispeech/distilhubert_cif builds its Table 2 student (heads dropped) with
    s3prl's DistilHuBERT schedule."""
    import yaml

    from s3prl_plugins.train.distill import build_student

    cfg = yaml.safe_load(open(os.path.join(LIBRI_CONF, f"{name}.yaml")))
    with torch.device("meta"):
        student = build_student(cfg["student"])
    assert round(count_parameters(student, include_head=False) / 1e6, 2) == millions
    assert (student.config.subsampling or {}).get("type") == kind
    assert student.config.head["layers"] == [4, 8, 12] and cfg["student"]["init_from_teacher"] is True
    t = cfg["trainer"]
    assert (t["lr"], t["betas"], t["warmup_steps"], t["max_steps"], t["clip_norm"]) == (
        2e-4,
        [0.9, 0.98],
        14000,
        200000,
        5.0,
    )
    assert student.config.feature_grad_mult == 0.1 and cfg["data"]["batch_size"] == 24
