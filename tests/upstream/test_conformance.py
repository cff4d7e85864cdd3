"""Every local hub entry against the interface s3prl's and ESPnet's own suites check (s3prl
``test/test_upstream.py``, ESPnet ``test/espnet2/asr/frontend/test_s3prl.py``), written here: deterministic in
eval mode, the same layer count in train and eval, forward and backward on 0.05 s inputs at batch 1 and 2
and on 0.05-1 s inputs at batch 3, the Featurizer's hidden sizes and downsample rates, ESPnet's
``S3prlFrontend`` output size and backward. ``onnx_local`` is inference-only: the forward half applies."""

import pytest
import torch

from s3prl_plugins.models import build_model, melhubert_config, star_hubert_config
from s3prl_plugins.models.checkpoint import save_checkpoint
from s3prl_plugins.models.config import SSLModelConfig

TINY = dict(embed_dim=32, pos_conv_kernel=8, pos_conv_groups=4)
CONV = [(16, 10, 5), (32, 3, 2)] + [(32, 2, 2)] * 5  # 320 samples per frame, 400 of receptive field


def _configs():
    star = star_hubert_config(num_layers=2, num_heads=4, ffn_dim=48, conv_layers=CONV, **TINY)
    cif = SSLModelConfig(
        conv_layers=CONV,
        num_layers=2,
        num_heads=[4, 4],
        head_dim=8,
        ffn_dims=[48, 48],
        feature_layer_norm=False,
        subsampling={"type": "cif", "stride": 4},
        **TINY,
    )
    mel = melhubert_config(num_layers=2, num_heads=4, ffn_dim=48, stack_frames=2, num_clusters=None, **TINY)
    pruned = mel.replace(num_heads=[4, 2], ffn_dims=[48, 16], head_dim=8)
    # entry -> (config, samples per output frame)
    return {
        "star_hubert_local": (star, 320),
        "star_hubert_url": (star, 320),
        "distilhubert_cif_local": (cif, 320),
        "melhubert_local": (mel, 320),
        "melhubert_pruned_local": (pruned, 320),
        "onnx_local": (star, 320),
    }


ENTRIES = list(_configs())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("entries")
    out = {}
    for entry, (config, rate) in _configs().items():
        torch.manual_seed(0)
        model = build_model(config)
        path = str(folder / f"{entry}.pt")
        save_checkpoint(path, model)
        if entry == "onnx_local":
            from s3prl_plugins.deploy.onnx import to_onnx

            path = to_onnx(model.eval(), str(folder / "graph.onnx"))
        out[entry] = (path, config, rate)
    return out


def _upstream(entry, path):
    from s3prl.nn import S3PRLUpstream

    return S3PRLUpstream(entry, path_or_url=path)


def _wavs(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g) * 0.1 for n in lengths]


def _padded(wavs):
    lengths = torch.tensor([w.numel() for w in wavs])
    return torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), lengths


@pytest.mark.parametrize("entry", ENTRIES)
def test_deterministic_in_eval_and_the_same_layers_in_train(entry, checkpoints):
    path, config, _ = checkpoints[entry]
    up = _upstream(entry, path).eval()
    x, n = _padded(_wavs([16000, 9000]))
    with torch.no_grad():
        a, _ = up(x, n)
        b, _ = up(x, n)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert len(a) == config.num_layers + 1
    if entry != "onnx_local":
        with torch.no_grad():
            c, _ = up.train()(x, n)
        assert len(c) == len(a)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("lengths", [[800], [800, 800], [800, 16000, 4321]], ids=["1x0.05s", "2x0.05s", "3x0.05-1s"])
def test_short_inputs_forward_and_backward(entry, lengths, checkpoints):
    path, config, rate = checkpoints[entry]
    up = _upstream(entry, path)
    x, n = _padded(_wavs(lengths))
    if entry == "onnx_local":
        with torch.no_grad():
            hs, hs_len = up.eval()(x, n)
    else:
        up.train()
        hs, hs_len = up(x, n)
        sum(h.sum() for h in hs).backward()
        grads = [p.grad for p in up.parameters() if p.requires_grad and p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    frames = [len(range(0, L, rate)) for L in lengths]  # s3prl's expected frames: ceil(samples / stride)
    for h, hl in zip(hs, hs_len):
        assert h.shape == (len(lengths), max(frames), config.embed_dim) and torch.isfinite(h).all()
        assert hl.tolist() == frames


@pytest.mark.parametrize("entry", ENTRIES)
def test_featurizer_sizes_and_rates(entry, checkpoints):
    from s3prl.nn import Featurizer

    path, config, rate = checkpoints[entry]
    up = _upstream(entry, path).eval()
    assert up.hidden_sizes == [config.embed_dim] * (config.num_layers + 1)
    assert up.downsample_rates == [rate] * (config.num_layers + 1)
    fz = Featurizer(up)
    assert fz.output_size == config.embed_dim and fz.downsample_rate == rate
    x, n = _padded(_wavs([16000, 7000]))
    with torch.no_grad():
        feats, lens = fz(*up(x, n))
    assert feats.shape == (2, 50, config.embed_dim) and lens.tolist() == [50, 22]


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e != "onnx_local"])
def test_espnet_frontend_output_size_and_backward(entry, checkpoints):
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    path, config, _ = checkpoints[entry]
    fe = S3prlFrontend(fs=16000, frontend_conf={"upstream": entry, "path_or_url": path}, multilayer_feature=True)
    assert fe.output_size() == config.embed_dim
    fe.train()
    feats, lens = fe(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 11000]))
    assert feats.shape == (2, 50, config.embed_dim) and lens.tolist() == [50, 35]
    feats.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in fe.upstream.parameters())


def test_onnx_local_refuses_inputs_that_require_grad_naming_the_torch_entry(checkpoints):
    path = checkpoints["onnx_local"][0]
    up = _upstream("onnx_local", path)
    x, n = _padded(_wavs([16000]))
    with pytest.raises(ValueError, match=r"inference only.*fine-tune.*star_hubert_local"):
        up(x.requires_grad_(), n)
    with torch.no_grad():  # what S3PRLUpstream itself passes when it is built: inputs that require grad, no_grad
        assert len(up(x, n)[0]) == 3
    # a weighted sum on top of the frozen states trains: the backward stops at the states
    from s3prl.nn import Featurizer

    fz = Featurizer(up)
    feats, _ = fz(*up(x.detach(), n))
    feats.sum().backward()
    assert fz.weights.grad is not None and torch.isfinite(fz.weights.grad).all()
