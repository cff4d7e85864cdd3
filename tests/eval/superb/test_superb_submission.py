"""The SUPERB leaderboard bundle: layout, checks of the prediction files, the form's fields, atomicity."""

import json
import os
import subprocess
import sys
import zipfile

import pytest
from paths import REPO

from s3prl_plugins.eval.superb.submission import SubmissionError, build_submission, model_card


def _exp(root, name, files):
    d = root / name
    d.mkdir()
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return str(d)


@pytest.fixture
def experiments(tmp_path):
    return {
        "ks": _exp(
            tmp_path,
            "ks",
            {
                "test_predict.txt": "yes-a_nohash_0.wav yes\nno-b_nohash_1.wav _unknown_\n",
                "superb_test.json": json.dumps({"superb": {"KS": 50.0}}),
            },
        ),
        "sid": _exp(tmp_path, "sid", {"test_predict.txt": "id10001-v-u1 id10001\nid10002-v-u2 id10001\n"}),
        "asr": _exp(
            tmp_path,
            "asr",
            {
                "test-clean-noLM-hyp.ark": "1-2-0 HELLO WORLD\n1-2-1\n",
                "superb_test-clean.json": json.dumps({"superb": {"ASR": 12.5}}),
            },
        ),
        "pr": _exp(tmp_path, "pr", {"test-hyp.ark": "1-2-0 h @ l oU\n"}),
        "sd": _exp(
            tmp_path,
            "sd",
            {"scoring/predictions/rttm": "SPEAKER x 1 0.0 1.0 <NA> <NA> a <NA> <NA>\n", "frame_shift": "160\n"},
        ),
        "er_fold1": _exp(tmp_path, "er1", {"test_fold1_predict.txt": "Ses01F_impro01_F000 neu\n"}),
    }


