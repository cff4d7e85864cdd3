"""egs/librispeech/{melhubert,distilhubert_cif}/run.sh: options plus one template call whose jobs run in the order
of what they read -- checked on the recipes as they are, with a stand-in ``python`` for the jobs (the STaR recipe
runs for real in tests/recipes/test_star_recipe.py)."""

import os
import subprocess
import sys

from paths import REPO
from stand_in import STUB

EGS = os.path.join(REPO, "egs", "librispeech")


def _recipe(tmp_path, method, utts=64):
    work = tmp_path / "egs" / "librispeech" / method
    work.mkdir(parents=True)
    for name in os.listdir(os.path.join(EGS, method)):
        os.symlink(os.path.join(EGS, method, name), work / name)
    (work / "data" / "train").mkdir(parents=True)
    (work / "data" / "train" / "wav.scp").write_text("".join(f"u{i} a.wav\n" for i in range(utts)))
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text(STUB.format(python=sys.executable))
    os.chmod(stub, 0o755)
    return work


def _run(work, *args):
    env = dict(
        os.environ,
        S3PRL_PLUGINS_PYTHON=str(work.parents[2] / "bin" / "python"),
        TRACE=str(work / "trace"),
        SLEEP="0.05",
        LIBRISPEECH="/corpus/LibriSpeech",
    )
    return subprocess.run(["./run.sh", *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)


def _order(work):
    return [line.split()[1] for line in (work / "trace").read_text().splitlines() if line.startswith("start")]


def test_melhubert_two_iterations_then_the_chains(tmp_path):
    work = _recipe(tmp_path, "melhubert")
    r = _run(work, "--stage", "3", "--frame", "20", "--chains", "heads kd")
    assert r.returncode == 0, r.stderr[-3000:]
    order = _order(work)
    it1, it2 = "pretrain:exp/melhubert_20ms_it1", "pretrain:exp/melhubert_20ms_it2"
    t1, t2 = "make_targets:exp/targets/it1_20ms", "make_targets:exp/targets/it2_20ms"
    assert order.index(t1) < order.index(it1) < order.index(t2) < order.index(it2)
    assert {"compress:exp/compress_20ms/heads", "compress:exp/compress_20ms/kd"} == set(order[4:6])
    assert order[6] == "compression_report:exp/compress_20ms/report" and len(order) == 7  # no probe, no report
    jobs = work / "exp" / "jobs"
    # 200 epochs of 64 utterances at 32 per update; iteration 2 at 20 ms: 100; 32 / (8 x 1 GPU)
    assert "trainer.max_steps=400 trainer.grad_accum=4" in (jobs / "melhubert_20ms_it1.sh").read_text()
    assert "trainer.max_steps=200 trainer.grad_accum=4" in (jobs / "melhubert_20ms_it2.sh").read_text()
    assert "--ckpt exp/melhubert_20ms_it1/model.pt --layer 9" in (jobs / "targets_it2_20ms.sh").read_text()
    kd = (jobs / "compress_kd.sh").read_text()
    assert "model=exp/melhubert_20ms_it2/model.pt" in kd and "objective.mask_prob=0.14" in kd


def test_distilhubert_cif_dp_segments_then_the_student_then_its_probe_and_report(tmp_path):
    work = _recipe(tmp_path, "distilhubert_cif")
    r = _run(work, "--stage", "3", "--distill-config", "conf/dp12.5.yaml", "--report-exps", "distilhubert")
    assert r.returncode == 0, r.stderr[-3000:]
    order = _order(work)
    seg = "segment:exp/segments/dp12.5"
    assert order[0] == seg and order[1].startswith("distill:") and order[2] == "probe:exp/probe/dp12.5", order
    assert "report" in order[-1] and "unit_rates" in order[-2]
    assert "--sweep-utts 500" in (work / "exp" / "jobs" / "segments_dp12.5.sh").read_text()
    assert "dp12.5 distilhubert" in (work / "exp" / "jobs" / "report.sh").read_text()


def test_the_mfa_topline_needs_alignments(tmp_path):
    work = _recipe(tmp_path, "distilhubert_cif")
    r = _run(work, "--stage", "3", "--distill-config", "conf/mfa.yaml")
    assert r.returncode != 0 and "reads exp/segments/phones/train.seg, which is not there" in r.stderr


def test_help_lists_the_options_and_installs_nothing(tmp_path):
    for method in ("star", "melhubert", "distilhubert_cif"):
        r = subprocess.run(
            ["./run.sh", "--help"],
            cwd=os.path.join(EGS, method),
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, S3PRL_PLUGINS_PYTHON="/nonexistent/python"),
        )
        assert r.returncode == 0 and "--stage 1" in r.stderr, (method, r.stderr)


def test_stage_4_before_stage_1_says_which_stage_to_run(tmp_path):
    """The STaR recipe's budget is in epochs of data/train: started at stage 4 with no data, it says what to run
    (it was bash's own 'data/train/wav.scp: No such file or directory'), and trains nothing."""
    work = _recipe(tmp_path, "star")
    os.remove(work / "data" / "train" / "wav.scp")
    r = _run(work, "--stage", "4", "--stop-stage", "4")
    assert r.returncode != 0 and "No such file or directory" not in r.stderr, r.stderr[-2000:]
    assert "needs data/train/wav.scp, which is not there: run stage 1 first (--stage 1)" in r.stderr
    assert not (work / "trace").exists()
