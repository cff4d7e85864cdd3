"""LibriSpeech-layout data prep and Kaldi data dirs: skip lists with reasons, validation, atomic writes."""

import os

import numpy as np
import pytest
import soundfile as sf
from paths import REPO
from tiny_data import librispeech_layout as _corpus

from s3prl_plugins.data.kaldi import DataDirError, read_data_dir, write_data_dir
from s3prl_plugins.data.librispeech import prepare_librispeech


def test_prepare_with_skip_list(tmp_path):
    _corpus(
        tmp_path,
        {
            "19-198-0000": (1.0, "HELLO WORLD"),
            "19-198-0001": (0.5, "IT'S FINE"),
            "19-198-0002": ("corrupt", "BROKEN FILE"),
            "19-198-0003": (0.01, "TOO SHORT"),
            "19-198-0004": (1.0, "BAD CHARACTERS 42"),
            "19-198-0005": (1.0, None),
            "19-198-0006": (None, "NO AUDIO"),
            "26-495-0000": (0.7, "SECOND SPEAKER"),
        },
    )
    out = tmp_path / "data" / "train"
    d, skipped = prepare_librispeech(str(tmp_path), "train-clean-100", str(out))
    assert d.utts == ["19-198-0000", "19-198-0001", "26-495-0000"]
    reasons = dict(skipped)
    assert "unreadable" in reasons["19-198-0002"]
    assert "too short" in reasons["19-198-0003"]
    assert "outside" in reasons["19-198-0004"]
    assert "no transcript" in reasons["19-198-0005"]
    assert "without audio" in reasons["19-198-0006"]
    assert len((out / "skipped.txt").read_text().splitlines()) == 5
    back = read_data_dir(str(out))
    assert back.text["19-198-0001"] == "IT'S FINE" and back.spk2utt == {
        "19": ["19-198-0000", "19-198-0001"],
        "26": ["26-495-0000"],
    }
    assert abs(back.utt2dur["26-495-0000"] - 0.7) < 1e-3
    assert (out / "spk2utt").read_text().startswith("19 19-198-0000 19-198-0001\n")


def test_missing_root_and_empty_corpus(tmp_path):
    with pytest.raises(DataDirError, match="db.sh"):
        prepare_librispeech(str(tmp_path / "nowhere"), "dev-clean", str(tmp_path / "d"))
    (tmp_path / "dev-clean").mkdir()
    with pytest.raises(DataDirError, match="no .flac"):
        prepare_librispeech(str(tmp_path), "dev-clean", str(tmp_path / "d"))
    assert not (tmp_path / "d").exists()


