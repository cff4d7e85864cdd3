"""Every speed option's fast path against its plain form: float64 on the CPU (equal), under the CPU's
bf16 autocast (the GPU's mixed precision, as close to float32 as the plain form), gradients too; and
the checkpoint format unchanged by the options (issue 23)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from s3prl_plugins.models import SSLModel
from s3prl_plugins.models.checkpoint import load_checkpoint, save_checkpoint
from s3prl_plugins.models.config import SPEED_OPTIONS, SPEED_OPTIONS_OFF, SSLModelConfig
from s3prl_plugins.models.factories import PRESETS, hubert_config, star_hubert_config
from s3prl_plugins.nn import frontends
from s3prl_plugins.nn.frontends import channel_group_norm
from s3prl_plugins.nn.transformer import ConvPositionalEmbedding, _Fp32ForwardConv1d, conv1d_fp32_island
from s3prl_plugins.tasks.distillation import DistillationTask

CONV = [(32, 10, 5), (32, 8, 4), (32, 4, 4), (32, 4, 4)]


@pytest.fixture(autouse=True)
def fast_paths_on_the_cpu(request, monkeypatch):
    """The speed options take effect on CUDA only (on the CPU the plain forms are faster); here they are
    switched on for the CPU too, so that their numerics are tested where CI runs."""
    if "plain_cpu" not in request.function.__name__:
        monkeypatch.setattr(frontends, "FAST_PATH_DEVICES", {"cuda", "cpu"})


BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _tiny(**kw):
    return hubert_config(
        embed_dim=64,
        num_layers=2,
        num_heads=4,
        ffn_dim=128,
        with_head=False,
        conv_layers=CONV,
        pos_conv_kernel=8,
        pos_conv_groups=4,
        dropout=0.0,
        attention_dropout=0.0,
        **kw,
    )


def _wavs(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6400, 5000, 3900][:batch])
    wavs = (
        0.1
        * torch.randn(batch, int(lengths.max()), generator=g)
        * (torch.arange(int(lengths.max()))[None] < lengths[:, None])
    )
    return wavs, lengths


# --- the CNN's per-channel GroupNorm --------------------------------------------------------------------


def test_channel_group_norm_equals_group_norm_in_float64_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    x = (3.0 + 2.0 * torch.randn(3, 16, 257, generator=g, dtype=torch.float64)).requires_grad_()
    w = torch.randn(16, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(16, generator=g, dtype=torch.float64, requires_grad=True)
    ref = F.group_norm(x, 16, w, b, 1e-5)
    out = channel_group_norm(x, w, b, 1e-5)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    up = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    grads_ref = torch.autograd.grad(ref, (x, w, b), up)
    grads = torch.autograd.grad(out, (x, w, b), up)
    for a, r in zip(grads, grads_ref):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=0)
    assert torch.autograd.gradcheck(
        lambda x, w, b: channel_group_norm(x, w, b, 1e-5), (x[:1, :4, :20].detach().requires_grad_(), w[:4], b[:4])
    )


def test_channel_group_norm_under_bf16_autocast_stays_bf16_and_matches_float32():
    """The plain form upcasts to float32 under CUDA's autocast; the fast one keeps the activations in bf16 with
    float32 statistics: its error against float32 is bf16 rounding of the output, no more."""
    g = torch.Generator().manual_seed(1)
    x32 = 0.5 + torch.randn(2, 32, 1000, generator=g)
    norm = torch.nn.GroupNorm(32, 32)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    ref = norm(x32.to(torch.bfloat16).float())  # the bf16 activations a convolution would hand over
    with torch.autocast(**BF16):
        x = x32.to(torch.bfloat16)
        plain = norm(x)
        fast = channel_group_norm(x, norm.weight, norm.bias, norm.eps)
    assert fast.dtype == torch.bfloat16  # (CUDA's autocast runs the plain group_norm in float32, the CPU's does not)
    torch.testing.assert_close(fast.float(), plain.float(), atol=3e-2, rtol=1e-2)
    torch.testing.assert_close(fast.float(), ref, atol=2e-2, rtol=1e-2)
    # gradients reach the float32 affine parameters in float32
    with torch.autocast(**BF16):
        fast = channel_group_norm(x32.to(torch.bfloat16), norm.weight, norm.bias, norm.eps)
    up = torch.randn(fast.shape, generator=g)  # (a plain sum would give the weight a zero gradient)
    gw, gb = torch.autograd.grad(fast.float(), (norm.weight, norm.bias), up)
    rw, rb = torch.autograd.grad(norm(x32.to(torch.bfloat16).float()), (norm.weight, norm.bias), up)
    assert gw.dtype == torch.float32
    assert F.cosine_similarity(gb, rb, dim=0) > 0.999
    assert F.cosine_similarity(gw, rw, dim=0) > 0.999


# --- the positional convolution's float32 island -----------------------------------------------------------


def test_fp32_forward_conv_is_a_convolution_with_exact_gradients_in_float64():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 30, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, generator=g, dtype=torch.float64, requires_grad=True)
    out = _Fp32ForwardConv1d.apply(x, w, b, 3, 4, torch.float64)
    torch.testing.assert_close(out, F.conv1d(x, w, b, padding=3, groups=4), atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda x, w, b: _Fp32ForwardConv1d.apply(x, w, b, 3, 4, torch.float64), (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: _Fp32ForwardConv1d.apply(x, w, None, 2, 4, torch.float64), (x, w))


def _pos_conv(precision, seed=3):
    torch.manual_seed(seed)
    return ConvPositionalEmbedding(64, 16, 4, precision)


@pytest.mark.parametrize("precision", ["fp32_forward", "fp32"])
def test_pos_conv_island_under_bf16_autocast(precision):
    """Forward: the float32 convolution rounded once to bf16 (closer to float32 than the plain bf16 form).
    Backward (fp32_forward): bit for bit the plain form's bf16 backward, given the same upstream gradient."""
    g = torch.Generator().manual_seed(4)
    x32 = torch.randn(2, 200, 64, generator=g)
    plain_m, fast_m = _pos_conv("autocast"), _pos_conv(precision)
    fast_m.load_state_dict(plain_m.state_dict())
    with torch.no_grad():
        ref = plain_m(x32.to(torch.bfloat16).float())
    xs = []
    outs = []
    for m in (plain_m, fast_m):
        x = x32.to(torch.bfloat16).requires_grad_()
        with torch.autocast(**BF16):
            outs.append(m(x))
        xs.append(x)
    plain, fast = outs
    assert plain.dtype == fast.dtype == torch.bfloat16
    err_fast, err_plain = (fast.float() - ref).abs().max(), (plain.float() - ref).abs().max()
    assert err_fast <= err_plain + 1e-6 and err_fast < 0.02 * ref.abs().max()
    # backward with one upstream gradient through both conv islands (the GELU after them differs only by the
    # forward's rounding): compare the convolution's own backward
    up = torch.randn(2, 64, 201, generator=g).to(torch.bfloat16)  # even kernel: one extra frame
    x = x32.to(torch.bfloat16).transpose(1, 2).contiguous()
    grads = []
    for m in (plain_m, fast_m):
        xi = x.clone().requires_grad_()
        with torch.autocast(**BF16):
            y = (
                m.conv(xi)
                if m.precision == "autocast"
                else conv1d_fp32_island(m.conv, xi, m.precision == "fp32_forward")
            )
        params = [m.conv.parametrizations.weight.original0, m.conv.parametrizations.weight.original1, m.conv.bias]
        grads.append(torch.autograd.grad(y, [xi] + params, up))
    for name, a, b in zip(("x", "g", "v", "bias"), grads[0], grads[1]):
        assert a.dtype == b.dtype, name
        if precision == "fp32_forward":
            torch.testing.assert_close(b, a, atol=0, rtol=0, msg=name)
        else:  # float32 backward: closer to the exact gradient, so within bf16 rounding of the plain one
            assert F.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0) > 0.999, name


