"""The audio loader: documented conversions (stereo -> mono, any rate -> 16 kHz) and clear errors."""

import numpy as np
import pytest
import soundfile as sf
import torch

from s3prl_plugins.data.audio import AudioError, load_audio


def test_mono_16k_round_trip(tmp_path):
    x = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype("float32")
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    wav = load_audio(str(tmp_path / "a.wav"))
    assert wav.dtype == torch.float32 and torch.allclose(wav, torch.from_numpy(x))


def test_stereo_is_mixed_or_refused(tmp_path):
    x = np.stack([np.full(8000, 0.5), np.full(8000, -0.1)], axis=1).astype("float32")
    sf.write(tmp_path / "s.wav", x, 16000, subtype="FLOAT")
    assert torch.allclose(load_audio(str(tmp_path / "s.wav")), torch.full((8000,), 0.2))
    with pytest.raises(AudioError, match="2 channels"):
        load_audio(str(tmp_path / "s.wav"), mono="error")


def test_other_rates_are_resampled_or_refused(tmp_path):
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "r.wav", np.sin(2 * np.pi * 440 * t).astype("float32"), 8000, subtype="FLOAT")
    wav = load_audio(str(tmp_path / "r.wav"))
    assert wav.numel() == 16000
    spec = torch.fft.rfft(wav).abs()
    assert abs(int(spec.argmax()) - 440) <= 1  # 1 s at 16 kHz: bin = Hz
    with pytest.raises(AudioError, match="8000 Hz"):
        load_audio(str(tmp_path / "r.wav"), resample=False)


def test_bad_files(tmp_path):
    with pytest.raises(AudioError, match="no such"):
        load_audio(str(tmp_path / "missing.wav"))
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(AudioError, match="corrupt.wav"):
        load_audio(str(tmp_path / "corrupt.wav"))
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype="float32"), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(str(tmp_path / "empty.wav"))
    sf.write(tmp_path / "short.wav", np.zeros(100, dtype="float32"), 16000)
    with pytest.raises(AudioError, match="shorter than the 400"):
        load_audio(str(tmp_path / "short.wav"), min_samples=400)
