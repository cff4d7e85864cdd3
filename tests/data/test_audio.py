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


def _tones(n, seconds):
    t = np.arange(int(16000 * seconds)) / 16000
    return [(0.1 * np.sin(2 * np.pi * (150 + 90 * i) * t)).astype(np.float32) for i in range(n)]


def test_an_audio_sample_from_a_data_dir_a_folder_or_a_file(tmp_path):
    """What int8 calibration reads (bin/export --calibration): utterances of each speaker in turn, cut, those
    shorter than a frame skipped; 16 kHz only."""
    from s3prl_plugins.data.audio import audio_sample

    (tmp_path / "wavs").mkdir()
    for i, a in enumerate(_tones(3, seconds=2.0)):
        sf.write(str(tmp_path / "wavs" / f"u{i}.wav"), a, 16000)
    (tmp_path / "dev").mkdir()
    utts = {"a-u0": 0, "a-u1": 1, "b-u2": 2}  # two speakers: one utterance of each before a second of either
    (tmp_path / "dev" / "wav.scp").write_text("".join(f"{u} {tmp_path}/wavs/u{i}.wav\n" for u, i in utts.items()))
    (tmp_path / "dev" / "utt2spk").write_text("".join(f"{u} {u[0]}\n" for u in utts))
    got = audio_sample(str(tmp_path / "dev"), utterances=2, seconds=1.5)
    assert [a.size for a in got] == [24000, 24000]
    np.testing.assert_allclose(got[0], _tones(3, seconds=2.0)[0][:24000], atol=1e-4)
    np.testing.assert_allclose(got[1], _tones(3, seconds=2.0)[2][:24000], atol=1e-4)  # b's, not a's second
    sf.write(str(tmp_path / "wavs" / "short.wav"), np.zeros(300, np.float32), 16000)
    assert len(audio_sample(str(tmp_path / "wavs"), 8, 10.0)) == 3  # short.wav skipped
    assert len(audio_sample(str(tmp_path / "wavs" / "u1.wav"), 8, 10.0)) == 1
    sf.write(str(tmp_path / "wavs" / "u3.wav"), np.zeros(8000, np.float32), 8000)
    with pytest.raises(AudioError, match=r"u3.wav: sample rate 8000 Hz; --calibration takes 16 kHz audio"):
        audio_sample(str(tmp_path / "wavs"), 8, 10.0)
    with pytest.raises(AudioError, match="no such data dir"):
        audio_sample(str(tmp_path / "nope"), 8, 10.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioError, match="no wav.scp and no audio files"):
        audio_sample(str(tmp_path / "empty"), 8, 10.0)
