"""Long inputs through ``onnx_local`` in fixed memory: an utterance longer than a window runs in windows that
start on frame boundaries, each seeing its context on either side; the stitched states have the whole
utterance's frames, equal to them where the window sees all a frame depends on, and the graph never gets more
than a window's samples. CIF graphs (a variable frame rate) are refused with the fix instead."""

import pytest
import torch

from s3prl_plugins.models import build_model
from s3prl_plugins.models.config import SSLModelConfig
from s3prl_plugins.models.factories import hubert_config
from s3prl_plugins.models.ssl_model import InputError

pytest.importorskip("onnxruntime")

TINY = dict(
    num_layers=2,
    num_heads=4,
    ffn_dim=64,
    conv_layers=[(16, 10, 5), (16, 3, 2), (16, 2, 2), (16, 2, 2), (16, 2, 2), (16, 2, 2)],  # 320: HuBERT's stride
    with_head=False,
    embed_dim=32,
    pos_conv_kernel=8,
    pos_conv_groups=4,
)


def _graph(tmp_path, **overrides):
    from s3prl_plugins.deploy.onnx import to_onnx

    torch.manual_seed(0)
    model = build_model(hubert_config(**TINY, **overrides)).eval()
    path = str(tmp_path / "m.onnx")
    to_onnx(model, path)
    return path


def _expert(path, **kw):
    from s3prl_plugins.upstream.onnx_expert import OnnxUpstreamExpert

    expert = OnnxUpstreamExpert(path, **kw)
    sizes = []
    run = expert.session.run

    def recording(outputs, feeds):
        sizes.append(feeds["waveforms"].shape[1])
        return run(outputs, feeds)

    expert.session.run = recording
    return expert, sizes


def test_windows_stitch_to_the_whole_utterances_frames(tmp_path):
    """A per-frame CNN (layer norm in every layer, no waveform normalisation): the transformer's input states are
    the whole utterance's exactly; the layers' states differ by attention beyond the window's context."""
    path = _graph(tmp_path, conv_norm="layer_norm")
    g = torch.Generator().manual_seed(1)
    wavs = [torch.randn(int(16000 * 9.37), generator=g) * 0.1, torch.randn(16000 * 2, generator=g) * 0.1]
    whole, _ = _expert(path, window_seconds=0)
    windowed, sizes = _expert(path, window_seconds=2.0, context_seconds=1.0)
    ref = whole(wavs)["hidden_states"]
    got = windowed(wavs)["hidden_states"]
    assert len(got) == len(ref) and got[0].shape == ref[0].shape  # the same frames, padded the same way
    assert max(sizes) <= int(16000 * (2.0 + 2 * 1.0)) + 400  # the graph never saw more than a window
    torch.testing.assert_close(got[0][0], ref[0][0], atol=1e-5, rtol=1e-4)  # every frame: its context is in view
    valid = (16000 * 2 - 400) // 320 + 1  # the short one's frames (its padding's states are nobody's)
    torch.testing.assert_close(got[-1][1, :valid], ref[-1][1, :valid], atol=1e-5, rtol=1e-4)  # it runs whole
    # the transformer layers: attention over 4 s instead of 9.4 s. Measured 2026-12-07 (random weights, 2 s windows
    # with 1 s of context, 9.4 s and 60 s of noise): mean cosine per frame 0.9998 at the last layer with this
    # CNN, 0.9999 with the first layer's GroupNorm over the window (HuBERT's), 1.0 (5 digits) at the input
    cos = torch.nn.functional.cosine_similarity(got[-1][0], ref[-1][0], dim=-1)
    assert float(cos.mean()) > 0.999, float(cos.mean())


def test_a_short_input_and_window_zero_run_whole(tmp_path):
    path = _graph(tmp_path)
    wav = torch.randn(16000 * 5) * 0.1
    expert, sizes = _expert(path, window_seconds=2.0, context_seconds=1.0)
    assert torch.equal(
        expert([wav[: 16000 * 3]])["hidden_states"][-1],
        _expert(path, window_seconds=0)[0]([wav[: 16000 * 3]])["hidden_states"][-1],
    )
    assert sizes == [16000 * 3]


def test_a_cif_graph_refuses_a_long_input_with_the_fix(tmp_path):
    from s3prl_plugins.deploy.onnx import to_onnx
    from s3prl_plugins.upstream.onnx_expert import OnnxUpstreamExpert

    config = SSLModelConfig(
        conv_layers=TINY["conv_layers"],
        num_layers=1,
        num_heads=[4],
        head_dim=8,
        ffn_dims=[64],
        feature_layer_norm=False,
        subsampling={"type": "cif", "stride": 4},
        embed_dim=32,
        pos_conv_kernel=8,
        pos_conv_groups=4,
    )
    path = str(tmp_path / "cif.onnx")
    to_onnx(build_model(config).eval(), path)
    expert = OnnxUpstreamExpert(path, window_seconds=1.0, context_seconds=0.5)
    with pytest.raises(InputError, match="Cut the audio into pieces of at most 2 s"):
        expert([torch.randn(16000 * 3) * 0.1])
    assert expert([torch.randn(16000 * 2) * 0.1])["hidden_states"][0].shape[0] == 1
