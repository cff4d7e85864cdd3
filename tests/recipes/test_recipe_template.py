"""egs/TEMPLATE/ssl1/ssl.sh: the recipe template's jobs (stages 3-8) through GNU make, on a stand-in recipe whose
trainings and probes are a stand-in ``python`` (the real one answers the template's config queries): each job
waits for the jobs that write what it reads, --jobs of them side by side, a failure stops only what needs it,
finished jobs are skipped, missing inputs are refused before anything runs, and cmd.sh's lines work as written."""

import os
import signal
import subprocess
import sys
import time

import pytest
from paths import REPO
from stand_in import STUB

TEMPLATE = os.path.join(REPO, "egs", "TEMPLATE")


@pytest.fixture
def recipe(tmp_path):
    """A recipe folder: a teacher pre-trained on k-means targets, a student distilled from it, probes."""
    work = tmp_path / "recipe"
    for d in ("conf", "local", "bin"):
        (work / d).mkdir(parents=True)
    os.symlink(os.path.join(TEMPLATE, "ssl1", "ssl.sh"), work / "ssl.sh")
    for name in ("utils", "cmd.sh", "path.sh"):
        os.symlink(os.path.join(TEMPLATE, name), work / name)
    (work / "local" / "data.sh").write_text(
        "#!/usr/bin/env bash\nmkdir -p data/train data/dev data/test\necho 'u1 a.wav' > data/train/wav.scp\n"
    )
    os.chmod(work / "local" / "data.sh", 0o755)
    (work / "conf" / "teacher.yaml").write_text(
        "data: {train_labels: exp/targets/km/train.km}\ntrainer: {exp_dir: exp/teacher}\n"
    )
    (work / "conf" / "student.yaml").write_text(
        "teacher: {source: exp/teacher/model.pt}\ntrainer: {exp_dir: exp/student}\n"
    )
    stub = work / "bin" / "python"
    stub.write_text(STUB.format(python=sys.executable))
    os.chmod(stub, 0o755)
    return work


def _run(work, *args, env=None, **kw):
    env = dict(os.environ, S3PRL_PLUGINS_PYTHON=str(work / "bin" / "python"), TRACE=str(work / "trace"), **(env or {}))
    env.pop("OMP_NUM_THREADS", None)
    return subprocess.run(["./ssl.sh", *args], cwd=work, env=env, capture_output=True, text=True, timeout=300, **kw)


GRAPH = ["--targets", "km=fbank,10,1", "--train", "teacher student", "--probe", "fbank student", "--stop-stage", "7"]


def _trace(work):
    spans = {}
    for line in (work / "trace").read_text().splitlines():
        what, name, t, *threads = line.split()
        spans.setdefault(name, {})[what] = float(t)
        if threads:
            spans[name]["threads"] = threads[0]
    return spans


