"""``cpu_bf16`` (issue 30): the transformer layers under bfloat16 autocast in CPU inference on a CPU with bf16
arithmetic -- close to float32 (against a float64 reference, no further than bf16's rounding allows), float32
states out, on a padded batch; only where it runs (CPU inference, width, the CPU's feature); a CPU without
bf16 says so for ``"on"`` and runs float32."""

import logging

import pytest
import torch

from s3prl_plugins.models import SSLModel
from s3prl_plugins.models.factories import star_hubert_config
from s3prl_plugins.nn import frontends, transformer
from s3prl_plugins.nn.transformer import Encoder

CONV = [(16, 10, 5), (32, 3, 2), (32, 2, 2)]


def _model(width=32, seed=0, **options):
    torch.manual_seed(seed)
    config = star_hubert_config(
        embed_dim=width, num_layers=2, num_heads=4, ffn_dim=2 * width, conv_layers=CONV, pos_conv_kernel=8, **options
    )
    return SSLModel(config).eval()


def _batch():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([8000, 5000])
    wavs = 0.1 * torch.randn(2, 8000, generator=g)
    return wavs * (torch.arange(8000)[None] < lengths[:, None]), lengths


def _ran_bf16(monkeypatch):
    """Records each forward's decision (Encoder.bf16_inference), whatever the CPU."""
    seen = []
    real = Encoder.bf16_inference
    monkeypatch.setattr(Encoder, "bf16_inference", lambda self, x: seen.append(real(self, x)) or seen[-1])
    return seen


@pytest.mark.skipif(not frontends.cpu_bf16_supported(), reason="this CPU has no bf16 arithmetic")
def test_bf16_layers_are_close_to_float32_and_return_float32(monkeypatch):
    seen = _ran_bf16(monkeypatch)
    model = _model(width=64, cpu_bf16="on")
    wavs, lengths = _batch()
    with torch.inference_mode():
        got = model(wavs, lengths)
        ref64 = model.double().set_speed_options(cpu_bf16="off")(wavs.double(), lengths)
        ref32 = model.float()(wavs, lengths)
    assert seen == [True, False, False]
    assert all(h.dtype == torch.float32 for h in got.hidden_states)
    for a, b, c in zip(got.hidden_states, ref64.hidden_states, ref32.hidden_states):
        for i, n in enumerate(got.lengths.tolist()):  # valid frames of each utterance
            cos = torch.nn.functional.cosine_similarity(a[i, :n].double(), b[i, :n], dim=-1)
            assert float(cos.min()) > 0.999  # bf16 keeps 8 bits of mantissa: ~3e-3 per product
            assert float((c[i, :n].double() - b[i, :n]).abs().max()) < 1e-4  # float32 is float32
    assert torch.equal(got.hidden_states[0], ref32.hidden_states[0])  # the layers' input is float32 as before
    assert not torch.equal(got.hidden_states[-1], ref32.hidden_states[-1])  # and the layers did run in bf16


def test_auto_runs_bf16_from_the_minimum_width_on_a_cpu_that_has_it(monkeypatch):
    seen = _ran_bf16(monkeypatch)
    monkeypatch.setattr(transformer, "cpu_bf16_supported", lambda: True)
    wavs, lengths = _batch()
    narrow, wide = _model(width=32), _model(width=Encoder.BF16_MIN_WIDTH)
    with torch.inference_mode():
        narrow(wavs, lengths)
        wide(wavs, lengths)
        wide.set_speed_options(cpu_bf16="off")(wavs, lengths)
        narrow.set_speed_options(cpu_bf16="on")(wavs, lengths)
    assert seen == [False, True, False, True]
    seen.clear()
    wide.set_speed_options(cpu_bf16="auto")
    wide(wavs, lengths)  # gradients for the parameters: training, never bf16 here
    wide.requires_grad_(False)
    wide(wavs, lengths)  # frozen, but a gradient is recorded (e.g. through gradient-based pruning's head gates)
    wide.requires_grad_(True)
    with torch.no_grad():
        wide.train()(wavs, lengths)
        wide.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            wide(wavs, lengths)  # the caller's autocast decides
        wide.double()(wavs.double(), lengths)  # float64 stays float64
    assert seen == [False] * 5


def test_attention_maps_stay_float32(monkeypatch):
    """Maps asked for (STaR's attention targets) come from float32 layers: bf16's softmax would round them."""
    monkeypatch.setattr(transformer, "cpu_bf16_supported", lambda: True)
    model = _model(width=Encoder.BF16_MIN_WIDTH)
    wavs, lengths = _batch()
    with torch.inference_mode():
        ref = model.set_speed_options(cpu_bf16="off")(wavs, lengths, need_attention=True)
        got = model.set_speed_options(cpu_bf16="on")(wavs, lengths, need_attention=True)
    for a, b in zip(ref.hidden_states + ref.attentions, got.hidden_states + got.attentions):
        assert torch.equal(a, b)


def test_a_cpu_without_bf16_runs_float32_and_says_so_for_on(monkeypatch, caplog):
    seen = _ran_bf16(monkeypatch)
    monkeypatch.setattr(transformer, "cpu_bf16_supported", lambda: False)
    transformer._warn_no_bf16.cache_clear()
    wavs, lengths = _batch()
    model = _model(width=Encoder.BF16_MIN_WIDTH)
    with torch.inference_mode(), caplog.at_level(logging.WARNING, logger="s3prl_plugins.nn.transformer"):
        ref = model.set_speed_options(cpu_bf16="off")(wavs, lengths).hidden_states
        auto = model.set_speed_options(cpu_bf16="auto")(wavs, lengths).hidden_states
        assert not caplog.records  # auto: float32, nothing to say
        on = model.set_speed_options(cpu_bf16="on")(wavs, lengths).hidden_states
        model(wavs, lengths)
    assert seen == [False] * 4
    assert [r.getMessage() for r in caplog.records if "no bfloat16" in r.getMessage()][:1] and len(caplog.records) == 1
    for a, b, c in zip(ref, auto, on):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_cpu_bf16_is_a_speed_option_checked_by_name():
    model = _model()
    assert "cpu_bf16" not in model.config.to_dict()  # at its default: checkpoints unchanged
    assert model.set_speed_options(cpu_bf16="off").config.to_dict()["cpu_bf16"] == "off"
    with pytest.raises(ValueError, match="cpu_bf16 must be one of"):
        model.set_speed_options(cpu_bf16="yes")
    assert _model(cpu_bf16=False).config.cpu_bf16 == "off" and _model(cpu_bf16=True).config.cpu_bf16 == "on"  # YAML
