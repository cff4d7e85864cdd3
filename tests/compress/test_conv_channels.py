"""Channel pruning of the waveform CNN (compress.structured.prune_conv_channels, issue 31): the pruned model
equals the unpruned one with those channels gated to 0, for every CNN layout of the zoo; it saves, loads
through the hub entries and load_pretrained, and counts fewer MACs."""

import pytest
import torch

from s3prl_plugins.compress import PruningError, conv_channel_masks, prune_conv_channels
from s3prl_plugins.models import distilhubert_config, hubert_config, melhubert_config, star_hubert_config
from s3prl_plugins.models.checkpoint import load_checkpoint, save_checkpoint
from s3prl_plugins.models.factories import distilhubert_subsampled
from s3prl_plugins.models.ssl_model import SSLModel

CONV = [(16, 10, 5), (32, 3, 2)] + [(32, 2, 2)] * 5
TINY = dict(embed_dim=32, num_layers=2, num_heads=4, ffn_dim=48, conv_layers=CONV, pos_conv_kernel=8, pos_conv_groups=4)
# layers 0, 2 and the last one, whose channels feed the feature layer norm and projection
PLAN = {0: [1, 3, 5], 2: [0, 31], 6: list(range(0, 32, 3))}


def _config(kind):
    if kind == "hubert":  # per-channel GroupNorm on layer 0, feature LayerNorm (the CNN as wide as the model)
        return hubert_config(with_head=False, **TINY)
    if kind == "layer_norm":  # a LayerNorm over channels after every conv (wav2vec 2.0 / HuBERT LARGE), biases
        return hubert_config(with_head=False, conv_norm="layer_norm", conv_bias=True, **TINY)
    if kind == "star":  # the CNN's last width is the model's: no projection until its channels are pruned
        return star_hubert_config(**TINY)
    if kind == "distilhubert":  # no feature LayerNorm
        return distilhubert_config(pred_layers=(1, 2), out_dim=32, **TINY)
    if kind == "avg":
        return distilhubert_subsampled("avg", 2, **TINY)
    raise KeyError(kind)


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 8000, generator=g) * 0.1, torch.tensor([8000, 5600])


def _states(model, wavs, lengths):
    with torch.no_grad():
        out = model.eval()(wavs, lengths)
    return [h[:, : int(out.lengths.min())] for h in out.hidden_states]


def _close(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["hubert", "layer_norm", "star", "distilhubert", "avg"])
def test_pruned_cnn_equals_the_unpruned_one_with_those_channels_gated(kind):
    torch.manual_seed(0)
    model = SSLModel(_config(kind)).eval()
    wavs, lengths = _batch()
    before = _states(model, wavs, lengths)
    pruned = prune_conv_channels(model, PLAN)
    assert [c for c, _, _ in pruned.config.conv_layers] == [13, 32, 30, 32, 32, 32, 21]
    assert [s[1:] for s in pruned.config.conv_layers] == [s[1:] for s in CONV]  # kernels and strides kept
    assert pruned.config.embed_dim == 32 and pruned.config.has_projection
    conv_channel_masks(model, PLAN)
    _close(_states(pruned, wavs, lengths), _states(model, wavs, lengths))
    conv_channel_masks(model, {})  # gates cleared: the input model is what it was
    _close(_states(model, wavs, lengths), before)
    assert model.config.conv_layers == CONV


def test_gates_leave_the_gated_channels_out_of_a_layer_norm():
    """Not only multiplied by 0: a LayerNorm over all channels would count the zeros; the gated model's must
    not, or it cannot equal the model without them."""
    torch.manual_seed(0)
    model = SSLModel(_config("layer_norm")).eval()
    wavs, lengths = _batch()
    conv_channel_masks(model, {3: [0, 1]})
    block = model.frontend.conv_layers[3]
    x = torch.randn(2, 32, 40)
    with torch.no_grad():
        y = block(x)
        conv = block.conv(x)[:, 2:]
        ref = torch.nn.functional.gelu(
            torch.nn.functional.layer_norm(conv.transpose(1, 2), (30,), block.norm.weight[2:], block.norm.bias[2:])
        ).transpose(1, 2)
    assert float(y[:, :2].abs().max()) == 0.0
    torch.testing.assert_close(y[:, 2:], ref, atol=1e-6, rtol=1e-6)


def test_without_gates_pruning_is_exact_where_the_next_layer_reads_nothing_from_those_channels():
    torch.manual_seed(0)
    model = SSLModel(_config("hubert")).eval()
    with torch.no_grad():
        model.frontend.conv_layers[2].conv.weight[:, [4, 9]] = 0  # layer 2 ignores layer 1's channels 4 and 9
    wavs, lengths = _batch()
    _close(_states(prune_conv_channels(model, {1: [4, 9]}), wavs, lengths), _states(model, wavs, lengths))


