"""vlinterp: look inside vision-language models.

>>> import vlinterp as vi
>>> m = vi.load("tiny:llava")
>>> b = m.prepare(images=[img], text=["is there a red circle?"])
>>> out = m.run(b, capture=["blocks.*.resid"])
"""
from __future__ import annotations

__version__ = "0.1.0"

from .core.errors import VlinterpError  # noqa: F401  (light: no heavy imports)


def load(name_or_path, **kw):
    """Load a model behind its adapter: a model-zoo organism name (``shapes-llava``...) through
    :func:`vlinterp.zoo.load_organism`, anything else (``tiny:<variant>``, a local directory or
    checkpoint) through :func:`vlinterp.adapters.registry.load`."""
    import os

    from .adapters.registry import load as _load

    name = os.fspath(name_or_path)
    if not name.startswith("tiny:") and not os.path.exists(name):
        from . import zoo

        if zoo.is_organism(name):
            return zoo.load_organism(name, **kw)
        from .core.errors import LoadError

        raise LoadError(f"{name!r} is neither a local path nor a known name (tiny:<family>, or a zoo organism: "
                        f"{', '.join(zoo.names())}); vlinterp never downloads: pass a local directory or checkpoint")
    return _load(name, **kw)


def explain(model, image=None, prompt=None, method=None, layers=None, **options):
    """Answer and explain in one call; returns an Explanation (see :func:`vlinterp.saliency.explanation.explain`).

    >>> ex = vi.explain("shapes-llava", "scene.png", "what color is the circle?", method="relevancy")
    >>> ex.answer, ex.tokens, ex.probs, ex.answer_map.shape; vi.viz.write_explanation(ex, "out/")
    """
    from .saliency.explanation import explain as _explain

    return _explain(model, image, prompt, method, layers, loader=load, **options)


def __getattr__(name):  # lazy submodules: vi.metrics, vi.data, vi.zoo ...
    import importlib

    if name in {"adapters", "core", "data", "zoo", "metrics", "viz", "saliency", "tracing", "sae", "pruning", "prototypes", "steering", "audit"}:
        return importlib.import_module(f".{name}", __name__)
    if name == "errors":
        return importlib.import_module(".core.errors", __name__)
    raise AttributeError(name)