def test_pos_conv_options_are_one_computation_without_autocast():
    x = torch.randn(2, 50, 64, dtype=torch.float64)
    outs = []
    for precision in ("autocast", "fp32_forward", "fp32"):
        m = _pos_conv(precision).double()
        outs.append(m(x))
    for o in outs[1:]:
        assert torch.equal(o, outs[0])
    with pytest.raises(ValueError, match="fp32_forward"):
        _pos_conv("bf16")


# --- whole models and a distillation step -------------------------------------------------------------------


def _pair(config):
    torch.manual_seed(0)
    fast = SSLModel(config)
    plain = SSLModel(config.replace(**SPEED_OPTIONS_OFF))
    plain.load_state_dict(fast.state_dict())
    return fast, plain


@pytest.mark.parametrize("conv_norm", ["group_norm", "layer_norm"])
def test_model_fast_paths_equal_the_plain_forms_in_float64(conv_norm):
    fast, plain = _pair(_tiny(conv_norm=conv_norm))
    fast.double().train()
    plain.double().train()
    wavs, lengths = _wavs()
    outs = [m(wavs.double(), lengths) for m in (fast, plain)]
    for a, b in zip(outs[0].hidden_states, outs[1].hidden_states):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    losses = [sum(h.pow(2).mean() for h in o.hidden_states) for o in outs]
    losses[0].backward()
    losses[1].backward()
    for (name, p), q in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-9, rtol=1e-7, msg=name)


