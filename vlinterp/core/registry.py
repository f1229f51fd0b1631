"""One registry for every method family (saliency, pruning, steering, corruptions, prototypes,
SAE architectures, datasets).

An entry is a class, registered by decorator or lazily as ``"module:Class"`` (so importing a
package stays light). A class with options declares them as a dataclass ``Config`` nested in it;
:meth:`Registry.config` builds one from keyword options or from the strings of a CLI spec
(``"fastv:keep=0.25,layer=2"``), rejecting unknown names and wrong types in our own words.

>>> PRUNERS = Registry("pruning method")
>>> @PRUNERS.register("random")
... class RandomPruner: ...
>>> PRUNERS.names(); PRUNERS.get("random"); PRUNERS.create("random", keep=0.25)
"""
from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from typing import Any, Callable, Iterator

from .errors import ConfigError, UnknownNameError


class Registry:
    """Name -> class. ``kind`` names the family in messages (``"saliency method"``)."""

    def __init__(self, kind: str, entries: dict[str, str] | None = None):
        self.kind = kind
        self._targets: dict[str, str | type] = dict(entries or {})
        self._loaded: dict[str, type] = {}

    # ------------------------------------------------------------ registration
    def register(self, name: str, target: str | type | None = None) -> Callable | type:
        """``@REG.register("name")`` on a class, or ``REG.register("name", "module:Class")``."""
        if target is None:
            def deco(cls):
                self.register(name, cls)
                return cls
            return deco
        self._loaded.pop(name, None)
        self._targets[name] = target
        if not isinstance(target, str):
            self._loaded[name] = target
            if getattr(target, "name", None) in (None, "", "base"):
                try:
                    target.name = name
                except (AttributeError, TypeError):
                    pass
        return target

    # ---------------------------------------------------------------- look-up
    def names(self, **where) -> list[str]:
        """Registered names, in registration order. ``where``: keep entries whose class attribute
        holds the value (``names(family="vlm")`` keeps classes whose ``families`` contain it)."""
        out = []
        for n in self._targets:
            if where:
                cls = self.get(n)
                ok = True
                for attr, want in where.items():
                    have = getattr(cls, attr if hasattr(cls, attr) else attr + "s", None)
                    ok &= want in have if isinstance(have, (tuple, list, set, frozenset)) else have == want
                if not ok:
                    continue
            out.append(n)
        return out

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._targets))

    def __len__(self) -> int:
        return len(self._targets)

    def check(self, name: str) -> str:
        """``name`` if registered, else :class:`UnknownNameError` naming the nearest names."""
        if name not in self._targets:
            raise UnknownNameError(self.kind, name, list(self._targets))
        return name

    def get(self, name: str) -> type:
        """The class registered as ``name`` (imported on first use)."""
        self.check(name)
        if name not in self._loaded:
            target = self._targets[name]
            if isinstance(target, str):
                mod, attr = target.split(":")
                target = getattr(importlib.import_module(mod), attr)
            self._loaded[name] = target
        return self._loaded[name]

    # ----------------------------------------------------------------- configs
    def config_class(self, name: str):
        """The entry's ``Config`` dataclass, or ``None`` when it takes no options."""
        cfg = getattr(self.get(name), "Config", None)
        return cfg if cfg is not None and dataclasses.is_dataclass(cfg) else None

    def options(self, name: str) -> dict[str, Any]:
        """``{option: default}`` of an entry (empty when it takes none)."""
        cfg = self.config_class(name)
        if cfg is None:
            return {}
        return {f.name: _default(f) for f in dataclasses.fields(cfg) if f.init}

    def config(self, name: str, /, **opts):
        """A validated ``Config`` of ``name`` from ``opts`` (values of the right type, or strings
        from a CLI spec, converted by the field's annotation). Unknown options, wrong types and
        values the config's ``validate()`` refuses raise :class:`ConfigError`."""
        cls = self.config_class(name)
        if cls is None:
            if opts:
                raise ConfigError(f"{self.kind} {name!r} takes no options (got {', '.join(sorted(opts))})")
            return None
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(opts) - set(fields))
        if unknown:
            raise ConfigError(f"{self.kind} {name!r}: unknown option(s) {', '.join(unknown)}; options: {', '.join(fields) or 'none'}")
        hints = typing.get_type_hints(cls)
        kw = {k: coerce(v, hints.get(k, Any), f"{self.kind} {name!r} option {k!r}") for k, v in opts.items()}
        cfg = cls(**kw)
        if hasattr(cfg, "validate"):
            cfg.validate()
        return cfg

    def create(self, name: str, /, *args, **opts):
        """``cls(*args, config=Config(**opts))`` for entries with a ``Config``, else ``cls(*args)``."""
        cfg = self.config(name, **opts)
        cls = self.get(name)
        return cls(*args) if cfg is None else cls(*args, config=cfg)

    def parse(self, spec: str) -> tuple[str, dict[str, str]]:
        """``"name"``, ``"name:k=v,k2=v2"`` or ``"name[k=v,k2=v2]"`` -> ``(name, {k: "v"})``,
        the name checked against the registry (options are checked by :meth:`config`)."""
        name, opts = parse_spec(spec)
        return self.check(name), opts

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._targets)})"


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split a method spec into its name and raw string options (see :meth:`Registry.parse`)."""
    s = str(spec).strip()
    if not s:
        raise ConfigError("empty method spec")
    if s.endswith("]") and "[" in s:
        name, body = s[:-1].split("[", 1)
    elif ":" in s:
        name, body = s.split(":", 1)
    else:
        name, body = s, ""
    opts: dict[str, str] = {}
    for part in [p for p in body.replace(":", ",").split(",") if p.strip()]:
        if "=" not in part:
            raise ConfigError(f"option {part!r} in {spec!r} is not key=value")
        k, v = part.split("=", 1)
        opts[k.strip().replace("-", "_")] = v.strip()
    return name.strip(), opts


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def coerce(value, annotation, what: str):
    """``value`` as ``annotation`` (int, float, bool, str, Optional, Literal, tuple/list of those);
    strings are parsed (``"none"`` -> None for optionals; sequences separated by ``+`` or ``/``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is typing.Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return None
        errors = []
        for a in [a for a in args if a is not type(None)]:
            try:
                return coerce(value, a, what)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{what}: cannot take {value!r}")
    if origin is typing.Literal:
        for a in args:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise ConfigError(f"{what} must be one of {', '.join(map(str, args))}, got {value!r}")
    if origin in (tuple, list):
        items = value
        if isinstance(value, str):
            items = [x for x in value.replace("/", "+").split("+") if x.strip()]
        elif not isinstance(value, (list, tuple)):
            items = [value]
        inner = args[0] if args else Any
        out = [coerce(x, inner, what) for x in items]
        return tuple(out) if origin is tuple else out
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{what} must be true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{what} must be a number, got {value!r}")
        try:
            out = annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{what} must be {'an integer' if annotation is int else 'a number'}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and value != out:
            raise ConfigError(f"{what} must be an integer, got {value!r}")
        if annotation is float and out != out:
            raise ConfigError(f"{what} must be a number, got {value!r}")
        return out
    if annotation is str:
        return str(value)
    return value


__all__ = ["Registry", "parse_spec", "coerce", "UnknownNameError", "ConfigError"]

