"""Hook sites, capture and edits that never leak.

An adapter declares a table ``{uniform site name: Site(module path, stream)}``.
:class:`HookSession` resolves names and wildcards against that table and installs
PyTorch forward hooks only for the duration of a ``with`` block: on exit, also by
exception, every handle it added is removed, so the model has exactly the hooks it
had before and gives bit-identical outputs.

Wildcards: ``*`` matches one dotted component, ``**`` any run of components, and
``{a,b}`` alternatives, e.g. ``blocks.*.resid``, ``vision.blocks.{0,1}.{attn,mlp}``.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import torch

from .errors import ShapeMismatchError, UnknownSiteError, UnsupportedError

EditFn = Callable[[torch.Tensor, object], torch.Tensor]


@dataclass(frozen=True)
class Site:
    """A hook site: ``module`` is the dotted path inside the wrapped model; ``stream``
    names the token layout its sequence dimension follows (``lm``, ``vision``, ``text``,
    ``unet``). ``layer`` is the block index or ``None``.

    ``pre``: the site is the module's *input* (its first positional argument, else its
    ``hidden_states`` keyword), read and replaced by a forward pre-hook (e.g. ``inputs_embeds``:
    what the first decoder layer receives). ``packed``: the module's tensors have no batch
    dimension (``[N, D]``, Qwen's vision tower packs every image's patches into one sequence);
    captures and edits see them as one row ``[1, N, D]``."""

    module: str
    stream: str
    layer: int | None = None
    pre: bool = False
    packed: bool = False


def pattern_to_regex(pattern: str) -> re.Pattern:
    """Compile a site wildcard pattern to a regex matching whole site names."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if ch == "*":
            out.append("[^.]+")
        elif ch == "{":
            j = pattern.index("}", i)
            out.append("(?:" + "|".join(re.escape(p.strip()) for p in pattern[i + 1 : j].split(",")) + ")")
            i = j
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")


def resolve_sites(patterns: str | Iterable[str], table: Mapping[str, Site]) -> list[str]:
    """Expand names/wildcards to site names, in the table's order; unknown names raise
    :class:`UnknownSiteError` listing the nearest valid names."""
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen: set[str] = set()
    for p in patterns:
        if p in table:
            chosen.add(p)
            continue
        rx = pattern_to_regex(p)
        hits = [n for n in table if rx.match(n)]
        if not hits:
            raise UnknownSiteError(p, table.keys())
        chosen.update(hits)
    return [n for n in table if n in chosen]


def get_tensor(out):
    """The main tensor of a module output (tensor, tuple/list first element, or ModelOutput)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, Mapping):
        return next(iter(out.values()))
    if hasattr(out, "sample"):  # diffusers UNet2DConditionOutput
        return out.sample
    raise UnsupportedError(f"cannot find a tensor in module output of type {type(out).__name__}")


def set_tensor(out, new: torch.Tensor):
    """Return ``out`` with its main tensor replaced by ``new`` (same container type)."""
    if isinstance(out, torch.Tensor):
        return new
    if isinstance(out, tuple):
        return (new,) + tuple(out[1:])
    if isinstance(out, list):
        return [new] + list(out[1:])
    if isinstance(out, Mapping):
        k = next(iter(out.keys()))
        out[k] = new
        return out
    raise UnsupportedError(f"cannot replace the tensor in module output of type {type(out).__name__}")


def _is_library_hook(fn) -> bool:
    """transformers >= 5 installs its own output-recording hooks, once, on a model's first
    forward (``install_output_capuring_hook``); they are the library's, not ours."""
    return "output_capuring_hook" in getattr(fn, "__qualname__", "") or "output_capturing_hook" in getattr(fn, "__qualname__", "")


def count_hooks(model: torch.nn.Module, include_library: bool = False) -> int:
    """Number of forward/pre/backward hooks on every submodule (for leak checks). Hooks that
    transformers installs for itself on first use are left out unless ``include_library``."""
    n = 0
    for m in model.modules():
        for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks):
            n += sum(1 for fn in d.values() if include_library or not _is_library_hook(fn))
    return n


# keyword names a pre-hook site reads its input from when the module got no positional argument
_INPUT_KEYS = ("hidden_states", "inputs_embeds", "x", "input")