def test_a_model_without_projection_gets_one_that_selects_the_channels_left():
    torch.manual_seed(0)
    model = SSLModel(_config("star")).eval()
    assert not model.config.has_projection and model.feature_projection is None
    assert not prune_conv_channels(model, {0: [0]}).config.has_projection  # the last layer untouched: none added
    pruned = prune_conv_channels(model, {6: [2, 7]})
    w = pruned.feature_projection.weight
    assert w.shape == (32, 30) and float(pruned.feature_projection.bias.detach().abs().max()) == 0.0
    keep = [j for j in range(32) if j not in (2, 7)]
    torch.testing.assert_close(w, torch.eye(32)[:, keep])


def test_the_chunked_cpu_fast_path_gives_the_pruned_cnn_what_the_plain_form_does():
    torch.manual_seed(0)
    pruned = prune_conv_channels(SSLModel(_config("hubert")), PLAN).eval()
    wavs, _ = _batch()
    with torch.no_grad():
        fast, _ = pruned.frontend(wavs)
        pruned.frontend.chunked = False
        plain, _ = pruned.frontend(wavs)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_bad_plans_are_refused_by_name_and_change_nothing():
    model = SSLModel(_config("hubert"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(PruningError, match=r"conv layer\(s\) \[7\] do not exist \(the CNN has layers 0..6\)"):
        prune_conv_channels(model, {7: [0]})
    with pytest.raises(PruningError, match=r"layer 1: conv channels \[32\] do not exist \(the layer has 32\)"):
        prune_conv_channels(model, {1: [31, 32]})
    with pytest.raises(PruningError, match="lists an index twice"):
        prune_conv_channels(model, {1: [3, 3]})
    with pytest.raises(PruningError, match=r"conv layer 4: removing all its 32 channels would remove the layer"):
        prune_conv_channels(model, {4: list(range(32))})
    with pytest.raises(PruningError, match="log-Mel front-end"):
        prune_conv_channels(SSLModel(melhubert_config(**{**TINY, "conv_layers": []})), {0: [0]})
    cif = SSLModel(distilhubert_subsampled("cif", 4, **TINY))
    with pytest.raises(PruningError, match=r"'cif' subsampler is built as wide as the CNN's last layer"):
        prune_conv_channels(cif, {6: [0]})
    assert prune_conv_channels(cif, {5: [0]}).config.conv_layers[5][0] == 31  # earlier layers: fine
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_a_pruned_cnn_saves_and_loads_through_the_hub_entries_and_load_pretrained(tmp_path):
    import s3prl.hub as hub

    import s3prl_plugins  # noqa: F401 - registers the entries
    from s3prl_plugins.models.loading import load_pretrained

    torch.manual_seed(0)
    pruned = prune_conv_channels(SSLModel(_config("star")), PLAN).eval()
    path = str(tmp_path / "pruned.pt")
    save_checkpoint(path, pruned)
    assert load_checkpoint(path)[0].config.conv_layers == pruned.config.conv_layers
    wavs = [torch.randn(8000) * 0.1, torch.randn(5600) * 0.1]
    with torch.no_grad():
        ref = pruned(torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True), torch.tensor([8000, 5600]))
        for expert in (hub.star_hubert_local(ckpt=path), hub.distilhubert_cif_local(ckpt=path)):
            got = expert.eval()(wavs)["hidden_states"]
            assert len(got) == len(ref.hidden_states)
            for g, r in zip(got, ref.hidden_states):
                torch.testing.assert_close(g[1, :17], r[1, :17], atol=1e-6, rtol=0)
        loaded = load_pretrained(path).eval()
        _close(_states(loaded, *_batch()), _states(pruned, *_batch()))


def test_the_profiler_counts_what_the_pruned_cnn_computes():
    from s3prl_plugins.eval.probe.profile import ssl_macs

    torch.manual_seed(0)
    model = SSLModel(_config("hubert"))
    half = {i: list(range(c // 2)) for i, (c, _, _) in enumerate(CONV)}
    pruned = prune_conv_channels(model, half)
    a, b = ssl_macs(model, 16000), ssl_macs(pruned, 16000)
    frames = [16000]
    for _, k, s in CONV:
        frames.append((frames[-1] - k) // s + 1)
    cnn = [c * cin * k * n for (c, k, _), cin, n in zip(CONV, [1] + [c for c, _, _ in CONV], frames[1:])]
    assert a["macs_frontend"] == sum(cnn)
    # the first layer writes half its channels; every later one reads half and writes half: a quarter
    assert b["macs_frontend"] == cnn[0] // 2 + sum(cnn[1:]) // 4
    # the CNN's last width was the transformer's (no projection): the pruned model gains one from its 16
    # channels left to the width 32; the rest is untouched
    assert not model.config.has_projection and pruned.config.has_projection
    assert (b["macs"] - b["macs_frontend"]) - (a["macs"] - a["macs_frontend"]) == 16 * 32 * frames[-1]
