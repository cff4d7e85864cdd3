"""egs/mini/utils/jobs.sh: the recipe's independent stages side by side (--nj), each after its dependencies;
a failure stops what depends on it, names its log, and leaves no done-marker behind."""

import os
import subprocess

import pytest
from paths import REPO

UTILS = os.path.join(REPO, "egs", "mini", "utils")


def _script(tmp_path, nj, body):
    script = f"""set -euo pipefail
nj={nj}
. {UTILS}/log.sh
. {UTILS}/jobs.sh
{body}
"""
    return subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_two_jobs_run_side_by_side_and_dependencies_wait(tmp_path):
    # a and b can only both finish if they run at the same time (each waits for the other's file)
    body = """
meet() { touch "here_$1"; for i in $(seq 100); do [ -f "here_$2" ] && return 0; sleep 0.1; done; return 1; }
after() { [ -f exp/.done.a ] && [ -f exp/.done.b ] && echo "$OMP_NUM_THREADS" > c_threads; }
job a "" meet a b
job b "" meet b a
job c "a b" after
job_wait
"""
    r = _script(tmp_path, 2, body)
    assert r.returncode == 0, r.stderr
    assert all((tmp_path / "exp" / f".done.{n}").exists() for n in "abc")
    assert (tmp_path / "c_threads").read_text().strip() == str(max(1, os.cpu_count() // 2))
    assert "job c queued (runs after: a b" in r.stderr and (tmp_path / "exp" / "log" / "c.log").is_file()
    # the terminal hears of each job as it starts and ends, not only at the end of the recipe
    assert r.stderr.index("job a starts") < r.stderr.index("job c starts") < r.stderr.index("job c done (0 min")
    assert not list((tmp_path / "exp" / ".slots").iterdir())  # every slot given back


def test_one_job_at_a_time_with_nj_1(tmp_path):
    body = """
meet() { touch "here_$1"; for i in $(seq 10); do [ -f "here_$2" ] && return 0; sleep 0.1; done; return 1; }
job a "" meet a b
"""
    r = _script(tmp_path, 1, body)
    assert r.returncode == 1 and "job a failed" in r.stderr
    assert (tmp_path / "exp" / ".failed.a").exists() and not (tmp_path / "exp" / ".done.a").exists()


def test_a_failure_fails_its_dependents_and_the_recipe_after_the_others_finish(tmp_path):
    body = """
broken() { echo "the reason it broke" >&2; false; echo "not reached"; }
slow() { sleep 1; touch slow_finished; }
job bad "" broken
job other "" slow
job child "bad" echo never
job_wait
"""
    r = _script(tmp_path, 2, body)
    assert r.returncode == 1
    assert "job bad failed" in r.stderr and "the reason it broke" in r.stderr  # the log's tail
    assert "job bad FAILED (exp/log/bad.log)" in r.stderr  # said when it happened
    assert "not reached" not in (tmp_path / "exp" / "log" / "bad.log").read_text()  # set -e inside the job
    assert (tmp_path / "slow_finished").exists() and (tmp_path / "exp" / ".done.other").exists()  # not killed half-way
    assert "its dependency bad failed" in (tmp_path / "exp" / "log" / "child.log").read_text()
    assert not (tmp_path / "exp" / ".done.bad").exists() and not (tmp_path / "exp" / ".done.child").exists()


@pytest.mark.parametrize("nj", [1, 2])
def test_a_dependency_that_never_ran_is_named(tmp_path, nj):
    r = _script(tmp_path, nj, 'job probe "star" echo hi\njob_wait')
    assert r.returncode == 1
    log = r.stderr + ((tmp_path / "exp" / "log" / "probe.log").read_text() if nj > 1 else "")
    assert "needs star (exp/.done.star), which is neither done nor running: run its stage first" in log


def test_finished_jobs_are_skipped(tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / ".done.a").touch()
    r = _script(tmp_path, 2, 'job a "" touch ran\njob b "a" touch b_ran\njob_wait')
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "ran").exists() and (tmp_path / "b_ran").exists()


def test_ready_jobs_take_the_slots_in_the_order_they_were_queued(tmp_path):
    # two slots, four jobs ready at once: a and b (queued first) run first, c and d after them
    body = """
stamp() { echo "$1" >> order; sleep 1; }
job a "" stamp a
job b "" stamp b
job c "" stamp c
job d "" stamp d
job_wait
"""
    r = _script(tmp_path, 2, body)
    assert r.returncode == 0, r.stderr
    order = (tmp_path / "order").read_text().split()
    assert sorted(order[:2]) == ["a", "b"] and sorted(order[2:]) == ["c", "d"], order
    assert not list((tmp_path / "exp" / ".slots").iterdir())


def test_a_slot_given_back_goes_to_the_job_queued_first_that_it_made_ready(tmp_path):
    """A job's dependency gives back its slot as it finishes: the slot goes to that job (queued first), not
    to one queued later that was already waiting at the slots -- the recipe's long students must not
    wait behind a row of short probes."""
    body = """
stamp() { echo "$1" >> order; sleep "$2"; }
job long "" stamp long 5
job a "" stamp a 1
job b "a" stamp b 0
job c "" stamp c 0
job_wait
"""
    r = _script(tmp_path, 2, body)
    assert r.returncode == 0, r.stderr
    order = (tmp_path / "order").read_text().split()
    assert sorted(order[:2]) == ["a", "long"] and order[2:] == ["b", "c"], order
    assert not list((tmp_path / "exp" / ".slots").iterdir())


def test_first_jobs_take_a_slot_before_those_queued_earlier(tmp_path):
    """--first (the recipe's long trainings) goes ahead of every job queued without it."""
    body = """
stamp() { echo "$1" >> order; sleep 1; }
job gate "" sleep 1
job a "gate" stamp a
job b "gate" stamp b
job c "gate" stamp c
job --first d "gate" stamp d
job_wait
"""
    r = _script(tmp_path, 2, body)
    assert r.returncode == 0, r.stderr
    order = (tmp_path / "order").read_text().split()
    assert sorted(order[:2]) == ["a", "d"] and sorted(order[2:]) == ["b", "c"], order


def test_jobs_queued_by_a_stopped_recipe_do_not_start(tmp_path):
    """kill <recipe pid> (a scheduler's SIGTERM, not Ctrl-C, which stops the whole process group): the job
    running finishes, nothing queued after it starts."""
    script = f"""set -euo pipefail
nj=2
. {UTILS}/log.sh
. {UTILS}/jobs.sh
job a "" sleep 3
job b "a" touch b_ran
job_wait
"""
    p = subprocess.Popen(
        ["bash", "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    import time

    for _ in range(100):  # until both are queued
        if (tmp_path / "exp" / "log" / "b.log").exists():
            break
        time.sleep(0.05)
    p.terminate()
    p.wait(timeout=30)
    for _ in range(150):
        if (tmp_path / "exp" / ".failed.b").exists() or (tmp_path / "b_ran").exists():
            break
        time.sleep(0.1)
    assert not (tmp_path / "b_ran").exists()
    assert "has stopped: b not started" in (tmp_path / "exp" / "log" / "b.log").read_text()


def test_a_recipe_log_redirected_to_a_file_keeps_every_line(tmp_path):
    """`./run.sh > run.log 2>&1`: the jobs' start/done lines once reopened the log with O_TRUNC
    (`tee /dev/fd/3`), leaving only the last line."""
    script = f"""set -euo pipefail
nj=2
. {UTILS}/log.sh
. {UTILS}/jobs.sh
echo "the recipe starts" >&2
job a "" true
job b "a" true
job_wait
echo "the recipe ends" >&2
"""
    with open(tmp_path / "run.log", "w") as log:
        r = subprocess.run(["bash", "-c", script], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, timeout=120)
    text = (tmp_path / "run.log").read_text()
    assert r.returncode == 0, text
    for line in ("the recipe starts", "job a starts", "job a done", "job b starts", "job b done", "the recipe ends"):
        assert line in text, (line, text)
    assert (
        text.index("the recipe starts")
        < text.index("job a starts")
        < text.index("job b done")
        < text.index("the recipe ends")
    )
    assert "job a starts" in (tmp_path / "exp" / "log" / "a.log").read_text()