def _select_positions(t: torch.Tensor, positions) -> torch.Tensor:
    if positions is None:
        return t
    if t.dim() < 2:
        raise ShapeMismatchError(f"cannot select positions from a tensor of shape {tuple(t.shape)}")
    idx = torch.as_tensor(positions, dtype=torch.long, device=t.device)
    return t.index_select(1, idx)


class HookSession:
    """Installs capture and edit hooks on ``model`` for one ``with`` block.

    ``layouts`` is a callable ``stream -> TokenLayout | None`` so edits receive the layout
    of the batch that is running when they fire.
    """

    def __init__(self, model: torch.nn.Module, table: Mapping[str, Site], layouts: Callable[[str], object]):
        self.model, self.table, self.layouts = model, table, layouts
        self._modules = dict(model.named_modules())

    def module(self, site: str) -> torch.nn.Module:
        path = self.table[site].module
        if path not in self._modules:
            raise UnknownSiteError(site, self.table.keys())
        return self._modules[path]

    @contextlib.contextmanager
    def hooks(
        self,
        capture: str | Iterable[str] | None = None,
        edits: Mapping[str, EditFn] | None = None,
        positions=None,
        grad: bool = False,
        cache: "Cache | None" = None,
    ):
        """Yield a dict ``cache`` (a new :class:`Cache`, or the one given, e.g. a
        :class:`~vlinterp.core.spill.SpillCache`) filled as the model runs: ``cache[site]`` is the site's
        output ``[B, T, D]`` (or ``[B, C, H, W]`` for UNet sites), restricted to
        ``positions`` along dim 1 if given. Calls within the block append: a site that
        fires several times (generation steps, sampler steps) keeps a list in
        ``cache.steps[site]`` and its last value in ``cache[site]``."""
        cache = Cache() if cache is None else cache
        if grad and getattr(cache, "spills", False):
            from .errors import UnsupportedError

            raise UnsupportedError("a capture that spills to disk cannot keep gradients (grad=True)")
        handles = []
        try:
            per_site: dict[str, list[EditFn]] = {}
            for pat, fn in (edits or {}).items():
                for name in ([pat] if pat in self.table else resolve_sites(pat, self.table)):
                    per_site.setdefault(name, []).append(fn)
            for name in [n for n in self.table if n in per_site] if len(per_site) > 1 else per_site:
                handles.append(self._register(name, self._edit_fn(name, per_site[name])))
            cap = [capture] if isinstance(capture, str) else list(capture or [])
            names = [n for n in self.table if n in set(cap)] if all(c in self.table for c in cap) else resolve_sites(cap, self.table)
            for name in names:
                handles.append(self._register(name, self._capture_fn(name, cache, positions, grad)))
            yield cache
        finally:
            for h in handles:
                h.remove()

    def _register(self, name: str, tfn: Callable[[torch.Tensor], torch.Tensor | None]):
        """Hook site ``name`` with ``tfn(tensor) -> new tensor or None (keep)``: a forward hook on
        the module's output, or for a ``pre`` site a pre-hook on its input; ``packed`` sites pass
        ``tfn`` a ``[1, N, D]`` view of their ``[N, D]`` tensor."""
        site = self.table[name]
        if site.packed:
            inner = tfn

            def tfn(t):  # noqa: F811 - the packed view of the same function
                new = inner(t.unsqueeze(0))
                return None if new is None else new.squeeze(0)

        mod = self.module(name)
        if site.pre:
            def pre(module, args, kwargs):
                key = None if args else next((k for k in _INPUT_KEYS if isinstance(kwargs.get(k), torch.Tensor)), None)
                if not args and key is None:
                    raise ShapeMismatchError(f"site {name!r}: the module received no tensor input to read")
                new = tfn(args[0] if args else kwargs[key])
                if new is None:
                    return None
                return ((new,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, key: new})

            return mod.register_forward_pre_hook(pre, with_kwargs=True)

        def post(module, args, out):
            new = tfn(get_tensor(out))
            return None if new is None else set_tensor(out, new)  # None: PyTorch keeps the module's output

        return mod.register_forward_hook(post)

    def _edit_fn(self, name: str, fns: list[EditFn]):
        stream = self.table[name].stream

        def edit(t0):
            t = t0
            layout = self.layouts(stream)
            for fn in fns:
                new = fn(t, layout)
                if new is t:  # a read-only edit (it kept a value): nothing to check or replace
                    continue
                if not isinstance(new, torch.Tensor) or new.shape != t.shape:
                    shape = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                    raise ShapeMismatchError(f"edit at {name!r} returned {shape}, expected {tuple(t.shape)}")
                t = new
            return None if t is t0 else t

        return edit

    def _capture_fn(self, name: str, cache: "Cache", positions, grad: bool):
        packed = self.table[name].packed

        def capture(t0):
            pos = positions(self.layouts(self.table[name].stream)) if callable(positions) else positions
            t = _select_positions(t0, pos)
            if grad:
                if t.requires_grad:
                    t.retain_grad()
            else:
                t = t.detach()
            cache.add(name, t)
            # a packed site's [1, N, D] view reaches the rest of the forward only if it replaces
            # the module's tensor: then gradients flow through the captured view
            return t0 if grad and packed and pos is None and t0.requires_grad else None

        return capture


