"""The house's import rules (ARCHITECTURE.md), read from the code: arrows point down, no circles."""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "s3prl_plugins")

# Each room, and the rooms it may import from (its own always allowed). Top-level modules: "config".
ALLOWED = {
    "nn": set(),
    "config": set(),
    "losses": {"nn"},
    "models": {"nn", "config"},
    "data": {"config", "models"},
    "tasks": {"nn", "losses", "models"},
    "deploy": {"nn", "models", "config"},
    "upstream": {"nn", "models", "deploy", "config"},
    "segment": {"nn", "models", "data"},
    "train": {"nn", "losses", "models", "data", "tasks", "config", "segment"},
    "compress": {"nn", "losses", "models", "data", "tasks", "train", "config"},
    "eval": {"nn", "losses", "models", "data", "tasks", "train", "upstream", "deploy", "segment", "config"},
}


def _module(path):
    rel = os.path.relpath(path, ROOT)[: -len(".py")].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _room(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _graph():
    """module -> the s3prl_plugins modules it imports (at any depth of the file: a function's import is an arrow
    too)."""
    files = {_module(p): p for p in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True)}
    edges = {m: set() for m in files}
    for m, path in files.items():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("s3prl_plugins"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("s3prl_plugins")]
            else:
                continue
            for t in targets:
                if t in files and t != m:
                    edges[m].add(t)
    return edges


def test_arrows_point_down():
    graph = _graph()
    assert sum(len(t) for t in graph.values()) > 200  # the imports were read
    wrong = []
    for m, targets in graph.items():
        room = _room(m)
        if room not in ALLOWED:  # bin/, the package root, _autoload: above every room
            continue
        for t in targets:
            other = _room(t)
            if other != room and other not in ALLOWED[room]:
                wrong.append(f"{m} -> {t}")
    assert not wrong, wrong


def test_no_import_circles():
    edges = _graph()
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
