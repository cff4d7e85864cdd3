"""Model zoo: exact parameter counts, padding, attention maps, front-ends, bad input, checkpoints."""

import math
import os
import re

import pytest
import torch

from s3prl_plugins.models import (
    PRESETS,
    InputError,
    SSLModelConfig,
    build_model,
    count_parameters,
    melhubert_config,
    pad_waveforms,
    preset_config,
    star_hubert_config,
)
from s3prl_plugins.models.checkpoint import (
    CheckpointError,
    DiskFullError,
    load_checkpoint,
    make_checkpoint,
    save_checkpoint,
)
from s3prl_plugins.nn import LogMelFrontend

# (preset, parameters with head, backbone)
EXPECTED = {
    "hubert_base": (94_697_600, 94_370_944),  # paper: 94.70 M (fairseq/s3prl count)
    "distilhubert": (23_491_200, 23_491_200),  # 23.49 M
    "star_hubert": (22_308_592, 22_308_592),  # 22.31 M
    "star_hubert_l": (26_626_672, 26_626_672),  # 26.63 M
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_parameters_exact(name):
    with torch.device("meta"):
        model = build_model(preset_config(name))
    total, backbone = EXPECTED[name]
    assert count_parameters(model) == total
    assert count_parameters(model, include_head=False) == backbone


def test_distilhubert_with_heads_27_03m():
    with torch.device("meta"):
        model = build_model(
            preset_config("distilhubert").replace(head={"type": "distil", "layers": [4, 8, 12], "out_dim": 768})
        )
    assert count_parameters(model) == 27_034_752
    assert abs(count_parameters(model) / 1e6 - 27.03) < 0.005


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_round_trips(name):
    cfg = preset_config(name)
    assert SSLModelConfig.from_dict(cfg.to_dict()) == cfg


def tiny(**kw):
    base = dict(embed_dim=32, num_layers=3, num_heads=4, ffn_dim=48, conv_layers=[(16, 10, 5), (24, 3, 2), (32, 2, 2)])
    base.update(kw)
    return star_hubert_config(pos_conv_kernel=8, pos_conv_groups=4, dropout=0.0, attention_dropout=0.0, **base)


def test_hidden_states_shapes_and_lengths():
    model = build_model(tiny()).eval()
    x, lengths = pad_waveforms([torch.randn(3000), torch.randn(2000)])
    out = model(x, lengths)
    assert len(out.hidden_states) == 4
    assert all(h.shape == (2, out.hidden_states[0].size(1), 32) for h in out.hidden_states)
    expected = [((n - 10) // 5 + 1 - 3) // 2 + 1 for n in (3000, 2000)]
    expected = [(e - 2) // 2 + 1 for e in expected]
    assert out.lengths.tolist() == expected
    assert out.padding_mask.sum(1).tolist() == [out.hidden_states[0].size(1) - e for e in expected]


@pytest.mark.parametrize(
    "cfg",
    [
        tiny(conv_norm="layer_norm"),
        tiny(conv_norm="none", layer_norm_first=True),
        melhubert_config(
            embed_dim=32,
            num_layers=2,
            num_heads=4,
            ffn_dim=48,
            stack_frames=2,
            pos_conv_kernel=8,
            pos_conv_groups=4,
            dropout=0.0,
            attention_dropout=0.0,
        ),
    ],
    ids=["layer_norm_cnn", "pre_ln", "melhubert_20ms"],
)
def test_padded_batch_equals_single_utterances(cfg):
    """Without a CNN GroupNorm (whose statistics span the padded time axis by design, as in every
    reference implementation), a padded batch gives exactly the single-utterance results."""
    model = build_model(cfg).eval()
    wavs = [torch.randn(n) * 0.1 for n in (4000, 2100, 3333)]
    x, lengths = pad_waveforms(wavs)
    with torch.no_grad():
        batch = model(x, lengths, need_attention=True)
        for i, w in enumerate(wavs):
            single = model(w[None])
            n = int(batch.lengths[i])
            assert n == single.hidden_states[0].size(1)
            for hb, hs in zip(batch.hidden_states, single.hidden_states):
                torch.testing.assert_close(hb[i, :n], hs[0], atol=1e-5, rtol=0)
            for ab, as_ in zip(batch.attentions, single.attentions):
                torch.testing.assert_close(ab[i, :n, :n], as_[0], atol=1e-6, rtol=0)


def test_attention_maps_match_explicit_all_heads_average():
    """The head-by-head path equals the textbook (B, H, T, T) softmax average and leaves the hidden
    states of the SDPA path unchanged."""
    model = build_model(tiny()).eval()
    x, lengths = pad_waveforms([torch.randn(4000), torch.randn(2500)])
    with torch.no_grad():
        fast = model(x, lengths)
        slow = model(x, lengths, need_attention=True)
    for a, b in zip(fast.hidden_states, slow.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # explicit reference for layer 0
    layer = model.encoder.layers[0].attention
    h0 = slow.hidden_states[0]
    B, T, _ = h0.shape
    q = layer.q_proj(h0).view(B, T, 4, 8).transpose(1, 2)
    k = layer.k_proj(h0).view(B, T, 4, 8).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(8)
    scores = scores.masked_fill(slow.padding_mask[:, None, None, :], float("-inf"))
    ref = scores.softmax(-1).mean(1)
    torch.testing.assert_close(slow.attentions[0], ref.detach(), atol=1e-6, rtol=0)
    assert len(slow.attentions) == 3
    rows = slow.attentions[1].sum(-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))
    n = int(slow.lengths[1])
    assert slow.attentions[2][1, :, n:].abs().max() == 0  # no attention on padded keys


def test_per_layer_heads_and_ffn_widths_are_built_from_config():
    cfg = tiny(num_layers=3).replace(num_heads=[4, 2, 0], ffn_dims=[48, 16, 0])
    model = build_model(cfg).eval()
    assert model.encoder.layers[1].attention.q_proj.out_features == 16
    assert model.encoder.layers[1].feed_forward.fc1.out_features == 16
    out = model(torch.randn(1, 3000), need_attention=True)
    assert len(out.hidden_states) == 4 and out.attentions[2].abs().sum() == 0


def test_logmel_frontend_is_kaldi_fbank_with_stacking():
    import torchaudio

    fe = LogMelFrontend(n_mels=40, stack_frames=2)
    mean, std = torch.randn(40), torch.rand(40) + 0.5
    fe.set_stats(mean, std)
    wav = torch.randn(16000 + 160 * 3) * 0.1  # an odd number of frames
    feats, lengths = fe(wav[None], torch.tensor([wav.numel()]))
    ref = torchaudio.compliance.kaldi.fbank(wav[None] * 32768, num_mel_bins=40, dither=0.0, energy_floor=0.0)
    ref = (ref - mean) / std
    T = ref.size(0)
    assert T % 2 == 1 and feats.shape == (1, (T + 1) // 2, 80) and lengths.tolist() == [(T + 1) // 2]
    torch.testing.assert_close(feats[0, 0], torch.cat([ref[0], ref[1]]), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(feats[0, -1], torch.cat([ref[-1], ref[-1]]), atol=1e-4, rtol=1e-5)
    assert fe.num_frames(torch.tensor([wav.numel()])).tolist() == [(T + 1) // 2]


@pytest.mark.parametrize(
    "wav, lengths, match",
    [
        (torch.randn(2, 2, 4000), None, "mono"),
        (torch.randn(1, 20), None, "fewer than"),
        (torch.randn(2, 4000), torch.tensor([4000, 20]), "fewer than"),
        (torch.randn(0, 4000), None, "empty"),
    ],
    ids=["stereo", "too_short", "too_short_in_batch", "empty_batch"],
)
def test_bad_input_clear_errors(wav, lengths, match):
    model = build_model(tiny()).eval()
    with pytest.raises(InputError, match=match):
        model(wav, lengths)


def test_checkpoint_round_trip_weights_only(tmp_path):
    model = build_model(tiny()).eval()
    path = str(tmp_path / "ckpt" / "model.pt")
    save_checkpoint(path, model, step=7)
    raw = torch.load(path, weights_only=True)  # plain dict, no pickled objects
    assert raw["format_version"] == 1 and raw["step"] == 7
    loaded, ckpt = load_checkpoint(path, expect="star_hubert")
    x = torch.randn(1, 4000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).hidden_states[-1], model(x).hidden_states[-1])
    assert [f for f in os.listdir(tmp_path / "ckpt")] == ["model.pt"]  # no temporary left behind


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    mel = build_model(
        melhubert_config(embed_dim=32, num_layers=1, num_heads=4, ffn_dim=8, pos_conv_kernel=8, pos_conv_groups=4)
    )
    path = str(tmp_path / "mel.pt")
    save_checkpoint(path, mel)
    with pytest.raises(CheckpointError, match="not a 'star_hubert' model"):
        load_checkpoint(path, expect="star_hubert")
    # weights that do not fit the config they claim
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"] = tiny().to_dict()
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="another"):
        load_checkpoint(path)


def test_damaged_checkpoints(tmp_path):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(str(bad))
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an s3prl-plugins checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    model = build_model(tiny())
    path = str(tmp_path / "m.pt")
    save_checkpoint(path, model, step=1)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, model, step=2)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert os.listdir(tmp_path) == ["m.pt"]


def test_invalid_configs_name_the_field():
    with pytest.raises(ValueError, match="num_layers"):
        SSLModelConfig(num_layers=2, num_heads=[4, 4, 4], ffn_dims=[8, 8])
    with pytest.raises(ValueError, match="unknown model config keys"):
        SSLModelConfig.from_dict({"embed_dims": 3})
    with pytest.raises(ValueError, match="frontend"):
        SSLModelConfig(frontend="spectrogram")


def test_feature_grad_mult_scales_frontend_gradients():
    grads = {}
    for mult in (1.0, 0.1):
        torch.manual_seed(0)
        model = build_model(tiny(feature_grad_mult=mult))
        model(torch.randn(1, 3000)).hidden_states[-1].sum().backward()
        grads[mult] = (
            model.frontend.conv_layers[0].conv.weight.grad.clone(),
            model.encoder.layers[0].feed_forward.fc1.weight.grad.clone(),
        )
    torch.testing.assert_close(grads[0.1][0], grads[1.0][0] * 0.1)
    torch.testing.assert_close(grads[0.1][1], grads[1.0][1])


def test_attention_mask_has_the_query_dtype_under_autocast(monkeypatch):
    """Under autocast q/k/v are bf16 while the residual stream (and the padding bias built from it) is
    fp32; SDPA would then fall back to its math kernel, materialising (B, H, T, T) scores. The mask is
    cast to q's dtype, and an unpadded batch gets no mask at all (flash attention allowed)."""
    import torch.nn.functional as F

    from s3prl_plugins.nn import transformer

    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append((q.dtype, None if attn_mask is None else attn_mask.dtype))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(transformer.F, "scaled_dot_product_attention", spy)
    model = build_model(
        star_hubert_config(
            embed_dim=32,
            num_layers=2,
            num_heads=4,
            ffn_dim=64,
            conv_layers=[(32, 10, 5), (32, 8, 4), (32, 4, 4), (32, 4, 4)],
            pos_conv_kernel=8,
            pos_conv_groups=4,
        )
    )
    wavs = torch.randn(2, 8000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(wavs, torch.tensor([8000, 6000]))
        assert seen and all(m == q == torch.bfloat16 for q, m in seen), seen
        seen.clear()
        model(wavs, torch.tensor([8000, 8000]))
        assert seen and all(m is None for _, m in seen), seen
    # the unpadded shortcut gives what the explicit all-valid mask gives
    with torch.no_grad():
        a = model.eval()(wavs, torch.tensor([8000, 8000])).hidden_states[-1]
        b = model(wavs).hidden_states[-1]
    torch.testing.assert_close(a, b)


def test_head_padded_attention_is_exact():
    """Zero-padding the head size (so that GPU fused kernels accept STaRHuBERT's 36) changes nothing."""
    import torch.nn.functional as F

    from s3prl_plugins.nn.transformer import padded_sdpa

    q, k, v = (torch.randn(2, 3, 50, 36, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.zeros(2, 1, 1, 50, dtype=torch.float64).masked_fill(torch.arange(50) >= 40, float("-inf"))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    out = padded_sdpa(q, k, v, bias, 0.0, 8)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    g_ref = torch.autograd.grad(ref.pow(2).sum(), (q, k, v))
    g_out = torch.autograd.grad(out.pow(2).sum(), (q, k, v))
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "content, kind",
    [
        (b"<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title></html>", "web page"),
        (bytes(range(7, 250)) * 20, "not a PyTorch checkpoint"),
        ("truncated", "truncated"),
    ],
)
def test_a_file_that_is_no_checkpoint_never_gets_an_unsafe_load_suggested(tmp_path, content, kind):
    path = tmp_path / "model.pt"
    if content == "truncated":
        save_checkpoint(str(path), build_model(tiny()))
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(str(path))
    message = str(e.value)
    assert str(path) in message and kind in message and "refresh=True" in message, message
    assert "weights_only" not in message and "fairseq" not in message, message


def test_weights_with_nan_or_inf_are_refused_at_load_naming_the_tensors(tmp_path):
    from s3prl_plugins.bin import convert
    from s3prl_plugins.models.loading import load_pretrained

    model = build_model(tiny())
    path = str(tmp_path / "nan.pt")
    ckpt = make_checkpoint(model)
    names = [k for k, v in ckpt["model_weight"].items() if v.is_floating_point()]
    ckpt["model_weight"][names[0]].view(-1)[0] = float("nan")
    ckpt["model_weight"][names[-1]].view(-1)[:2] = float("inf")
    torch.save(ckpt, path)
    for load in (load_checkpoint, load_pretrained):
        with pytest.raises(
            CheckpointError,
            match=rf"2 tensor\(s\) hold NaN or Inf values: {re.escape(names[0])} \(1 of \d+\), "
            rf"{re.escape(names[-1])} \(2 of",
        ):
            load(path)
    assert convert.main([path, "--out", str(tmp_path / "out.pt")]) == 2
    assert not os.path.exists(tmp_path / "out.pt")


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 704 vs 598"),
        RuntimeError(
            "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: "
            "file write failed"
        ),
        OSError(28, "No space left on device"),
    ],
)
def test_a_full_disk_is_named_and_the_old_checkpoint_kept(tmp_path, monkeypatch, error):
    model = build_model(tiny())
    path = str(tmp_path / "m.pt")
    save_checkpoint(path, model, step=1)

    def full(*a, **k):
        raise error

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match=f"no space left on {re.escape(str(tmp_path))} while writing m.pt"):
        save_checkpoint(path, model, step=2)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1 and os.listdir(tmp_path) == ["m.pt"]


def test_checkpoints_are_written_with_the_umask_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(str(tmp_path / "m.pt"), build_model(tiny()))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.pt").st_mode & 0o777 == 0o644