def test_bundle_layout_readme_and_results(tmp_path, experiments):
    card = model_card(
        "star_hubert_local",
        None,
        "LibriSpeech 960 h",
        "STaRHuBERT",
        {
            "params": 22308592,
            "macs_total": 463_500_000_000,
            "macs_per_second": 2.06e9,
            "num_utterances": 32,
            "seconds": 224.86,
        },
        320,
    )
    s = build_submission(str(tmp_path / "sub"), experiments, card)
    names = sorted(zipfile.ZipFile(s["zip"]).namelist())
    assert names == [
        "predict/asr_public/predict.ark",
        "predict/er_fold1_public/predict.txt",
        "predict/ks_public/predict.txt",
        "predict/pr_public/predict.ark",
        "predict/sd_public/frame_shift",
        "predict/sd_public/scoring/predictions/rttm",
        "predict/sid_public/predict.txt",
    ]
    assert zipfile.ZipFile(s["zip"]).read("predict/ks_public/predict.txt").decode().startswith("yes-a_nohash_0.wav yes")
    assert s["tasks"]["asr"] == 2 and json.loads((tmp_path / "sub" / "results.json").read_text()) == {
        "ASR": 12.5,
        "KS": 50.0,
    }
    assert any("1 of 5 folds" in w for w in s["warnings"])
    readme = (tmp_path / "sub" / "README.md").read_text()
    for field in (
        "| parameters | 22,308,592 |",
        "| MACs (SUPERB@SLT protocol) | 463,500,000,000 |",
        "| stride | 320 samples (20.0 ms) |",
        "| pre-training corpus | LibriSpeech 960 h |",
        "`star_hubert_local`",
        "| ks | `predict/ks_public/` | 2 | 50.00 |",
    ):
        assert field in readme, field
    assert not os.path.exists(str(tmp_path / "sub") + ".tmp")
    r = subprocess.run(
        [sys.executable, "-m", "s3prl_plugins.bin.superb_score", str(tmp_path / "sub" / "results.json")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and json.loads(r.stdout)["missing"][0] == "PR"


@pytest.mark.parametrize(
    "task, files, match",
    [
        ("ks", {}, "run `bin/run_downstream -m evaluate`"),
        ("ks", {"test_predict.txt": "\n"}, "is empty"),
        ("sid", {"test_predict.txt": "u1 id10001\nu1 id10002\n"}, "u1 predicted twice"),
        ("sid", {"test_predict.txt": "u1\n"}, ":1: 'u1' has no prediction"),
        ("sd", {"scoring/predictions/.keep": ""}, None),
    ],
)
def test_bad_predictions_are_named_and_nothing_is_left(tmp_path, task, files, match):
    d = _exp(tmp_path, "e", files)
    out = tmp_path / "sub"
    card = model_card("x_local", None, "c", "x", None, None)
    if match is None:  # an sd folder with a file is accepted
        assert build_submission(str(out), {task: d}, card)["tasks"] == {"sd": 1}
        return
    with pytest.raises(SubmissionError, match=match):
        build_submission(str(out), {task: d}, card)
    assert not out.exists() and not os.path.exists(str(out) + ".tmp")


def test_unknown_and_empty_task_lists_are_refused(tmp_path):
    card = model_card("x_local", None, "c", "x", None, None)
    with pytest.raises(SubmissionError, match="unknown task"):
        build_submission(str(tmp_path / "s"), {"wer": str(tmp_path)}, card)
    with pytest.raises(SubmissionError, match="nothing to submit"):
        build_submission(str(tmp_path / "s"), {}, card)


def _submit(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "s3prl_plugins.bin.superb_submission", "--no-profile", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_the_corpus_is_given_or_counted_never_a_default(tmp_path, experiments):
    """A mini-corpus model's card must not claim LibriSpeech 960 h: --corpus, or --train-config counts it."""
    from s3prl_plugins.data.kaldi import DataDir, write_data_dir

    wavs = {f"u{i}": str(tmp_path / f"u{i}.wav") for i in range(3)}
    write_data_dir(
        DataDir(
            wav=wavs,
            text={u: "A" for u in wavs},
            utt2spk={u: "u" for u in wavs},
            utt2dur={"u0": 1800.0, "u1": 1800.0, "u2": 900.0},
        ),
        str(tmp_path / "egs" / "data" / "train"),
    )
    (tmp_path / "egs" / "conf").mkdir()
    (tmp_path / "egs" / "conf" / "star_tiny.yaml").write_text("data:\n  train: data/train\n")
    common = ["--upstream", "star_hubert_local", "--ks", experiments["ks"]]
    r = _submit("--out", str(tmp_path / "sub0"), *common)
    assert (
        r.returncode == 2
        and "--corpus" in r.stderr
        and "--train-config" in r.stderr
        and not (tmp_path / "sub0").exists()
    )
    # the config's data dir is relative to egs/ (where the recipe runs); read from the repository root
    r = _submit("--out", "sub1", "--train-config", "egs/conf/star_tiny.yaml", *common, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    corpus = json.load(open(tmp_path / "sub1" / "model.json"))["pretraining_corpus"]
    assert corpus == "train (3 utterances, 1.25 h; data dirs of egs/conf/star_tiny.yaml)"
    assert f"| pre-training corpus | {corpus} |" in (tmp_path / "sub1" / "README.md").read_text()
    # an exported model.pt without a config: the trainer's checkpoints beside it hold the run's config
    import torch

    (tmp_path / "egs" / "exp" / "checkpoints").mkdir(parents=True)
    torch.save(
        {"run_config": {"data": {"train": "data/train"}}}, tmp_path / "egs" / "exp" / "checkpoints" / "step00000010.pt"
    )
    torch.save({"model_weight": {}}, tmp_path / "egs" / "exp" / "model.pt")
    r = _submit("--out", "sub2", "--train-config", "egs/exp/model.pt", *common, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.load(open(tmp_path / "sub2" / "model.json"))["pretraining_corpus"].startswith(
        "train (3 utterances, 1.25 h"
    )
    (tmp_path / "egs" / "conf" / "bad.yaml").write_text("data:\n  train: data/nowhere\n")
    r = _submit("--out", "sub3", "--train-config", "egs/conf/bad.yaml", *common, cwd=tmp_path)
    assert r.returncode == 2 and "data/nowhere is not here" in r.stderr and "--corpus" in r.stderr
    # --out naming a folder of someone else's (here the recipe's egs/): one line, untouched
    before = sorted(os.listdir(tmp_path / "egs"))
    r = _submit("--out", "egs", "--corpus", "c", *common, cwd=tmp_path)
    assert r.returncode == 2 and "did not write" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert sorted(os.listdir(tmp_path / "egs")) == before


def test_what_readme_commands_write_is_ignored_by_git():
    import shutil

    root = REPO
    if shutil.which("git") is None or subprocess.run(["git", "rev-parse"], cwd=root, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    paths = [
        "egs/mini/superb/ks/config.yaml",
        "egs/mini/submission/predict.zip",
        "superb/pr/config.yaml",
        "submission/results.json",
        "egs/mini/exp/superb/ks/superb_test.json",
    ]
    r = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=root, capture_output=True, text=True)
    assert sorted(r.stdout.split()) == sorted(paths)