def test_model_fast_paths_under_bf16_autocast_match_float32_as_well_as_the_plain_forms():
    fast, plain = _pair(_tiny())
    wavs, lengths = _wavs()
    with torch.no_grad():
        ref = plain(wavs, lengths).hidden_states
        outs = {}
        for name, m in (("fast", fast), ("plain", plain)):
            with torch.autocast(**BF16):
                outs[name] = m(wavs, lengths).hidden_states
    for i, r in enumerate(ref):
        valid = ~torch.zeros_like(r[..., 0], dtype=torch.bool)
        err = {k: (o[i].float() - r)[valid].abs().max().item() for k, o in outs.items()}
        assert err["fast"] < 0.1 * r.abs().max(), (i, err)
        assert err["fast"] <= 1.5 * err["plain"] + 1e-3, (i, err)


def test_distillation_step_under_bf16_autocast_fast_vs_plain():
    """One STaR update's loss and gradients under the CPU's bf16 autocast, each measured against the same
    update in float32: the fast paths are within bf16 rounding of it and no further from it than the plain
    forms. (On CPUs with AMX the plain forms drift by ~4 % in the loss, mostly through the bf16 positional
    convolution that the fast path keeps in float32; the fast path stays within 0.2 %.)"""
    torch.manual_seed(0)
    teacher = SSLModel(_tiny())
    student_cfg = star_hubert_config(
        embed_dim=32,
        num_layers=2,
        num_heads=2,
        ffn_dim=64,
        conv_layers=CONV,
        pos_conv_kernel=8,
        pos_conv_groups=4,
        dropout=0.0,
        attention_dropout=0.0,
    )
    student = SSLModel(student_cfg)
    wavs, lengths = _wavs()
    results = {}
    for name, options, bf16 in (
        ("fp32", SPEED_OPTIONS_OFF, False),
        ("fast", SPEED_OPTIONS, True),
        ("plain", SPEED_OPTIONS_OFF, True),
    ):
        teacher.set_speed_options(**options)
        student.set_speed_options(**options)
        task = DistillationTask(
            teacher, student, {"layer_wise": {"method": "direct"}, "intra_layer": {"method": "direct"}}
        )
        student.zero_grad()
        with torch.autocast(**BF16, enabled=bf16):
            loss, _ = task({"wavs": wavs, "lengths": lengths})
        loss.backward()
        results[name] = (loss.item(), torch.cat([p.grad.flatten() for p in student.parameters()]))
    l_ref, g_ref = results["fp32"]
    loss_err = {k: abs(results[k][0] / l_ref - 1) for k in ("fast", "plain")}
    cos = {k: F.cosine_similarity(results[k][1], g_ref, dim=0).item() for k in ("fast", "plain")}
    assert loss_err["fast"] < 1e-2, loss_err
    assert cos["fast"] > 0.99, cos
    assert loss_err["fast"] <= 1.5 * loss_err["plain"] + 2e-3, loss_err
    assert 1 - cos["fast"] <= 1.5 * (1 - cos["plain"]) + 1e-3, cos


