"""One shape for every steering method, and the registry that names them.

A method is a class with a nested ``@dataclass Config`` (its options and strengths) and fitted state
(tensors, lists). Every method is used the same way::

    S = STEERING.get("ground").fit(adapter, items, config, calib=calib_items, progress=True)
    with S.applied(adapter):                 # every run / generate inside is steered
        adapter.generate(batch)
    S.generate(adapter, batch, max_new_tokens=16)   # the same, one call -> Generation
    S.edits(adapter)                         # {site: fn(tensor, layout) -> tensor} for adapter.edits(...)
    S.replace(alpha=0.5)                     # a copy at another strength (shares the tensors)
    S.save("fits/ground"); vlinterp.steering.load("fits/ground")   # any method, one format

``fit`` takes items (:class:`~vlinterp.core.items.Item`: probe questions, scenes with object masks,
captions), never dataset names; a strength given as ``"auto"`` is chosen on the calibration items
``calib``, scored with :mod:`vlinterp.metrics` (:mod:`.select`). Where the world's answer words matter
(colour, shape, number words), the config names them; :mod:`vlinterp.eval.steer` fills them in for
the shapes world.

Saved fits are a directory (written with :func:`vlinterp.core.io.output_dir`: built aside, then
published): ``steering.json`` (``{"method", "config", "state", "meta"}``) and
``steering.safetensors`` (the tensors). :func:`load` reads any of them back by the method name.

Adding a method = one file with the class + one line in :data:`STEERING` below.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
from typing import Any, ClassVar

import torch

from ..core.errors import ConfigError, LoadError, UnsupportedError
from ..core.registry import Registry

STEERING = Registry("steering method", {
    "iri": "vlinterp.steering.iri:IRI",
    "vcd": "vlinterp.steering.vcd:VCD",
    "meandiff": "vlinterp.steering.meandiff:MeanDiff",
    "save": "vlinterp.steering.save:SAVE",
    "probe": "vlinterp.steering.probe:ProbeSteer",
    "ground": "vlinterp.steering.ground:Grounding",
})

FORMAT = 1
JSON_NAME, TENSORS_NAME = "steering.json", "steering.safetensors"


def progress_bar(progress: bool, total: int, desc: str):
    """A tqdm bar (``desc``, counting items) or, without ``progress``, one that shows nothing."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not progress, leave=False)


