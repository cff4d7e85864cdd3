"""Our models against the reference implementations shipped in s3prl, torchaudio and transformers,
built from small random configs; weights converted with our converters; hidden states compared."""

import pytest
import torch
from refs import (
    SMALL_CONV_LIST,
    hf_model,
    randomize_,
    s3prl_distiller_ckpt,
    s3prl_hubert_ckpt,
    s3prl_wav2vec2_ckpt,
    s3prl_wavlm_ckpt,
    wav_batch,
)

from s3prl_plugins.models import SSLModel, pad_waveforms
from s3prl_plugins.models.convert import ConversionError, from_torchaudio
from s3prl_plugins.models.loading import load_pretrained

ATOL = 1e-4


def _ours(path):
    return load_pretrained(str(path), keep_head=True)


def _run(model, wavs):
    x, lengths = pad_waveforms(wavs)
    with torch.no_grad():
        return model(x, lengths)


def _assert_states(ref_states, our_states, lengths=None):
    assert len(ref_states) == len(our_states)
    for i, (a, b) in enumerate(zip(ref_states, our_states)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        if lengths is None:
            torch.testing.assert_close(b, a, atol=ATOL, rtol=0, msg=f"layer {i}")
        else:
            for j, n in enumerate(lengths.tolist()):
                torch.testing.assert_close(b[j, :n], a[j, :n], atol=ATOL, rtol=0, msg=f"layer {i} utt {j}")


def _s3prl_expert(module, path):
    import importlib

    return importlib.import_module(f"s3prl.upstream.{module}.expert").UpstreamExpert(str(path)).eval()


# s3prl derives frame padding from sample chunks (fairseq's forward_padding_mask), not from the CNN's
# output lengths, so its padded frames differ by design: compare single utterances and equal lengths.
@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"layer_norm_first": True},
        {"extractor_mode": "layer_norm"},
        {"normalize": True},
    ],
    ids=["base", "pre_ln", "layer_norm_cnn", "normalize"],
)
def test_s3prl_hubert_parity(tmp_path, variant):
    _check_s3prl(
        tmp_path, "hubert", s3prl_hubert_ckpt(**variant), [wav_batch((4000,)), wav_batch((3000, 3000), seed=1)]
    )


def _check_s3prl(tmp_path, module, ckpt, batches):
    path = tmp_path / f"{module}.pt"
    torch.save(ckpt, path)
    ref = _s3prl_expert(module, path)
    ours = _ours(path)
    for wavs in batches:
        with torch.no_grad():
            ref_states = ref(wavs)["hidden_states"]
        _assert_states(ref_states, _run(ours, wavs).hidden_states)


def test_s3prl_wav2vec2_parity(tmp_path):
    _check_s3prl(tmp_path, "wav2vec2", s3prl_wav2vec2_ckpt(), [wav_batch((4000,))])


def test_s3prl_wavlm_parity(tmp_path):
    # 6000 samples: long enough for relative distances past the exact buckets
    _check_s3prl(tmp_path, "wavlm", s3prl_wavlm_ckpt(), [wav_batch((6000,))])


def test_s3prl_distiller_parity(tmp_path):
    path = tmp_path / "distiller.pt"
    torch.save(s3prl_distiller_ckpt(), path)
    ref = _s3prl_expert("distiller", path)
    ours = _ours(path)
    wavs = wav_batch((4000, 2500, 3300))
    x, lengths = pad_waveforms(wavs)
    with torch.no_grad():
        ref_out = ref(wavs)
        out = ours(x, lengths)
        preds = ours.head(out.hidden_states[-1])
    frames = out.lengths
    ref_states = ref_out["hidden_states"]
    # s3prl's distiller reports the projected CNN features as its first state (before the positional
    # convolution); ours reports the first layer's input there and the projection as `features`.
    _assert_states([ref_states[0]], [out.features], frames)
    _assert_states(ref_states[1:3], out.hidden_states[1:], frames)
    _assert_states(ref_states[3:], list(preds.unbind(1)), frames)


