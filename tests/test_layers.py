"""The house's import rules (ARCHITECTURE.md), read from the code: arrows point down, no circles -- whatever form
an import takes (absolute, relative, ``importlib``, inside a function), between rooms and between eval's rooms."""

import ast
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "s3prl_plugins")

# Each room, and the rooms it may import from (its own always allowed). Top-level modules: "config". eval/ holds
# rooms of its own: its base (eval/plots.py), superb/ and probe/ above it, report/ above those.
EVAL_BELOW = {"nn", "losses", "models", "data", "tasks", "train", "upstream", "deploy", "segment", "config"}
ALLOWED = {
    "nn": set(),
    "config": set(),
    "losses": {"nn"},
    "models": {"nn", "config"},
    "data": {"config", "models"},
    "tasks": {"nn", "losses", "models", "config"},
    "deploy": {"nn", "models", "config"},
    "upstream": {"nn", "models", "deploy", "config"},
    "segment": {"nn", "models", "data"},
    "train": {"nn", "losses", "models", "data", "tasks", "config", "segment"},
    "compress": {"nn", "losses", "models", "data", "tasks", "train", "config"},
    "eval": EVAL_BELOW,
    "eval.superb": EVAL_BELOW | {"eval"},
    "eval.probe": EVAL_BELOW | {"eval"},
    "eval.report": EVAL_BELOW | {"eval", "eval.superb", "eval.probe"},
}
ABOVE = {None, "bin", "_autoload"}  # the package root, the CLIs, the hub's start-up hook: above every room


def _module(path, root=ROOT):
    rel = os.path.relpath(path, root)[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _room(module):
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "eval":
        return f"eval.{parts[2]}" if len(parts) > 3 else "eval"
    return parts[1] if len(parts) > 1 else None


def _resolve(node, module, is_package):
    """The absolute module of ``from X import ...`` (a relative one resolved from ``module``)."""
    if not node.level:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _dynamic(node):
    """``importlib.import_module("s3prl_plugins...")`` or ``__import__("s3prl_plugins...")``: its target."""
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
        return None
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name in ("import_module", "__import__") and str(node.args[0].value).startswith("s3prl_plugins"):
        return node.args[0].value
    return None


def graph(sources, packages=()):
    """module -> the s3prl_plugins modules it imports, from ``{module: source}`` (``packages``: the modules that
    are a package's ``__init__``). At any depth of a file: a function's import is an arrow too."""
    edges = {m: set() for m in sources}
    for m, source in sources.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(node, m, m in packages)
                if not target or not target.startswith("s3prl_plugins"):
                    continue
                targets = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("s3prl_plugins")]
            elif _dynamic(node):
                targets = [_dynamic(node)]
            else:
                continue
            edges[m].update(t for t in targets if t in sources and t != m)
    return edges


def violations(sources, packages=()):
    """Every arrow that runs up or sideways, and every room that the rules do not list."""
    wrong = []
    for m, targets in graph(sources, packages).items():
        room = _room(m)
        if room in ABOVE:
            continue
        if room not in ALLOWED:
            wrong.append(f"{m}: room {room!r} is not in ALLOWED (place it in the house: which rooms may it import?)")
            continue
        for t in targets:
            other = _room(t)
            if other != room and other not in ALLOWED[room]:
                wrong.append(f"{m} -> {t}")
    return wrong


def _package():
    paths = glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True)
    sources = {_module(p): open(p).read() for p in paths}
    packages = {_module(p) for p in paths if p.endswith("__init__.py")}
    return sources, packages


def test_arrows_point_down():
    sources, packages = _package()
    assert sum(len(t) for t in graph(sources, packages).values()) > 200  # the imports were read
    assert not violations(sources, packages)


@pytest.mark.parametrize(
    "sources, wrong",
    [
        ({"s3prl_plugins.nn.a": "from ..train import trainer", "s3prl_plugins.train.trainer": ""}, "nn.a -> "),
        (
            {
                "s3prl_plugins.models.a": "import importlib\nm = importlib.import_module('s3prl_plugins.train.b')",
                "s3prl_plugins.train.b": "",
            },
            "models.a -> s3prl_plugins.train.b",
        ),
        (
            {
                "s3prl_plugins.eval.probe.a": "from s3prl_plugins.eval.report.b import c",
                "s3prl_plugins.eval.report.b": "",
            },
            "eval.probe.a -> s3prl_plugins.eval.report.b",
        ),
        (
            {"s3prl_plugins.eval.superb.a": "from s3prl_plugins.eval.probe import b", "s3prl_plugins.eval.probe.b": ""},
            "eval.superb.a -> s3prl_plugins.eval.probe.b",
        ),
        ({"s3prl_plugins.newroom.a": "import os"}, "room 'newroom' is not in ALLOWED"),
        (
            {
                "s3prl_plugins.eval.report.a": "from s3prl_plugins.eval.probe.b import c",
                "s3prl_plugins.eval.probe.b": "",
            },
            None,
        ),
    ],
    ids=["relative", "importlib", "eval_probe_up", "eval_sideways", "unlisted_room", "eval_down"],
)
def test_the_rules_catch_every_form_of_an_upward_import(sources, wrong):
    found = violations(sources)
    if wrong is None:
        assert not found
    else:
        assert any(wrong in f for f in found), found


def test_ruff_refuses_relative_imports(tmp_path):
    """TID252 (pyproject.toml): an import says where it comes from, in full."""
    path = tmp_path / "mod.py"
    path.write_text("from .sibling import x\n\nprint(x)\n")
    config = os.path.join(ROOT, "pyproject.toml")
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--config", config, "--no-cache", str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "TID252" in out.stdout, out.stdout + out.stderr


def test_no_import_circles():
    sources, packages = _package()
    edges = graph(sources, packages)
    # a package's __init__ importing its own modules is how packages are made: not a circle
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in edges.items()}
    seen, stack, circles = {}, [], []

    def visit(m):
        seen[m] = "open"
        stack.append(m)
        for t in sorted(edges[m]):
            if seen.get(t) == "open":
                circles.append(stack[stack.index(t) :] + [t])
            elif t not in seen:
                visit(t)
        stack.pop()
        seen[m] = "done"

    for m in sorted(edges):
        if m not in seen:
            visit(m)
    assert not circles, circles
