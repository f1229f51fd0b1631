"""The layering contract: commands -> eval -> methods -> adapters -> core, checked on every import in
the package (module level and inside functions), the way import-linter's layers contract would."""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "vlinterp")
METHODS = {"saliency", "tracing", "sae", "pruning", "prototypes", "steering", "detect"}
# package -> the vlinterp packages it may import ("*": anything but the CLI)
ALLOWED = {
    "core": {"core"},
    "adapters": {"core", "adapters"},
    "metrics": {"core", "metrics"},
    "data": {"core", "data", "metrics"},  # the shapes world scores its own answers with metrics
    "viz": {"core", "adapters", "metrics", "viz"} | METHODS,  # pictures of what methods return
    **{m: {"core", "adapters", "metrics"} | METHODS for m in METHODS},
}
CLI_ONLY = {"commands", "cli"}
DATA_USERS = {"eval", "zoo", "audit", "commands", "serve", "data"}  # serve is a command (the explorer)


def _imports():
    """``(importing package, imported package, file, line)`` for every import of a vlinterp module."""
    out = []
    for d, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(d, f)
            rel = os.path.relpath(path, ROOT)
            parts = rel[:-3].split(os.sep)
            module = ["vlinterp"] + (parts[:-1] if parts[-1] == "__init__" else parts)
            pkg = parts[0][:-3] if len(parts) == 1 and parts[0].endswith(".py") else parts[0]
            pkg = "cli" if rel in ("cli.py", "__main__.py") else ("top" if len(parts) == 1 else pkg)
            tree = ast.parse(open(path).read(), path)
            for node in ast.walk(tree):
                targets = []
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names if a.name.startswith("vlinterp")]
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = module if parts[-1] == "__init__" else module[:-1]
                        base = base[: len(base) - (node.level - 1)]
                        mod = ".".join(base + ([node.module] if node.module else []))
                    else:
                        mod = node.module or ""
                    if not mod.startswith("vlinterp"):
                        continue
                    targets = [mod + "." + a.name for a in node.names] if mod == "vlinterp" or not node.module else [mod]
                for t in targets:
                    bits = t.split(".")
                    tp = bits[1] if len(bits) > 1 else "top"
                    if not os.path.exists(os.path.join(ROOT, tp)) and not os.path.exists(os.path.join(ROOT, tp + ".py")):
                        tp = "top"  # `from vlinterp import load` and friends
                    out.append((pkg, tp, rel, node.lineno))
    return out


IMPORTS = _imports()


def test_nothing_imports_the_cli_layer():
    bad = [f"{f}:{ln} imports vlinterp.{t}" for p, t, f, ln in IMPORTS if t in CLI_ONLY and p not in CLI_ONLY]
    assert not bad, "\n".join(bad)


def test_data_only_in_eval_zoo_audit_commands():
    bad = [f"{f}:{ln} imports vlinterp.data" for p, t, f, ln in IMPORTS if t == "data" and p not in DATA_USERS]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_layer_imports_only_below(pkg):
    bad = [f"{f}:{ln} imports vlinterp.{t}" for p, t, f, ln in IMPORTS if p == pkg and t != pkg and t not in ALLOWED[pkg]]
    assert not bad, f"{pkg} may import only {sorted(ALLOWED[pkg])}:\n" + "\n".join(bad)


@pytest.mark.parametrize("pkg", sorted(METHODS))
def test_method_hooks_go_through_the_adapter(pkg):
    """No raw ``register_*hook`` calls and no ``adapter._session`` in method code: hooks go through
    ``adapter.run/edits/capture/raw_hooks`` so they never leak."""
    d = os.path.join(ROOT, pkg)
    if not os.path.isdir(d):
        pytest.skip(f"vlinterp.{pkg} is not in this install")
    bad = []
    for dirpath, _, files in os.walk(d):
        for f in files:
            if f.endswith(".py"):
                src = open(os.path.join(dirpath, f)).read()
                bad += [f"{pkg}/{f}: {w}" for w in ("register_forward_hook", "register_forward_pre_hook",
                                                    "register_full_backward_hook", "._session") if w in src]
    assert not bad, bad


def test_the_check_sees_imports():
    """The scan itself works: it finds known edges (commands -> core, eval -> data)."""
    pairs = {(p, t) for p, t, _, _ in IMPORTS}
    assert ("commands", "core") in pairs and ("eval", "data") in pairs and ("saliency", "core") in pairs
