"""Profiler: attention MACs are counted, MACs match hand counts, the STaR/HuBERT ratio, the CLI's JSON."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from s3prl_plugins.eval.probe.profile import count_macs, profile_model, ssl_macs, superb_like_lengths
from s3prl_plugins.models import build_model, preset_config, star_hubert_config
from s3prl_plugins.models.ssl_model import SSLModel


@pytest.mark.parametrize("masked", [False, True])
def test_cpu_attention_is_counted(masked):
    B, H, T, D = 2, 4, 50, 16
    q, k, v = (torch.randn(B, H, T, D) for _ in range(3))
    mask = torch.zeros(B, 1, 1, T) if masked else None
    macs = count_macs(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert macs == 2 * B * H * T * T * D  # QK^T and PV


def test_macs_match_hand_count():
    cfg = star_hubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=48,
        conv_layers=[(16, 10, 5), (32, 2, 2)],
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    model = build_model(cfg)
    n = 16000
    t1 = (n - 10) // 5 + 1
    t2 = (t1 - 2) // 2 + 1
    conv = 16 * 10 * t1 + 32 * 16 * 2 * t2
    pos = (t2 + 1) * 32 * (32 // 4) * 8  # "same" padding of an even kernel yields one extra frame, then dropped
    layer = t2 * (4 * 32 * 32 + 2 * 32 * 48) + 2 * t2 * t2 * 32
    m = ssl_macs(model, n)
    assert m["macs_frontend"] == conv
    assert m["macs"] == conv + pos + 2 * layer


def test_superb_like_lengths():
    d = superb_like_lengths()
    assert len(d) == 32 and abs(sum(d) - 224.86) < 1e-6 and min(d) >= 1.0 and max(d) <= 20.0


def test_star_to_hubert_ratio_and_hubert_per_second():
    """Paper: 463.5 / 1669 = 0.278 (SUPERB@SLT protocol) and HuBERT BASE ~7.42 GMACs per second."""
    star = profile_model(build_model(preset_config("star_hubert")), rtf_seconds=0.5, rtf_repeats=1, gpu=False)
    hubert = profile_model(build_model(preset_config("hubert_base")), rtf_seconds=0.5, rtf_repeats=1, gpu=False)
    ratio = star.macs_total / hubert.macs_total
    assert abs(ratio / (463.5 / 1669) - 1) < 0.03, ratio
    assert abs(hubert.macs_per_second / 7.42e9 - 1) < 0.03, hubert.macs_per_second
    assert star.params == 22_308_592 and hubert.params == 94_697_600
    assert 0 < star.macs_c_per_second < star.macs_per_second


def test_profile_cli_json_interface(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3prl_plugins.bin.profile",
            "star_hubert",
            "--format",
            "json",
            "--rtf-seconds",
            "0.5",
            "--rtf-repeats",
            "1",
            "--no-gpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    for key in ("params", "macs_per_second", "macs_c_per_second", "rtf_cpu"):
        assert key in out
    assert out["params"] == 22_308_592 and out["rtf_cpu"] > 0


def test_profile_cli_unknown_name():
    r = subprocess.run(
        [sys.executable, "-m", "s3prl_plugins.bin.profile", "no_such_model_xyz", "--no-gpu"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 2 and "no_such_model_xyz" in r.stderr


@pytest.mark.gpu
def test_gpu_rtf_and_identical_outputs(monkeypatch):
    # cuDNN convolutions run in TF32 by default (10-bit mantissa: 2.8e-3 off on an H100, measured);
    # the parity check is about our code, so compare in full float32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = build_model(preset_config("star_hubert")).eval()
    wav = torch.randn(1, 32000)
    with torch.no_grad():
        cpu = model(wav).hidden_states[-1]
        gpu = model.cuda()(wav.cuda()).hidden_states[-1].cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)
    p = profile_model(model.cpu(), rtf_seconds=1.0, rtf_repeats=2, gpu=True)
    assert p.rtf_gpu is not None and p.rtf_gpu > 0


def test_profile_over_a_wav_list(tmp_path):
    import numpy as np
    import soundfile as sf

    from s3prl_plugins.eval.probe.profile import durations_from_wav_list

    lines = []
    for i, sec in enumerate((1.0, 2.5)):
        path = tmp_path / f"u{i}.flac"
        sf.write(path, np.zeros(int(sec * 16000), dtype="float32"), 16000)
        lines.append(f"utt{i} {path}")
    (tmp_path / "wav.scp").write_text("\n".join(lines) + "\n")
    d = durations_from_wav_list(str(tmp_path / "wav.scp"))
    assert d == [1.0, 2.5]
    model = build_model(
        star_hubert_config(embed_dim=32, num_layers=1, num_heads=4, ffn_dim=8, pos_conv_kernel=8, pos_conv_groups=4)
    )
    p = profile_model(model, durations=d, rtf_seconds=0.5, rtf_repeats=1, gpu=False)
    assert p.seconds == 3.5 and p.macs_total == ssl_macs(model, 16000)["macs"] + ssl_macs(model, 40000)["macs"]
    (tmp_path / "bad.scp").write_text(f"x {tmp_path / 'missing.flac'}\n")
    with pytest.raises(ValueError, match="bad.scp:1"):
        durations_from_wav_list(str(tmp_path / "bad.scp"))


def test_a_layer_with_no_heads_or_no_ffn_units_is_counted_timed_and_trained():
    """A compression chain may take every head of one layer and every FFN unit of another (legal): such a
    layer is its output biases only, and the profiler counts it (torch's FlopCounterMode once failed on
    a no-grad view of a parameter)."""
    cfg = star_hubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=48,
        conv_layers=[(16, 10, 5), (32, 2, 2)],
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    full = profile_model(
        build_model(cfg).eval(), name="full", rtf_seconds=0.5, rtf_repeats=1, gpu=False
    ).macs_per_second
    for heads, ffn in (([0, 4], [48, 48]), ([4, 4], [0, 48]), ([0, 0], [0, 0])):
        torch.manual_seed(0)
        model = SSLModel(cfg.replace(num_heads=heads, ffn_dims=ffn)).eval()
        prof = profile_model(model, name="pruned", rtf_seconds=0.5, rtf_repeats=1, gpu=False)
        assert prof.macs_per_second < full and prof.rtf_cpu > 0, (heads, ffn)
        # training reaches the biases that stand in for the removed heads / units
        model.train()
        model(torch.randn(1, 4000)).hidden_states[-1].sum().backward()
        layer = model.encoder.layers[0]
        grads = (
            layer.attention.out_bias.grad
            if heads[0] == 0
            else layer.feed_forward.out_bias.grad
            if ffn[0] == 0
            else None
        )
        assert grads is None or torch.count_nonzero(grads) > 0