# transformers and torchaudio take lengths / attention masks: parity holds on padded batches.
def _check_transformers(tmp_path, ref, lengths):
    ref.save_pretrained(tmp_path / "hf")
    ours = _ours(tmp_path / "hf")
    x, lengths = pad_waveforms(wav_batch(lengths))
    mask = (torch.arange(x.size(1))[None] < lengths[:, None]).long()
    with torch.no_grad():
        ref_states = ref(x, attention_mask=mask, output_hidden_states=True).hidden_states
        out = ours(x, lengths)
    _assert_states(ref_states, out.hidden_states, out.lengths)
    return ours


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2", "wavlm"])
def test_transformers_parity_padded(tmp_path, kind):
    _check_transformers(tmp_path, hf_model(kind), (6000, 4100, 2500))


def test_transformers_pre_ln_layer_norm_cnn(tmp_path):
    ref = hf_model("wav2vec2", do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
    ours = _check_transformers(tmp_path, ref, (5000, 3000))
    assert ours.config.layer_norm_first and ours.config.conv_norm == "layer_norm"


def test_torchaudio_parity_padded():
    import torchaudio

    ref = torchaudio.models.wav2vec2_model(
        extractor_mode="group_norm",
        extractor_conv_layer_config=SMALL_CONV_LIST,
        extractor_conv_bias=False,
        encoder_embed_dim=48,
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=16,
        encoder_pos_conv_groups=4,
        encoder_num_layers=3,
        encoder_num_heads=4,
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=96,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=False,
        encoder_layer_drop=0.0,
        aux_num_out=None,
    )
    randomize_(ref).eval()
    config, state = from_torchaudio(ref)
    ours = SSLModel(config).eval()
    ours.load_state_dict(state, strict=True)
    wavs = wav_batch((6000, 3100, 4500))
    x, lengths = pad_waveforms(wavs)
    with torch.no_grad():
        ref_layers, ref_lengths = ref.extract_features(x, lengths)
        out = ours(x, lengths)
    assert torch.equal(ref_lengths, out.lengths)
    _assert_states(ref_layers, out.hidden_states[1:], out.lengths)


def test_unknown_key_raises(tmp_path):
    ck = s3prl_hubert_ckpt()
    ck["model_weight"]["encoder.layers.0.self_attn.extra_thing"] = torch.zeros(3)
    path = tmp_path / "bad.pt"
    torch.save(ck, path)
    with pytest.raises(ConversionError, match="extra_thing"):
        load_pretrained(str(path))


def test_missing_key_raises(tmp_path):
    ck = s3prl_hubert_ckpt()
    del ck["model_weight"]["encoder.layers.1.fc2.weight"]
    path = tmp_path / "bad.pt"
    torch.save(ck, path)
    with pytest.raises(ValueError, match="fc2"):
        load_pretrained(str(path))


def test_plain_fairseq_checkpoint(tmp_path):
    """A fairseq checkpoint whose cfg is plain data loads (weights_only); one that pickles fairseq
    objects gets an error that says how to convert it."""
    ck = s3prl_hubert_ckpt()
    fairseq = {
        "cfg": {"model": dict(ck["model_cfg"], _name="hubert"), "task": ck["task_cfg"]},
        "model": ck["model_weight"],
    }
    path = tmp_path / "fairseq.pt"
    torch.save(fairseq, path)
    ref = _s3prl_expert("hubert", _save(tmp_path / "h.pt", ck))
    ours = _ours(path)
    wavs = wav_batch((4000,))
    with torch.no_grad():
        _assert_states(ref(wavs)["hidden_states"], _run(ours, wavs).hidden_states)

    import argparse

    torch.save({"args": argparse.Namespace(arch="hubert"), "model": ck["model_weight"]}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="s3prl.upstream.hubert.convert"):
        load_pretrained(str(tmp_path / "pickled.pt"))


def _save(path, obj):
    torch.save(obj, path)
    return path
