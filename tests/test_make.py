"""The Makefile and tools/setup_env.sh: a target whose set-up fails, fails with the set-up's own error; pytest
collecting no test fails `make test` (and so CI); two set-ups at once share one environment (the second waits
and reuses), and a build that was interrupted never looks complete. The environment's build runs on a
stand-in ``python3`` (it creates a fake venv in a second), so that these run in seconds."""

import os
import shutil
import signal
import subprocess
import time

import pytest
from paths import REPO

TARGETS = ["test", "test-slow", "test-all", "test-gpu", "demo", "lint", "format", "profile", "bench", "bench-gpu"]


@pytest.mark.parametrize("target", TARGETS + ["python"])
def test_a_target_whose_set_up_fails_fails_with_its_error(target):
    env = dict(os.environ, S3PRL_PLUGINS_VENV_ROOT="/proc/nope")
    r = subprocess.run(["make", "-s", target], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "cannot create /proc/nope" in r.stderr and "S3PRL_PLUGINS_VENV_ROOT" in r.stderr, r.stderr
    assert "(ignored)" not in r.stderr


def test_make_test_fails_when_pytest_collects_no_test(tmp_path):
    """A clone whose tests/ holds no test: `make test` (CI's command) exits non-zero (pytest's 5)."""
    clone = tmp_path / "clone"
    (clone / "tools").mkdir(parents=True)
    (clone / "tests").mkdir()
    for f in ("Makefile", "requirements.txt", "s3prl_plugins-autoload.pth", "tools/setup_env.sh"):
        shutil.copy(os.path.join(REPO, f), clone / f)
    (clone / "tests" / "test_nothing.py").write_text('"""No test here."""\n')
    r = subprocess.run(["make", "test"], cwd=clone, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "no tests ran" in r.stdout + r.stderr


STAND_IN = r"""#!/usr/bin/env bash
# a stand-in python3: --version, and -m venv DIR (a fake venv whose python installs slowly)
if [ "$1" = --version ]; then echo "Python 3.11.7"; exit 0; fi
[ "$1 $2" = "-m venv" ] || exit 9
mkdir -p "$3/bin" "$3/site"
echo "venv $$" >> "$LOG"
cat > "$3/bin/python" <<EOF
#!/usr/bin/env bash
case "\$1 \$2 \$3" in
  "-m pip install") echo "install \$\$" >> "$LOG"; sleep "${INSTALL_SECONDS:-0.3}" ;;
  "-m pip check") ;;
  "-c import sysconfig;"*) echo "$3/site" ;;
  *) exit 9 ;;
esac
EOF
chmod +x "$3/bin/python"
"""


@pytest.fixture
def fake_python(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").write_text(STAND_IN)
    os.chmod(bindir / "python3", 0o755)
    env = dict(
        os.environ,
        PATH=f"{bindir}:{os.environ['PATH']}",
        S3PRL_PLUGINS_VENV_ROOT=str(tmp_path / "root"),
        LOG=str(tmp_path / "log"),
    )
    return env, tmp_path / "log"


def _setup(env, **kw):
    return subprocess.Popen(
        ["bash", os.path.join(REPO, "tools", "setup_env.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kw,
    )


def test_two_set_ups_at_once_share_one_environment(fake_python):
    env, log = fake_python
    first, second = _setup(env), _setup(env)
    out = [p.communicate(timeout=120) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, out
    assert out[0][0] == out[1][0] and out[0][0].strip().endswith("/bin/python")
    assert [line.split()[0] for line in log.read_text().splitlines()].count("venv") == 1  # built once
    assert any("waiting for another set-up" in err for _, err in out), out
    venv = os.path.dirname(os.path.dirname(out[0][0].strip()))
    assert os.path.isfile(os.path.join(venv, ".complete"))
    assert os.path.isfile(os.path.join(venv, "site", "s3prl_plugins-autoload.pth"))


def test_an_interrupted_set_up_never_looks_complete(fake_python):
    env, log = fake_python
    p = _setup(dict(env, INSTALL_SECONDS="30"))
    for _ in range(300):
        if log.exists() and "install" in log.read_text():
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # killed in the middle of its pip installs
    p.communicate(timeout=60)
    r = _setup(env)
    stdout, stderr = r.communicate(timeout=120)
    assert r.returncode == 0, stderr
    assert [line.split()[0] for line in log.read_text().splitlines()].count("venv") == 2  # built again
    assert "creating" in stderr