# --- the checkpoint format ------------------------------------------------------------------------------------

OLD_CONFIG_KEYS = {f.name for f in dataclasses.fields(SSLModelConfig)} - set(SPEED_OPTIONS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_saved_configs_of_the_presets_are_unchanged(preset):
    """At their defaults the speed options are not stored: every preset's saved config has the keys it
    had before the options existed, and a model's state_dict keys do not depend on the options."""
    config = PRESETS[preset]()
    assert set(config.to_dict()) == OLD_CONFIG_KEYS
    assert SSLModelConfig.from_dict(config.to_dict()) == config


def test_checkpoint_keys_and_config_unchanged_by_the_options(tmp_path):
    fast, plain = _pair(_tiny())
    assert list(fast.state_dict()) == list(plain.state_dict())
    save_checkpoint(str(tmp_path / "fast.pt"), fast)
    saved = torch.load(tmp_path / "fast.pt", weights_only=True)
    assert set(saved["model_config"]) == OLD_CONFIG_KEYS
    # an option off is recorded and comes back on load
    save_checkpoint(str(tmp_path / "plain.pt"), plain)
    model, _ = load_checkpoint(str(tmp_path / "plain.pt"))
    assert model.config.pos_conv_precision == "autocast" and model.config.fast_conv_norm is False
    assert model.encoder.pos_conv.precision == "autocast" and not model.frontend.conv_layers[0].fast_norm


def test_set_speed_options_switches_in_place_and_validates():
    model = SSLModel(_tiny())
    assert model.set_speed_options(**SPEED_OPTIONS_OFF) is model
    assert model.config.pos_conv_precision == "autocast" and model.encoder.pos_conv.precision == "autocast"
    assert not any(layer.fast_norm for layer in model.frontend.conv_layers)
    model.set_speed_options(**SPEED_OPTIONS)
    assert model.config.to_dict() == _tiny().to_dict()
    with pytest.raises(ValueError, match="unknown speed option"):
        model.set_speed_options(fast_attention=True)
    with pytest.raises(ValueError, match="pos_conv_precision"):
        model.set_speed_options(pos_conv_precision="fp16")


# --- the log-Mel front-end's batched filterbanks -------------------------------------------------------------


def test_autocast_dtype_is_none_off_autocast_and_on_devices_without_it():
    from s3prl_plugins.nn.frontends import autocast_dtype

    assert autocast_dtype("cpu") is None and autocast_dtype("meta") is None
    with torch.autocast(**BF16):
        assert autocast_dtype("cpu") == torch.bfloat16


def test_batch_fbank_equals_kaldi_fbank_per_utterance_in_float64():
    import torchaudio

    from s3prl_plugins.nn.frontends import LogMelFrontend

    fe = LogMelFrontend(40)
    wavs, lengths = _wavs()
    feats = fe.batch_fbank(wavs.double())
    for i, n in enumerate(lengths.tolist()):
        ref = torchaudio.compliance.kaldi.fbank(
            wavs[i : i + 1, :n].double() * 32768.0,
            num_mel_bins=40,
            frame_length=25.0,
            frame_shift=10.0,
            dither=0.0,
            energy_floor=0.0,
            sample_frequency=16000.0,
        )
        torch.testing.assert_close(feats[i, : ref.size(0)], ref, atol=1e-9, rtol=0)


@pytest.mark.parametrize("stack", [1, 2])
@pytest.mark.parametrize("with_lengths", [True, False])
def test_batched_log_mel_front_end_equals_the_per_utterance_loop(stack, with_lengths):
    """Normalisation, stacking (an odd last frame paired with itself), zeroed padding and the lengths: as
    the per-utterance loop gives them, for padded batches of odd and even frame counts."""
    from s3prl_plugins.nn.frontends import LogMelFrontend

    g = torch.Generator().manual_seed(5)
    fast, plain = LogMelFrontend(40, stack_frames=stack), LogMelFrontend(40, stack_frames=stack, batched=False)
    for fe in (fast, plain):
        fe.set_stats(
            torch.randn(40, generator=torch.Generator().manual_seed(6)),
            1.0 + torch.rand(40, generator=torch.Generator().manual_seed(7)),
        )
    lengths = torch.tensor([6400, 5000, 3900, 4060]) if with_lengths else None
    wavs = 0.1 * torch.randn(4, 6400, generator=g)
    if with_lengths:
        wavs = wavs * (torch.arange(6400)[None] < lengths[:, None])
    (xf, nf), (xp, np_) = fast(wavs, lengths), plain(wavs, lengths)
    assert xf.shape == xp.shape and xf.dtype == xp.dtype
    torch.testing.assert_close(xf, xp, atol=1e-4, rtol=1e-5)
    if with_lengths:
        assert torch.equal(nf, np_)
    else:
        assert nf is None and np_ is None
    # float64 waveforms give float64 features (the per-utterance path computes in float32 as well)
    assert fast(wavs.double(), lengths)[0].dtype == torch.float64


def test_melhubert_batched_fbank_switch_and_bf16():
    from s3prl_plugins.models.factories import melhubert_config

    torch.manual_seed(0)
    cfg = melhubert_config(
        stack_frames=2,
        embed_dim=32,
        num_layers=2,
        num_heads=2,
        ffn_dim=64,
        num_clusters=None,
        pos_conv_kernel=8,
        pos_conv_groups=4,
        dropout=0.0,
        attention_dropout=0.0,
    )
    fast, plain = _pair(cfg)
    assert fast.frontend.batched and not plain.frontend.batched
    wavs, lengths = _wavs()
    with torch.no_grad():
        ref = plain(wavs, lengths)
        torch.testing.assert_close(fast(wavs, lengths).hidden_states[-1], ref.hidden_states[-1], atol=1e-4, rtol=1e-4)
        with torch.autocast(**BF16):
            low = fast(wavs, lengths).hidden_states[-1].float()
    assert (low - ref.hidden_states[-1]).abs().max() < 0.1 * ref.hidden_states[-1].abs().max()


def test_plain_cpu_forms_run_whatever_the_options_say():
    """By default the CPU runs the plain forms (faster there): options on and off give bit-identical outputs
    under bf16 autocast, while with the fast paths switched on for the CPU they do not (they ran)."""
    assert frontends.FAST_PATH_DEVICES == {"cuda"}
    fast, plain = _pair(_tiny())
    wavs, lengths = _wavs()
    with torch.no_grad(), torch.autocast(**BF16):
        a, b = fast(wavs, lengths).hidden_states[-1], plain(wavs, lengths).hidden_states[-1]
        assert torch.equal(a, b)
        frontends.FAST_PATH_DEVICES.add("cpu")
        try:
            c = fast(wavs, lengths).hidden_states[-1]
        finally:
            frontends.FAST_PATH_DEVICES.discard("cpu")
    assert not torch.equal(a, c)