class RawHooks:
    """Module-level hooks and attribute switches that methods need beyond capture/edit sites
    (attention-probability taps, backward hooks, kernel switches), all undone on exit.

    Made by :meth:`vlinterp.adapters.base.Adapter.raw_hooks`; ``target`` is a site name or an
    ``nn.Module``. On exit of the ``with`` block, also by exception, every hook added is removed and
    every attribute switched is restored, last first."""

    def __init__(self, session: "HookSession"):
        self._session = session
        self._undo: list[Callable[[], None]] = []

    def _module(self, target) -> torch.nn.Module:
        return target if isinstance(target, torch.nn.Module) else self._session.module(target)

    def forward(self, target, fn, with_kwargs: bool = False):
        """``fn(module, args, output)`` (``with_kwargs``: ``fn(module, args, kwargs, output)``)."""
        h = self._module(target).register_forward_hook(fn, with_kwargs=with_kwargs)
        self._undo.append(h.remove)
        return h

    def pre(self, target, fn, with_kwargs: bool = False):
        """``fn(module, args)`` (``with_kwargs``: ``fn(module, args, kwargs)``) before the forward."""
        h = self._module(target).register_forward_pre_hook(fn, with_kwargs=with_kwargs)
        self._undo.append(h.remove)
        return h

    def backward(self, target, fn):
        """``fn(module, grad_input, grad_output)`` (a full backward hook)."""
        h = self._module(target).register_full_backward_hook(fn)
        self._undo.append(h.remove)
        return h

    def setattr(self, obj, name: str, value) -> None:
        """Set ``obj.name = value`` for the block (e.g. ``fused_attn = False``, or one instance's method
        wrapped). On exit the attribute is as it was: an instance attribute that shadowed a class
        attribute or method (not a data descriptor: property, slot, tensor attribute) is removed again, so the object holds no trace of it."""
        import inspect

        missing = object()
        own = getattr(obj, "__dict__", None)
        cls_attr = inspect.getattr_static(type(obj), name, None)
        # a data descriptor (a property, a C-level attribute such as a tensor's requires_grad) is set
        # through, never shadowed: restore its old value; anything else set on the instance is removed
        shadow = own is not None and name not in own and hasattr(type(obj), name) and not hasattr(type(cls_attr), "__set__")
        old = missing if shadow else getattr(obj, name, missing)
        setattr(obj, name, value)
        self._undo.append(lambda: delattr(obj, name) if old is missing else setattr(obj, name, old))

    def close(self) -> None:
        while self._undo:
            self._undo.pop()()


class Cache(dict):
    """``dict`` of site name -> last captured tensor, plus ``steps[site]``: every capture."""

    def __init__(self):
        super().__init__()
        self.steps: dict[str, list[torch.Tensor]] = {}

    def add(self, name: str, t: torch.Tensor):
        self.steps.setdefault(name, []).append(t)
        self[name] = t

    def stack(self, pattern: str, table_order: Iterable[str] | None = None) -> torch.Tensor:
        """Stack captured sites matching ``pattern`` along a new dim 0 (e.g. ``[L, B, T, D]``)."""
        rx = pattern_to_regex(pattern)
        names = [n for n in (table_order or self.keys()) if n in self and rx.match(n)]
        if not names:
            raise UnknownSiteError(pattern, list(self))
        return torch.stack([self[n] for n in names])
