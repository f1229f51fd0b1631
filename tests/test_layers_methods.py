"""The method packages this test covers (sae, prototypes, tracing, pruning) import only core,
adapters, metrics and other method packages: never data, zoo, viz, scale, commands, eval or audit,
nor ``vlinterp.load``; hooks go through the adapter (no raw ``register_*hook`` calls, no
``adapter._session``)."""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "vlinterp")
PACKAGES = ("sae", "prototypes", "tracing", "pruning")
ALLOWED = {"core", "adapters", "metrics", "saliency", "tracing", "sae", "pruning", "prototypes", "steering", "detect"}


def _files(pkg):
    d = os.path.join(ROOT, pkg)
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".py"))


def _vlinterp_imports(path, pkg):
    """``(line, module under vlinterp or '' for vlinterp itself, imported names)`` of every import."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:  # relative: level 1 = this package, 2 = vlinterp
                mod = (node.module or "") if node.level == 2 else f"{pkg}.{node.module or ''}"
                if node.level > 2:
                    mod = "?"
                yield node.lineno, mod, names
            elif node.module and (node.module == "vlinterp" or node.module.startswith("vlinterp.")):
                yield node.lineno, node.module[len("vlinterp."):] if node.module != "vlinterp" else "", names
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "vlinterp" or a.name.startswith("vlinterp."):
                    yield node.lineno, a.name[len("vlinterp."):] if a.name != "vlinterp" else "", [a.asname or a.name]


@pytest.mark.parametrize("pkg", PACKAGES)
def test_methods_import_only_lower_layers(pkg):
    bad = []
    for path in _files(pkg):
        for line, mod, names in _vlinterp_imports(path, pkg):
            top = mod.split(".")[0]
            if top == "":  # from vlinterp / from .. import X: only lower-layer subpackages
                bad += [f"{os.path.basename(path)}:{line} imports vlinterp.{n}" for n in names if n not in ALLOWED]
            elif top not in ALLOWED:
                bad.append(f"{os.path.basename(path)}:{line} imports vlinterp.{mod}")
    assert not bad, bad


@pytest.mark.parametrize("pkg", PACKAGES)
def test_hooks_go_through_the_adapter(pkg):
    bad = []
    for path in _files(pkg):
        src = open(path).read()
        for word in ("register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook", "._session"):
            if word in src:
                bad.append(f"{os.path.basename(path)}: {word}")
    assert not bad, bad


def test_the_check_sees_a_violation(tmp_path):
    """The scanner itself: a data import and a `from .. import load` are caught."""
    p = tmp_path / "x.py"
    p.write_text("from ..data.shapes import PAIRS\nfrom .. import load\nfrom ..core.io import write_json\n")
    got = list(_vlinterp_imports(str(p), "sae"))
    assert [(m, n) for _, m, n in got] == [("data.shapes", ["PAIRS"]), ("", ["load"]), ("core.io", ["write_json"])]