class SteeringMethod:
    """Base class. A subclass sets ``name`` (by its registration), ``Config``, ``strengths`` (the config
    fields that say how hard it steers, printed after a fit), and implements :meth:`fit`,
    :meth:`edits`, :meth:`tensors` / :meth:`state` and :meth:`from_saved`."""

    name: ClassVar[str] = "base"
    kinds: ClassVar[tuple[str, ...]] = ("vlm",)
    strengths: ClassVar[tuple[str, ...]] = ()
    #: what ``fit`` needs of its items: ``presence`` (yes/no questions with answers), ``scenes`` (images
    #: whose objects have masks and colour/shape attributes); empty: nothing (VCD)
    needs: ClassVar[tuple[str, ...]] = ()

    @dataclasses.dataclass
    class Config:
        pass

    def __init__(self, config=None, meta: dict | None = None, **opts):
        cfg = config if config is not None else type(self).Config()
        if not isinstance(cfg, type(self).Config):
            raise ConfigError(f"{self.name}: config must be a {type(self).__name__}.Config, got {type(cfg).__name__}")
        if opts:
            unknown = sorted(set(opts) - {f.name for f in dataclasses.fields(cfg)})
            if unknown:
                raise ConfigError(f"{self.name}: unknown option(s) {', '.join(unknown)}; options: "
                                  f"{', '.join(f.name for f in dataclasses.fields(cfg))}")
            cfg = dataclasses.replace(cfg, **opts)
        if hasattr(cfg, "validate"):
            cfg.validate()
        self.config = cfg
        self.meta = dict(meta or {})

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, adapter, items, config=None, calib=None, progress: bool = False) -> "SteeringMethod":
        """Fit on ``items`` (probe items); strengths given as ``"auto"`` are chosen on ``calib``."""
        raise NotImplementedError

    @classmethod
    def make_config(cls, config=None, **opts):
        """``config`` (or the defaults) with ``opts`` replaced, validated."""
        cfg = config if config is not None else cls.Config()
        cfg = dataclasses.replace(cfg, **opts) if opts else cfg
        if hasattr(cfg, "validate"):
            cfg.validate()
        return cfg

    # ------------------------------------------------------------- applying
    @classmethod
    def check_kind(cls, adapter) -> None:
        """Raise :class:`UnsupportedError` unless ``adapter`` is of a kind this method steers."""
        if adapter.kind not in cls.kinds:
            raise UnsupportedError(f"{cls.name} steering needs a {' or '.join(cls.kinds)} model (LLaVA-style), "
                                   f"not {adapter.family} ({adapter.kind})")

    def check(self, adapter) -> None:
        """Raise :class:`UnsupportedError` unless ``adapter`` is of a kind this method steers, and
        :class:`ConfigError` while a strength is still ``"auto"`` (not fitted)."""
        self.check_kind(adapter)
        for k in self.strengths:
            if getattr(self.config, k, None) == "auto":
                raise ConfigError(f"{self.name}: {k} is 'auto' (chosen by fit); fit the method or give a number")

    def edits(self, adapter) -> dict:
        """``{site: fn(tensor, layout) -> tensor}`` for :meth:`Adapter.edits` / ``run(edits=...)``."""
        raise NotImplementedError

    @contextlib.contextmanager
    def applied(self, adapter):
        """Steer every run / generate of ``adapter`` inside the block; nothing is left behind on exit."""
        with adapter.edits(self.edits(adapter)):
            yield adapter

    def generate(self, adapter, batch, **kw):
        """``adapter.generate(batch, **kw)`` with the steering on at every decoding step -> ``Generation``."""
        with self.applied(adapter):
            return adapter.generate(batch, **kw)

    def replace(self, **changes) -> "SteeringMethod":
        """A copy with some config fields changed (e.g. another strength); tensors are shared."""
        new = copy.copy(self)
        new.config = self.make_config(self.config, **changes)
        new.meta = dict(self.meta)
        return new

    def strength_values(self) -> dict[str, Any]:
        """``{strength: value}`` (as chosen by the fit)."""
        return {k: getattr(self.config, k) for k in self.strengths}

    def describe(self) -> str:
        """``"ground: alpha 3, beta 1, gate 1"``."""
        vals = self.strength_values()
        return self.name + (": " + ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                                             for k, v in vals.items()) if vals else "")

    # ------------------------------------------------------------------- io
    def tensors(self) -> dict[str, torch.Tensor]:
        """The fitted tensors, by name (saved as safetensors)."""
        return {}

    def state(self) -> dict:
        """The fitted state that is not a tensor (JSON)."""
        return {}

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor], state: dict, config, meta: dict) -> "SteeringMethod":
        return cls(config=config, meta=meta)

    def save(self, path) -> str:
        """Write the fit to the directory ``path`` (new, empty, or an earlier vlinterp output; the
        user's files in it are kept): ``steering.json`` + ``steering.safetensors``. Returns ``path``."""
        from safetensors.torch import save_file

        from ..core.io import output_dir, write_json

        doc = {"vlinterp": "steering", "format": FORMAT, "method": self.name, "config": config_dict(self.config),
               "state": self.state(), "meta": self.meta}
        text = json.dumps(doc)  # fail before writing anything when something is not JSON
        with output_dir(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.tensors().items()}, os.path.join(tmp, TENSORS_NAME))
            write_json(os.path.join(tmp, JSON_NAME), json.loads(text))
        return os.fspath(path)

    @classmethod
    def load(cls, path) -> "SteeringMethod":
        """Read a fit written by :meth:`save` (it must be this method's; :func:`load` takes any)."""
        doc = read_header(path)
        if doc["method"] != cls.name:
            raise LoadError(f"{path} holds a {doc['method']!r} fit, not {cls.name!r}; use vlinterp.steering.load")
        from safetensors.torch import load_file

        config = STEERING.config(cls.name, **doc.get("config", {}))
        if config is None:
            config = cls.Config()
        return cls.from_saved(load_file(os.path.join(path, TENSORS_NAME)), doc.get("state", {}), config, doc.get("meta", {}))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def config_dict(config) -> dict:
    """A config dataclass as JSON-ready ``{field: value}`` (tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def read_header(path) -> dict:
    """The ``steering.json`` of a fit directory, checked (:class:`LoadError` in our words)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LoadError(f"steering fit {path!r} does not exist")
    if not os.path.isdir(path):
        raise LoadError(f"steering fit {path!r} is not a directory (vlinterp steer fit --out DIR writes one)")
    js = os.path.join(path, JSON_NAME)
    if not os.path.isfile(js) or not os.path.isfile(os.path.join(path, TENSORS_NAME)):
        raise LoadError(f"{path!r} holds no steering fit ({JSON_NAME} + {TENSORS_NAME}); write one with vlinterp steer fit")
    try:
        with open(js, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise LoadError(f"{js}: not a steering fit ({e})") from None
    if not isinstance(doc, dict) or doc.get("vlinterp") != "steering" or not isinstance(doc.get("method"), str):
        raise LoadError(f"{js}: not a steering fit written by vlinterp")
    if doc.get("format", 0) > FORMAT:
        raise LoadError(f"{js}: fit format {doc.get('format')} is newer than this vlinterp reads ({FORMAT})")
    STEERING.check(doc["method"])
    return doc


def load(path) -> SteeringMethod:
    """Any saved steering fit, by the method name it records."""
    doc = read_header(path)
    return STEERING.get(doc["method"]).load(path)


__all__ = ["STEERING", "SteeringMethod", "load", "read_header", "config_dict", "progress_bar"]