def test_jobs_wait_for_what_they_read_and_run_side_by_side(recipe):
    r = _run(recipe, *GRAPH, "--jobs", "2")
    assert r.returncode == 0, r.stderr
    s = _trace(recipe)
    km, fb = s["make_targets:exp/targets/km"], s["probe:exp/probe/fbank"]
    teacher, student = s["pretrain:exp/teacher"], s["distill:exp/student"]
    probe = s["probe:exp/probe/student"]
    assert km["end"] <= teacher["start"] and teacher["end"] <= student["start"] and student["end"] <= probe["start"]
    assert km["start"] < fb["end"] and fb["start"] < km["end"]  # nothing between them: side by side
    assert {v["threads"] for v in s.values()} == {str(max(1, os.cpu_count() // 2))}
    for n in ("targets_km", "teacher", "student", "probe_fbank", "probe_student"):
        assert (recipe / "exp" / f".done.{n}").exists()
        assert "the stand-in runs" in (recipe / "exp" / "log" / f"{n}.log").read_text()
    # the terminal hears of each job as it starts and ends; each job is a script that can be run by hand
    assert (
        r.stderr.index("job teacher starts") < r.stderr.index("job teacher done") < r.stderr.index("job student starts")
    )
    assert (
        "s3prl_plugins.bin.distill --config conf/student.yaml" in (recipe / "exp" / "jobs" / "student.sh").read_text()
    )
    # the student is probed on its model; the makefile says what waits for what
    assert "--features exp/student/model.pt" in (recipe / "exp" / "jobs" / "probe_student.sh").read_text()
    assert "exp/.done.student: | exp/.done.teacher" in (recipe / "exp" / "jobs.mk").read_text()


def test_one_job_at_a_time_on_the_terminal_with_jobs_1(recipe):
    r = _run(recipe, *GRAPH, "--jobs", "1")
    assert r.returncode == 0, r.stderr
    s = _trace(recipe)
    spans = sorted((v["start"], v["end"]) for v in s.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # one after the other
    assert {v["threads"] for v in s.values()} == {"-"}  # every core
    assert r.stdout.count("the stand-in runs") == 5


def test_a_failure_stops_what_needs_it_and_the_rest_finishes(recipe):
    r = _run(recipe, *GRAPH, "--jobs", "2", env={"FAIL": "pretrain"})
    assert r.returncode != 0
    assert "job teacher FAILED" in r.stderr and "the reason it broke" in r.stderr  # the end of its log
    assert (recipe / "exp" / ".failed.teacher").exists() and not (recipe / "exp" / ".done.teacher").exists()
    s = _trace(recipe)
    assert "distill:exp/student" not in s and "probe:exp/probe/student" not in s
    assert "end" in s["probe:exp/probe/fbank"]  # independent of the failure
    # fixed, the next run does what is left
    r = _run(recipe, *GRAPH, "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert not (recipe / "exp" / ".failed.teacher").exists()
    assert "job probe_fbank starts" not in r.stderr and "job student done" in r.stderr


def test_finished_jobs_are_skipped_and_a_removed_stamp_redoes_only_that_job(recipe):
    assert _run(recipe, *GRAPH, "--jobs", "2").returncode == 0
    r = _run(recipe, *GRAPH, "--jobs", "2")
    assert r.returncode == 0 and " starts" not in r.stderr and "already prepared" in r.stderr
    os.remove(recipe / "exp" / ".done.teacher")
    r = _run(recipe, *GRAPH, "--jobs", "2")
    assert r.returncode == 0 and r.stderr.count(" starts") == 1 and "job teacher starts" in r.stderr


def test_a_run_of_one_stage_keeps_the_other_jobs_rules_in_the_makefile(recipe):
    """README's `./run.sh --stage 4 --stop-stage 4` after the whole run: make builds that stage's jobs, and
    exp/jobs.mk still holds every job's rule (it was left with that stage's alone)."""
    assert _run(recipe, *GRAPH, "--jobs", "2").returncode == 0
    os.remove(recipe / "exp" / ".done.student")
    r = _run(recipe, *GRAPH, "--stage", "4", "--stop-stage", "4", "--jobs", "2")
    assert r.returncode == 0 and r.stderr.count(" starts") == 1 and "job student starts" in r.stderr, r.stderr
    makefile = (recipe / "exp" / "jobs.mk").read_text()
    for n in ("targets_km", "teacher", "student", "probe_fbank", "probe_student"):
        assert f"exp/.done.{n}:" in makefile and f"utils/run_job.sh {n}\n" in makefile, n
    assert makefile.count("exp/.done.student:") == 1  # this run's rule replaced the earlier one
    # by hand: make -f exp/jobs.mk redoes a removed stamp of any stage
    os.remove(recipe / "exp" / ".done.probe_fbank")
    env = dict(os.environ, PATH=f"{recipe / 'bin'}:{os.environ['PATH']}", TRACE=str(recipe / "trace"))
    r = subprocess.run(["make", "-f", "exp/jobs.mk", "all"], cwd=recipe, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and (recipe / "exp" / ".done.probe_fbank").exists(), r.stderr


def test_stages_select_jobs_and_missing_inputs_are_refused_before_anything_runs(recipe):
    r = _run(recipe, *GRAPH, "--stage", "4", "--stop-stage", "4")
    assert r.returncode != 0
    assert "job teacher (exp/jobs/teacher.sh) reads exp/targets/km/train.km, which is not there" in r.stderr
    assert not (recipe / "trace").exists()  # nothing ran
    assert _run(recipe, *GRAPH, "--stop-stage", "3").returncode == 0
    assert list(_trace(recipe)) == ["make_targets:exp/targets/km"]
    r = _run(recipe, *GRAPH, "--stage", "4", "--stop-stage", "4")
    assert r.returncode == 0, r.stderr
    assert "probe:exp/probe/fbank" not in _trace(recipe)


def test_bad_template_options_are_refused(recipe):
    r = _run(recipe, "--train", "nothing")
    assert r.returncode != 0 and "--train nothing: no conf/nothing.yaml" in r.stderr
    r = _run(recipe, "--no-such", "1")
    assert r.returncode != 0 and "unknown option --no-such" in r.stderr
    r = _run(recipe, *GRAPH, "--epochs", "3")
    assert r.returncode != 0 and "--epochs needs --effective-batch" in r.stderr


def test_epochs_become_updates_of_the_effective_batch(recipe):
    (recipe / "conf" / "teacher.yaml").write_text(
        "data: {train_labels: exp/targets/km/train.km, batch_size: 2}\ntrainer: {exp_dir: exp/teacher}\n"
    )
    r = _run(
        recipe, "--targets", "km=fbank,10,1", "--train", "teacher", "--epochs", "8 teacher=6", "--effective-batch", "4"
    )
    assert r.returncode == 0, r.stderr
    job = (recipe / "exp" / "jobs" / "teacher.sh").read_text()
    assert "trainer.max_steps=1 trainer.grad_accum=2" in job  # 6 epochs x 1 utterance / 4, 4 / (2 x 1 GPU)
    r = _run(recipe, "--train", "teacher", "--effective-batch", "3", "--stage", "4")
    assert r.returncode != 0 and "not a multiple of data.batch_size (2)" in r.stderr


@pytest.mark.parametrize("kind", ["slurm.pl", "srun"])
def test_cmd_sh_lines_work_as_written(recipe, kind):
    """The two lines cmd.sh suggests, with stand-ins: Kaldi's *.pl take the log file first; srun the command."""
    bin_ = recipe / "bin"
    if kind == "slurm.pl":
        (bin_ / "slurm.pl").write_text(
            '#!/usr/bin/env bash\n[ "$1 $2" = "--gpu 1" ] || exit 9\nlog=$3; shift 3\n'
            'case "$log" in *.log) ;; *) exit 8 ;; esac\necho "slurm.pl ran it" > used\n"$@" > "$log" 2>&1\n'
        )
        line = 'export train_cmd="slurm.pl --gpu 1"'
    else:
        (bin_ / "srun").write_text(
            '#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\necho "srun ran it" > used\nexec "$@"\n'
        )
        line = 'export train_cmd="srun --gres=gpu:1 --cpus-per-task=8"'
    os.chmod(bin_ / kind, 0o755)
    assert line in open(os.path.join(TEMPLATE, "cmd.sh")).read()  # the line as cmd.sh writes it
    env = {"PATH": f"{bin_}:{os.environ['PATH']}", "train_cmd": line.split('"')[1]}
    r = _run(recipe, "--probe", "fbank", "--jobs", "2", env=env)
    assert r.returncode == 0, r.stderr
    assert (recipe / "used").read_text().strip() == f"{kind} ran it"
    assert "the stand-in runs" in (recipe / "exp" / "log" / "probe_fbank.log").read_text()
    assert (recipe / "exp" / ".done.probe_fbank").exists()


def test_a_recipe_log_redirected_to_a_file_keeps_every_line(recipe):
    """`./run.sh > run.log 2>&1`: the jobs' start/done lines once reopened such a log with O_TRUNC."""
    env = dict(os.environ, S3PRL_PLUGINS_PYTHON=str(recipe / "bin" / "python"), TRACE=str(recipe / "trace"))
    with open(recipe / "run.log", "w") as log:
        r = subprocess.run(
            ["./ssl.sh", *GRAPH, "--jobs", "2"], cwd=recipe, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300
        )
    text = (recipe / "run.log").read_text()
    assert r.returncode == 0, text
    lines = ["Stage 1: local/data.sh", "job targets_km starts", "job teacher done", "job probe_student done"]
    assert [text.index(x) for x in lines] == sorted(text.index(x) for x in lines), text


def _started_pids(work):
    return [int(line.split()[4]) for line in (work / "trace").read_text().splitlines() if line.startswith("start")]


def _all_ended(pids, seconds=30):
    """Whether every one of ``pids`` has ended (orphans are reaped by init: allow it a moment)."""
    end = time.time() + seconds
    while time.time() < end:
        alive = []
        for pid in pids:
            try:
                os.kill(pid, 0)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("how,jobs", [("ctrl-c", 2), ("sigterm", 2), ("ctrl-c", 1)])
def test_interrupting_the_recipe_stops_its_jobs(recipe, how, jobs):
    """Ctrl-C (SIGINT to the recipe's process group) or SIGTERM to ssl.sh alone (kill, a scheduler's cancel):
    make and every running job end before ssl.sh ends (by the same signal, as an interrupted program does), no
    stamp is left for them, and a stopped job's last words reach its log (and, with --jobs 1, the terminal)."""
    env = dict(os.environ, S3PRL_PLUGINS_PYTHON=str(recipe / "bin" / "python"), TRACE=str(recipe / "trace"), SLEEP="30")
    p = subprocess.Popen(
        ["./ssl.sh", *GRAPH, "--jobs", str(jobs)],
        cwd=recipe,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # as from a terminal: a process started in the background (nohup, `cmd &` in a script, some CI runners)
        # inherits SIGINT ignored, and bash can then neither trap it nor be stopped by it -- the cause of this
        # test's time-outs in fresh-clone runs, which passed when run from a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for _ in range(600):
        if (recipe / "trace").exists():
            break
        time.sleep(0.1)
    assert (recipe / "trace").exists(), "no job started"
    if how == "ctrl-c":
        os.killpg(p.pid, signal.SIGINT)
    else:
        p.send_signal(signal.SIGTERM)
    try:
        err, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        ps = subprocess.run(["ps", "-eo", "pid,ppid,pgid,stat,etime,args"], capture_output=True, text=True).stdout
        os.killpg(p.pid, signal.SIGKILL)
        err, _ = p.communicate()
        pytest.fail(f"ssl.sh still runs 60 s after the signal; its stderr:\n{err}\nprocesses:\n{ps}")
    assert p.returncode == {"ctrl-c": -signal.SIGINT, "sigterm": -signal.SIGTERM}[how], err
    assert _all_ended(_started_pids(recipe)), "a job outlived the recipe"
    assert not list((recipe / "exp").glob(".done.targets_*")) and not (recipe / "exp" / ".done.teacher").exists()
    assert "stopping the jobs" in err
    logs = "".join(f.read_text() for f in (recipe / "exp" / "log").glob("*.log"))
    assert "the stand-in stops" in logs, logs
    if jobs == 1:
        assert "the stand-in stops" in err, err


def test_an_int8_export_is_probed_after_its_model_is_trained(recipe):
    r = _run(
        recipe,
        "--targets",
        "km=fbank,10,1",
        "--train",
        "teacher student",
        "--deploy",
        "student",
        "--probe",
        "student_int8",
        "--stop-stage",
        "7",
        "--jobs",
        "2",
    )
    assert r.returncode == 0, r.stderr
    s = _trace(recipe)
    student, export = s["distill:exp/student"], s["export:exp/student_int8.onnx"]
    assert student["end"] <= export["start"] and export["end"] <= s["probe:exp/probe/student_int8"]["start"]
    job = (recipe / "exp" / "jobs" / "export_student_int8.sh").read_text()
    assert "s3prl_plugins.bin.export exp/student/model.pt --out exp/student_int8.onnx --int8 auto" in job
    assert "--calibration data/dev" in job  # the CNN's int8 ranges measured on the recipe's own dev audio
    assert "--features exp/student_int8.onnx" in (recipe / "exp" / "jobs" / "probe_student_int8.sh").read_text()
    # the retired name says the new one, before anything runs
    r = _run(recipe, "--int8", "student", "--stop-stage", "7")
    assert r.returncode == 2 and "--int8 / --int8-mode are --deploy NAMES / --deploy-int8 MODE now" in r.stderr


@pytest.mark.parametrize("kind", ["slurm.pl", "srun", ""])
def test_run_cmd_gives_each_cluster_tool_its_syntax(tmp_path, kind):
    """utils/log.sh's run_cmd (the ESPnet recipes' one heavy command): *.pl get the log file first."""
    (tmp_path / "slurm.pl").write_text(
        '#!/usr/bin/env bash\n[ "$1" = --gpu ] || exit 9\nlog=$3; shift 3\n"$@" > "$log"\n'
    )
    (tmp_path / "srun").write_text('#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    for f in ("slurm.pl", "srun"):
        os.chmod(tmp_path / f, 0o755)
    cmd = {"slurm.pl": "slurm.pl --gpu 1", "srun": "srun --gres=gpu:1", "": ""}[kind]
    script = f'. {TEMPLATE}/utils/log.sh; run_cmd exp/log/x.log echo "ran it"'
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", train_cmd=cmd)
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    log = tmp_path / "exp" / "log" / "x.log"
    assert (log.read_text() if kind == "slurm.pl" else r.stdout).strip() == "ran it"
    assert log.exists() == (kind == "slurm.pl")


def test_setup_sh_scaffolds_a_recipe_that_passes_options_to_the_template(tmp_path):
    """egs/TEMPLATE/setup.sh NEW_DIR: the links every recipe has, a run.sh whose --help shows its options with
    their comments and which hands any other option to ./ssl.sh; an existing folder is refused untouched."""
    setup = os.path.join(REPO, "egs", "TEMPLATE", "setup.sh")
    new = tmp_path / "corpus" / "method"
    r = subprocess.run(["bash", setup, str(new)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    template = os.path.join(REPO, "egs", "TEMPLATE")
    for link, target in (("cmd.sh", "cmd.sh"), ("path.sh", "path.sh"), ("ssl.sh", "ssl1/ssl.sh"), ("utils", "utils")):
        assert (new / link).is_symlink() and not os.path.isabs(os.readlink(new / link)), link
        assert os.path.samefile(new / link, os.path.join(template, target)), link
    assert (new / "conf").is_dir() and (new / "local").is_dir()
    env = dict(os.environ, S3PRL_PLUGINS_PYTHON=sys.executable)
    r = subprocess.run(["./run.sh", "--help"], cwd=new, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--stage 1   # first stage to run" in r.stderr, r.stderr
    assert "any other --option VALUE: passed on to ./ssl.sh" in r.stderr
    r = subprocess.run(["./run.sh", "--bogus", "1"], cwd=new, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "./ssl.sh: unknown option --bogus" in r.stderr, r.stderr
    (new / "run.sh").write_text("mine\n")
    r = subprocess.run(["bash", setup, str(new)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "exists" in r.stderr and (new / "run.sh").read_text() == "mine\n"
