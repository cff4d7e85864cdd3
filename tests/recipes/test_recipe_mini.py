"""The mini recipe end to end, reduced (tiny corpus, a few steps per stage): every stage runs, writes
what its header promises, is skipped once done, and can be re-run alone."""

import json
import os
import subprocess

import pytest
from paths import REPO

from s3prl_plugins.data.kaldi import read_data_dir

ROOT = REPO
FAST = [
    "--utts-per-speaker",
    "2",
    "--subsets",
    "ks",
    "--hubert",
    "true",
    "--align-steps",
    "20",
    "--teacher-steps",
    "3",
    "--student-steps",
    "3",
    "--probe-steps",
    "10",
    "--superb-steps",
    "4",
    "--asr5k",
    "false",
    "--compress-updates",
    "2",
    "--compress-probe-steps",
    "10",
]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A working copy of egs/mini whose files link to the repository's (outputs stay in the copy)."""
    work = tmp_path_factory.mktemp("egs") / "mini"
    work.mkdir()
    for name in ("run.sh", "ssl.sh", "conf", "utils", "path.sh", "cmd.sh", "local"):
        os.symlink(os.path.join(ROOT, "egs", "mini", name), work / name)
    return work


def _run(work, *args):
    return subprocess.run(["./run.sh", *args], cwd=work, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_all_stages(recipe):
    r = _run(recipe, *FAST)
    assert r.returncode == 0, r.stderr[-4000:]
    for split in ("train", "dev", "test"):
        assert (recipe / "data" / split / "wav.scp").is_file() and (recipe / "data" / split / "phones").is_file()
        assert read_data_dir(str(recipe / "data" / f"ks_{split}")).utt2dur  # the KS subset, copied in stage 1
    assert not (recipe / "data" / "sid_train").exists()  # --subsets ks only
    report = json.loads((recipe / "exp" / "align" / "report.json").read_text())
    assert report["method"] == "ctc" and report["dirs"]["test"]["aligned"] > 0
    assert "mean_abs_boundary_ms" in report["dirs"]["test"]
    assert list((recipe / "exp" / "align" / "test").glob("*.TextGrid"))
    for f in (
        "exp/hubert_tiny/model.pt",
        "exp/hubert_tiny/hubert_local.pt",
        "exp/melhubert_tiny/model.pt",
        "exp/star_tiny/model.pt",
        "exp/distilhubert_tiny/model.pt",
    ):
        assert (recipe / f).is_file(), f
    for name in ("fbank", "hubert_tiny", "melhubert_tiny", "star_tiny", "distilhubert_tiny"):
        assert 0 <= json.loads((recipe / "exp" / "probe" / name / "result.json").read_text())["per"]
    assert "exp/hubert_tiny/hubert_local.pt" in r.stdout and "exp/star_tiny/model.pt" in r.stdout
    report = json.loads((recipe / "exp" / "report.json").read_text())
    assert report["star_tiny"]["params"] == report["distilhubert_tiny"]["params"] < report["hubert_tiny"]["params"]
    assert all(report[n]["probe_per"] is not None for n in ("fbank", "hubert_tiny", "star_tiny", "distilhubert_tiny"))
    assert all(
        0 <= report[n]["ks_acc"] <= 1 and "sid_acc" not in report[n] for n in ("fbank", "melhubert_tiny", "star_tiny")
    )
    assert "KS acc " in r.stdout and "SID acc " not in r.stdout  # the table has the KS column only
    # stage 5: the STaR student deployed as int8 ONNX, probed and reported beside its source
    int8 = report["star_tiny_int8"]
    assert int8["params"] == report["star_tiny"]["params"] and int8["file_mb"] > 0
    assert int8["probe_per"] is not None and 0 <= int8["ks_acc"] <= 1
    assert "deployed:      exp/star_tiny_int8.onnx" in r.stdout
    # stages 3-4, 6: the DP segmentation, the CIF student it guides, its probe at its own frame rate; the plots
    assert (recipe / "exp" / "segments" / "dp12.5" / "test.seg").is_file()
    cif = json.loads((recipe / "exp" / "probe" / "distilhubert_tiny_cif_dp4" / "result.json").read_text())
    assert 0 < cif["frame_rate_hz"] < 50 and 0 <= cif["per"]
    assert report["distilhubert_tiny_cif_dp4"]["gmacs_c_per_second"] < report["distilhubert_tiny"]["gmacs_c_per_second"]
    for png in ("subsampling.png", "unit_rates.png", "report_tradeoff.png", "report_losses.png"):
        assert (recipe / "exp" / png).stat().st_size > 10_000, png
    # stage 7: KS through s3prl's own runner (train, then -m evaluate), in the report with its SUPERB score
    ks = json.loads((recipe / "exp" / "superb" / "star_tiny" / "ks" / "superb_test.json").read_text())
    assert ks["downstream"] == "speech_commands" and 0 <= ks["superb"]["KS"] <= 100
    assert report["star_tiny"]["superb"] == {"KS": ks["superb"]["KS"]} and "PR" in report["star_tiny"]["superb_missing"]
    md = (recipe / "exp" / "report.md").read_text()
    assert "| star_tiny |" in md and "SUPERB KS" in md and "![Trade-off" in md
    import s3prl.hub as hub

    # stage 5: the head-pruning chain of the MelHuBERT teacher, its report, its models through s3prl's hub
    rows = json.loads((recipe / "exp" / "compress" / "heads" / "trajectory.json").read_text())
    assert [r["attention_heads"] for r in rows] == [16, 12, 8, 4] and all(r["per"] is not None for r in rows)
    assert all(r.get("sid_accuracy") is None for r in rows)  # --subsets ks: no speaker subset, no SID probe
    assert (recipe / "exp" / "compress" / "report" / "tradeoff.png").stat().st_size > 10_000
    assert "| heads | 03_heads3 |" in (recipe / "exp" / "compress" / "report" / "report.md").read_text()
    pruned = hub.melhubert_pruned_local(ckpt=str(recipe / "exp" / "compress" / "heads" / "03_heads3" / "model.pt"))
    assert sum(pruned.model.config.num_heads) == 4
    # the students load through s3prl's stock hub with our entry
    import s3prl.hub as hub

    assert len(hub.star_hubert_local(ckpt=str(recipe / "exp" / "star_tiny" / "model.pt")).model.config.num_heads) == 4


@pytest.mark.slow  # after test_all_stages
def test_finished_stages_are_skipped_and_one_job_reruns(recipe):
    r = _run(recipe, *FAST, "--stop-stage", "4")
    assert r.returncode == 0 and "already" in r.stderr and " starts" not in r.stderr, r.stderr[-2000:]
    os.remove(recipe / "exp" / ".done.melhubert_tiny")
    r = _run(recipe, *FAST, "--stage", "4", "--stop-stage", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "job melhubert_tiny starts" in r.stderr and r.stderr.count(" starts") == 1 and "Stage 1" not in r.stderr


def test_bad_options_are_refused(recipe):
    r = _run(recipe, "--no-such-option", "1")  # not run.sh's: passed on to ssl.sh, which knows it no more
    assert r.returncode != 0 and "./ssl.sh: unknown option --no-such-option" in r.stderr


def test_options_of_the_template_pass_through_run_sh(recipe):
    """Issue 32 item 4: as ESPnet's run.sh passes "$@" to asr.sh, an option run.sh does not set itself reaches
    ssl.sh (here the DP segmentation's, with a stage range that runs nothing)."""
    r = _run(recipe, "--segment-args", "--sweep-utts 5", "--stage", "9", "--stop-stage", "8")
    assert r.returncode == 0, r.stderr
    r = _run(recipe, "--help")
    assert "any other --option VALUE: passed on to ./ssl.sh" in r.stderr and "--passthrough" not in r.stderr


def test_the_waveform_hubert_is_made_only_when_asked_for_or_needed(tmp_path):
    """make demo leaves stage 4 out (--hubert false); --distill-teacher hubert_tiny brings it back."""
    work = tmp_path / "mini"
    work.mkdir()
    for name in ("run.sh", "ssl.sh", "conf", "utils", "path.sh", "cmd.sh", "local"):
        os.symlink(os.path.join(ROOT, "egs", "mini", name), work / name)
    r = _run(work, "--stage", "4", "--stop-stage", "4")  # refused (no stage 1-3 data here) once the jobs are written
    assert r.returncode != 0 and "reads exp/targets/fbank/train.km" in r.stderr, r.stderr[-2000:]
    assert (work / "exp" / "jobs" / "melhubert_tiny.sh").exists() and not (
        work / "exp" / "jobs" / "hubert_tiny.sh"
    ).exists()
    r = _run(work, "--stage", "4", "--stop-stage", "4", "--distill-teacher", "hubert_tiny", "--teacher-steps", "1")
    # its job is written; refused before anything runs for want of stage 1-3's data
    assert "trainer.max_steps=1" in (work / "exp" / "jobs" / "hubert_tiny.sh").read_text()
    assert r.returncode != 0 and "job hubert_tiny (exp/jobs/hubert_tiny.sh) reads exp/targets/mfcc/train.km" in r.stderr
    (work / "exp" / "jobs" / "hubert_tiny.sh").unlink()
    r = _run(work, "--stage", "4", "--stop-stage", "4", "--compress", "dp")  # the dp chain prunes it: made too
    assert (work / "exp" / "jobs" / "hubert_tiny.sh").exists(), r.stderr[-2000:]
