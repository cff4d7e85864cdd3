"""The CPU inference fast path (``cpu_fast_path``, issue 24) against its plain form: the chunked CNN with
the first layer's GroupNorm folded into its weights, and the positional convolution by FFT -- float64
(equal to float rounding), float32 (relative 1e-5), padded batches, many chunks and blocks; and the
conditions under which it runs (CPU inference only: never with gradients, in training mode, under
autocast, or inside a trace or an ONNX export)."""

import pytest
import torch

from s3prl_plugins.models import SSLModel
from s3prl_plugins.models.factories import hubert_config, star_hubert_config
from s3prl_plugins.nn.frontends import ConvFeatureExtractor, cpu_inference
from s3prl_plugins.nn.transformer import ConvPositionalEmbedding

CONV = [(24, 10, 5), (32, 3, 2), (16, 1, 1), (32, 3, 2), (32, 2, 2)]


def _waves(lengths, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    n = int(lengths.max())
    # an offset and a slope: the folded GroupNorm's mean and covariance terms both matter
    wavs = 0.1 * torch.randn(len(lengths), n, generator=g, dtype=dtype) + 0.05 + torch.linspace(0, 0.1, n, dtype=dtype)
    return wavs * (torch.arange(n)[None] < lengths[:, None]), lengths


def _randomise_norms(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    return module


@pytest.mark.parametrize(
    "norm,bias", [("group_norm", False), ("group_norm", True), ("layer_norm", True), ("none", False)]
)
def test_chunked_cnn_equals_the_plain_cnn_over_many_chunks(norm, bias, monkeypatch):
    torch.manual_seed(0)
    fe = _randomise_norms(ConvFeatureExtractor(CONV, norm=norm, bias=bias)).double().eval()
    wavs, lengths = _waves([9000, 6100, 2345])
    with torch.no_grad():
        fe.chunked = False
        ref, ref_len = fe(wavs, lengths)
        monkeypatch.setattr(ConvFeatureExtractor, "CHUNK_BYTES", 1)  # the smallest chunks: 16 frames
        calls = []
        handle = fe.conv_layers[-1].register_forward_hook(lambda *a: calls.append(1))
        fe.chunked = True
        got, got_len = fe(wavs, lengths)
        handle.remove()
    assert len(calls) == -(-ref.size(1) // 16) > 1  # it did run chunk by chunk
    assert torch.equal(got_len, ref_len)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-12 * ref.abs().max().item(), rtol=1e-10)


def test_folded_group_norm_is_the_papers_group_norm_in_float32():
    """float32, one chunk, a mean far from 0 (the covariance is taken about the mean, in float64)."""
    torch.manual_seed(0)
    fe = _randomise_norms(ConvFeatureExtractor([(64, 10, 5), (64, 3, 2)], norm="group_norm")).eval()
    wavs, lengths = _waves([16000, 11000], dtype=torch.float32)
    wavs = wavs + 3.0
    with torch.no_grad():
        fe.chunked = False
        ref = fe(wavs, lengths)[0]
        fe.chunked = True
        got = fe(wavs, lengths)[0]
    torch.testing.assert_close(got, ref, atol=2e-5 * ref.abs().max().item(), rtol=1e-5)


@pytest.mark.parametrize("kernel,groups", [(128, 16), (31, 4), (8, 2)])
@pytest.mark.parametrize("frames", [1, 100, 129, 300, 1000])
def test_fft_positional_convolution_equals_the_convolution(kernel, groups, frames):
    torch.manual_seed(0)
    pos = ConvPositionalEmbedding(32, kernel, groups).double().eval()
    x = torch.randn(2, frames, 32, dtype=torch.float64)
    with torch.no_grad():
        pos.fft = False
        ref = pos(x)
        pos.fft = True
        got = pos(x)
    assert got.shape == ref.shape == x.shape
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-10)


def test_fft_positional_convolution_in_float32_is_as_close_to_float64_as_the_convolution():
    torch.manual_seed(0)
    pos = ConvPositionalEmbedding(96, 128, 16).eval()
    x = torch.randn(1, 500, 96)
    with torch.no_grad():
        ref = pos.double()(x.double())
        pos.float()
        err = {}
        for fft in (True, False):
            pos.fft = fft
            err[fft] = ((pos(x).double() - ref).abs().max() / ref.abs().max()).item()
    assert err[True] < 1e-5 and err[True] <= 2 * err[False], err


def test_fft_positional_convolution_cache_follows_the_weights():
    torch.manual_seed(0)
    pos = ConvPositionalEmbedding(48, 128, 16).eval()
    x = torch.randn(1, 500, 48)

    def check():
        pos.fft = False
        ref = pos(x)
        pos.fft = True
        torch.testing.assert_close(pos(x), ref, atol=1e-5 * ref.abs().max().item(), rtol=1e-5)

    with torch.no_grad():
        check()
        for p in pos.parameters():  # an optimiser step: the cached spectra must not be reused
            p.add_(0.3 * torch.randn_like(p))
        check()
        pos.load_state_dict({k: v + 1.0 for k, v in pos.state_dict().items()})
        check()


@pytest.mark.parametrize("factory", [hubert_config, star_hubert_config])
def test_whole_model_fast_path_equals_the_plain_forms_on_a_padded_batch(factory, monkeypatch):
    monkeypatch.setattr(ConvFeatureExtractor, "CHUNK_BYTES", 4096)
    config = factory(
        embed_dim=48,
        num_layers=2,
        num_heads=4,
        ffn_dim=64,
        conv_layers=CONV[:2] + [(48, 2, 2)],
        pos_conv_kernel=16,
        pos_conv_groups=4,
    )
    model = _randomise_norms(SSLModel(config)).double().eval()
    wavs, lengths = _waves([8000, 5200, 3000])
    with torch.inference_mode():
        ref = model.set_speed_options(cpu_fast_path=False)(wavs, lengths)
        got = model.set_speed_options(cpu_fast_path=True)(wavs, lengths)
    assert torch.equal(got.lengths, ref.lengths)
    for a, b in zip(got.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_the_fast_path_runs_only_in_cpu_inference(monkeypatch):
    config = hubert_config(
        embed_dim=32, num_layers=1, num_heads=2, ffn_dim=32, conv_layers=CONV[:2], pos_conv_kernel=8, pos_conv_groups=2
    )
    model = SSLModel(config).eval()
    wavs, lengths = _waves([4000, 3000], dtype=torch.float32)
    ran = []
    chunked, fft = ConvFeatureExtractor.forward_chunked, ConvPositionalEmbedding.fft_conv
    monkeypatch.setattr(ConvFeatureExtractor, "forward_chunked", lambda *a: ran.append("cnn") or chunked(*a))
    monkeypatch.setattr(ConvPositionalEmbedding, "fft_conv", lambda *a: ran.append("pos") or fft(*a))

    def runs(fn):
        ran.clear()
        fn()
        return sorted(set(ran))

    with torch.no_grad():
        assert runs(lambda: model(wavs, lengths)) == ["cnn", "pos"]
    with torch.inference_mode():
        assert runs(lambda: model(wavs, lengths)) == ["cnn", "pos"]
        assert runs(lambda: model.set_speed_options(cpu_fast_path=False)(wavs, lengths)) == []
        model.set_speed_options(cpu_fast_path=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert runs(lambda: model(wavs, lengths)) == []
    assert runs(lambda: model(wavs, lengths)) == []  # gradients for the parameters
    with torch.no_grad():
        model.train()
        assert runs(lambda: model(wavs, lengths)) == []
        model.eval()
        monkeypatch.setattr(torch.jit, "is_tracing", lambda: True)
        traced = runs(lambda: model(wavs, lengths))
    assert traced == []
    assert not cpu_inference(torch.zeros(1, device="meta"), model)


def test_onnx_export_holds_the_plain_graph(tmp_path):
    """An exported graph is traced through the plain forms (an FFT's block count would be baked in for
    the example's length): one Conv per CNN layer, one for the positional convolution, no FFT."""
    onnx = pytest.importorskip("onnx")
    from s3prl_plugins.deploy.onnx import to_onnx

    config = hubert_config(
        embed_dim=32, num_layers=1, num_heads=2, ffn_dim=32, conv_layers=CONV[:2], pos_conv_kernel=8, pos_conv_groups=2
    )
    path = str(tmp_path / "m.onnx")
    with torch.no_grad():
        to_onnx(SSLModel(config).eval(), path)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("Conv") == len(CONV[:2]) + 1
    assert not {"DFT", "STFT"} & set(ops)


def test_float32_fast_path_is_within_rounding_of_float64():
    """The fast path's float32 error against a float64 reference is no larger than the plain form's."""
    torch.manual_seed(0)
    config = star_hubert_config(
        embed_dim=48, num_layers=2, num_heads=4, ffn_dim=64, conv_layers=CONV[:2] + [(48, 2, 2)], pos_conv_kernel=32
    )
    model = _randomise_norms(SSLModel(config)).eval()
    wavs, lengths = _waves([16000, 9000], dtype=torch.float32)
    with torch.no_grad():
        ref = model.double().set_speed_options(cpu_fast_path=False)(wavs.double(), lengths).hidden_states
        model.float()
        err = {}
        for on in (True, False):
            out = model.set_speed_options(cpu_fast_path=on)(wavs, lengths).hidden_states
            err[on] = max(((a.double() - r).abs().max() / r.abs().max()).item() for a, r in zip(out, ref))
    assert err[True] < 1e-5 and err[True] <= 3 * err[False] + 1e-6, err