def test_validation_names_the_problem(tmp_path):
    _corpus(tmp_path, {"19-198-0000": (1.0, "HELLO"), "19-198-0001": (1.0, "WORLD")})
    out = tmp_path / "d"
    d, _ = prepare_librispeech(str(tmp_path), "train-clean-100", str(out))
    os.remove(d.wav["19-198-0001"])
    with pytest.raises(DataDirError, match="missing file for 19-198-0001"):
        read_data_dir(str(out))
    bad = d.subset(d.utts)
    bad.utt2spk["19-198-0000"] = "77"
    with pytest.raises(DataDirError, match="speaker id"):
        write_data_dir(bad, str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.tmp").exists()
    del bad.text["19-198-0000"]
    bad.utt2spk["19-198-0000"] = "19"
    with pytest.raises(DataDirError, match="text and wav.scp disagree"):
        write_data_dir(bad, str(tmp_path / "bad"))


def test_librispeech_recipe_on_a_local_root(tmp_path):
    """egs/librispeech/run.sh with LIBRISPEECH pointing at a (tiny) local copy: data dirs + validation;
    a root that does not exist stops with the fix."""
    import subprocess

    root = REPO
    corpus = tmp_path / "LibriSpeech"
    _corpus(corpus, {"19-198-0000": (1.0, "HELLO WORLD"), "26-495-0000": (0.7, "SECOND SPEAKER")})
    work = tmp_path / "recipe"
    work.mkdir()
    for name in ("run.sh", "db.sh", "utils", "path.sh", "cmd.sh"):
        os.symlink(os.path.join(root, "egs", "librispeech", name), work / name)
    env = dict(os.environ, LIBRISPEECH=str(corpus))
    r = subprocess.run(
        ["./run.sh", "--subsets", "train-clean-100"], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "data/train_clean_100 2 utterances ok" in r.stdout
    assert read_data_dir(str(work / "data" / "train_clean_100")).utts == ["19-198-0000", "26-495-0000"]
    env["LIBRISPEECH"] = str(tmp_path / "nowhere")
    r = subprocess.run(
        ["./run.sh", "--subsets", "dev-clean"], cwd=work, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode != 0 and "db.sh" in r.stderr


def _truncate(path, fraction=1 / 3):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: int(len(data) * fraction)])


def test_truncated_flac_is_caught_at_prep(tmp_path):
    """A FLAC cut to a third of its bytes keeps a readable header (soundfile.info succeeds) but not its
    samples: prep lists it with the file and the fix instead of handing it to training."""
    _corpus(tmp_path, {"19-198-0000": (3.0, "GOOD FILE"), "19-198-0001": (3.0, "CUT SHORT")})
    flac = tmp_path / "train-clean-100" / "19" / "198" / "19-198-0001.flac"
    _truncate(flac)
    assert sf.info(str(flac)).frames == 48000  # the header still claims every sample
    d, skipped = prepare_librispeech(str(tmp_path), "train-clean-100", str(tmp_path / "data"))
    assert d.utts == ["19-198-0000"]
    reason = dict(skipped)["19-198-0001"]
    assert str(flac) in reason and "truncated" in reason and "copy it again" in reason


def test_dataset_skips_an_unreadable_file_by_name_and_counts_it(tmp_path, caplog):
    """A file that goes bad after prep: the dataset names it, collate leaves it out and lists it, the
    trainer counts it; a batch with nothing readable left raises."""
    import torch

    from s3prl_plugins.data.audio import AudioError
    from s3prl_plugins.data.dataset import AudioDataset, collate

    _corpus(tmp_path, {"19-198-0000": (1.0, "GOOD"), "19-198-0001": (1.0, "GOES BAD")})
    prepare_librispeech(str(tmp_path), "train-clean-100", str(tmp_path / "data"))
    _truncate(tmp_path / "train-clean-100" / "19" / "198" / "19-198-0001.flac", 0.5)
    ds = AudioDataset(str(tmp_path / "data"))
    with caplog.at_level("WARNING"):
        batch = collate([ds[0], ds[1]])
    assert batch["utts"] == ["19-198-0000"] and batch["wavs"].shape == (1, 16000)
    assert [u for u, _ in batch["skipped"]] == ["19-198-0001"]
    assert "19-198-0001" in caplog.text and "19-198-0001.flac" in caplog.text
    with pytest.raises(AudioError, match="every utterance of a batch"):
        collate([ds[1]])
    assert torch.equal(collate([ds[0]])["lengths"], torch.tensor([16000]))


def test_wav_beside_the_transcripts_is_read_and_other_types_are_named(tmp_path):
    _corpus(
        tmp_path,
        {
            "19-198-0000": (1.0, "FLAC FILE"),
            "19-198-0001": (None, "WAV FILE"),
            "19-198-0002": (None, "MP3 FILE"),
            "19-198-0003": (0.8, "BOTH"),
        },
    )
    folder = tmp_path / "train-clean-100" / "19" / "198"
    sf.write(folder / "19-198-0001.wav", np.zeros(12000, dtype="float32"), 16000)
    sf.write(folder / "19-198-0003.wav", np.zeros(4000, dtype="float32"), 16000)  # a converted copy: the FLAC is used
    (folder / "19-198-0002.mp3").write_bytes(b"ID3")
    d, skipped = prepare_librispeech(str(tmp_path), "train-clean-100", str(tmp_path / "data"))
    assert d.utts == ["19-198-0000", "19-198-0001", "19-198-0003"]
    assert d.wav["19-198-0001"].endswith(".wav") and abs(d.utt2dur["19-198-0001"] - 0.75) < 1e-3
    assert d.wav["19-198-0003"].endswith(".flac")
    reasons = dict(skipped)
    assert (
        list(reasons) == ["19-198-0002"]
        and "19-198-0002.mp3: this file type is not read (use .flac or .wav)" in reasons["19-198-0002"]
    )


def test_a_data_dir_replaces_only_a_folder_it_wrote(tmp_path):
    """write_data_dir (and every folder built by atomic_dir: SUPERB task data, submissions) replaces an empty
    folder, its own earlier output or a plain Kaldi data dir; a folder holding anything else is refused, untouched."""
    from s3prl_plugins.data.kaldi import DIR_MARKER, DataDir, NotOurFolder
    from s3prl_plugins.models.checkpoint import current_umask

    d = DataDir(wav={"s1-u1": "/a.wav"}, utt2spk={"s1-u1": "s1"})
    out = tmp_path / "data"
    write_data_dir(d, str(out))
    assert DIR_MARKER in os.listdir(out)
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o777 & ~current_umask())
    write_data_dir(d, str(out))  # its own: replaced
    (tmp_path / "kaldi").mkdir()  # a Kaldi data dir written before folders were marked: replaced
    for name in ("wav.scp", "utt2spk", "spk2utt"):
        (tmp_path / "kaldi" / name).write_text("")
    write_data_dir(d, str(tmp_path / "kaldi"))
    assert read_data_dir(str(tmp_path / "kaldi"), check_files=False).utts == ["s1-u1"]
    (out / "notes.txt").write_text("mine")  # a file a user added to a data dir it wrote: not replaced
    with pytest.raises(NotOurFolder, match="did not write \\(notes.txt\\)"):
        write_data_dir(d, str(out))
    assert (out / "notes.txt").read_text() == "mine"
    (out / "phones").write_text("")  # what our own make_phones adds: still ours
    (out / "notes.txt").unlink()
    write_data_dir(d, str(out))
    exp = tmp_path / "exp"
    (exp / "checkpoints").mkdir(parents=True)
    (exp / "model.pt").write_text("weights")
    with pytest.raises(NotOurFolder, match="did not write .*checkpoints, model.pt"):
        write_data_dir(d, str(exp))
    assert sorted(os.listdir(exp)) == ["checkpoints", "model.pt"] and (exp / "model.pt").read_text() == "weights"
    assert sorted(os.listdir(tmp_path)) == ["data", "exp", "kaldi"]  # no temporary folder left
