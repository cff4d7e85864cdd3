"""README's fenced shell commands, checked as a new user copies them from the repository root: every
`python -m s3prl_plugins.bin.X` module exists and takes each option written; every `./run.sh` (in the folder
its `cd` names) lists each option written in its `--help` (which installs nothing); every config or script a
command names exists; every `make` target exists. A README change that breaks a command fails here."""

import contextlib
import functools
import importlib
import io
import os
import re
import shlex
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# run_downstream passes everything but --s3prl-root through to s3prl's own parser (its options: s3prl's)
PASS_THROUGH = {"run_downstream": {"--s3prl-root"}}


def readme_commands():
    """Each command line of README's ```bash blocks, continuation lines joined, comments dropped."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                lines.append(line)
    return lines


def _segments(line):
    """``[(cwd relative to the root, argv), ...]`` of one line: ``(cd D && A)`` and ``cd D && A`` run A in D."""
    line = line.strip()
    if line.startswith("(") and line.endswith(")"):
        line = line[1:-1]
    cwd, out = ".", []
    for part in re.split(r"\s*(?:&&|;)\s*", line):
        argv = shlex.split(part)
        if not argv:
            continue
        if argv[0] == "cd":
            cwd = os.path.normpath(os.path.join(cwd, argv[1]))
            continue
        out.append((cwd, argv))
    return out


@functools.lru_cache(maxsize=None)
def _module_options(name):
    """The options ``python -m s3prl_plugins.bin.<name> --help`` lists (its main() run in this process)."""
    module = importlib.import_module(f"s3prl_plugins.bin.{name}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = module.main(["--help"])
        except SystemExit as e:
            code = e.code
    assert code in (0, None), f"python -m s3prl_plugins.bin.{name} --help exits {code}"
    return set(re.findall(r"(--[a-z][a-z0-9_-]*)", out.getvalue()))


@functools.lru_cache(maxsize=None)
def _recipe_options(folder):
    env = {k: v for k, v in os.environ.items() if k != "train_cmd"}
    r = subprocess.run(
        ["bash", "run.sh", "--help"],
        capture_output=True,
        text=True,
        cwd=os.path.join(ROOT, folder),
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, f"{folder}/run.sh --help: {r.stderr[-1000:]}"
    return set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", r.stderr, re.M)) | {"--help"}


def _flags(argv):
    """The long options a command gives (``--x=1`` counts as ``--x``; values that are quoted options, e.g.
    ``--train-args "--num_workers 0"``, are values, not options)."""
    flags, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a.startswith("--"):
            flags.append(a.split("=", 1)[0])
            if a in ("--train-args", "--set") and i + 1 < len(argv):
                skip = a == "--train-args"
    return flags


COMMANDS = readme_commands()


def test_readme_has_the_commands_a_new_user_needs():
    joined = "\n".join(COMMANDS)
    for needed in ("make demo", "run_downstream -m evaluate", "superb_score", "superb_submission", "superb_prepare pr"):
        assert needed in joined, needed


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command(line):
    if "..." in line:  # an elided argument list ("--config ...", "-d ..."): nothing to check but the module
        for _, argv in _segments(line):
            if "-m" in argv and argv[argv.index("-m") + 1].startswith("s3prl_plugins.bin."):
                _module_options(argv[argv.index("-m") + 1].rsplit(".", 1)[1])
        return
    for cwd, argv in _segments(line):
        where = os.path.join(ROOT, cwd)
        assert os.path.isdir(where), f"{line}: no folder {cwd}"
        if argv[0] == "make":
            makefile = open(os.path.join(ROOT, "Makefile")).read()
            assert re.search(rf"^{re.escape(argv[1])}:", makefile, re.M), f"{line}: no make target {argv[1]}"
            continue
        if argv[0] == ".":  # sourcing a recipe's path.sh
            assert os.path.isfile(os.path.join(where, argv[1])), line
            continue
        if argv[0] == "./run.sh" or argv[0].endswith("/run.sh"):
            folder = os.path.normpath(os.path.join(cwd, os.path.dirname(argv[0])))
            known = _recipe_options(folder)
            for f in _flags(argv[1:]):
                assert f in known, f"{line}: {folder}/run.sh has no option {f} (--help lists {sorted(known)})"
            continue
        if argv[0] in ("python", "torchrun") and "-m" in argv:
            module = argv[argv.index("-m") + 1]
            if not module.startswith("s3prl_plugins.bin."):
                continue
            name = module.rsplit(".", 1)[1]
            known = PASS_THROUGH.get(name) or _module_options(name)
            for f in _flags(argv[argv.index("-m") + 2 :]):
                if name in PASS_THROUGH and f not in known:
                    continue
                assert f in known, f"{line}: {module} has no option {f}"
            for a in argv:  # the configs a command reads (not user files without a folder, not outputs)
                if (
                    a.endswith((".yaml", ".yml"))
                    and "/" in a
                    and not a.startswith(("exp/", "superb/", "egs/mini/superb/", "$"))
                ):
                    if "--config" in argv or "--train-config" in argv or "--distill-config" in argv:
                        assert os.path.isfile(os.path.join(where, a)), f"{line}: no {a} under {cwd}"
            continue
        if argv[0] == "python" and argv[1].endswith(".py") and "/" in argv[1]:
            assert os.path.isfile(os.path.join(where, argv[1])), line
