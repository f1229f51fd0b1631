"""The one base class of saliency methods, and the helpers they share.

As in pytorch-grad-cam's ``BaseCAM``, a method is a small subclass overriding one function:
``compute(t: Targets) -> [n_targets, n_patches]``. :meth:`SaliencyMethod.attribute` resolves
the target (:mod:`.targets`), calls ``compute`` and wraps the scores in a
:class:`~vlinterp.core.result.Result` (patches in ``layout.image_positions(image_index)`` order).

Helpers: :func:`attention_with_grad` (attention probabilities that are part of the autograd
graph, for gradient x attention methods), :func:`probe_attention` / :func:`with_probe_row` (a
stream without CLS pooled by an attention probe, SigLIP: the probe's row appended as the virtual
query position ``T``), :func:`pixel_forward` (pixels -> explained scalars, for captum and
pytorch-grad-cam), :func:`pool_pixels` (pixel attributions -> patch grid).
"""
from __future__ import annotations

import contextlib
import dataclasses
import typing
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from ..core.errors import ConfigError, LayerRangeError, NaNError, ShapeMismatchError, UnsupportedError
from ..core.registry import coerce
from ..core.result import Result
from ..core.types import Batch
from .targets import Targets, resolve


class SaliencyMethod:
    """Base of every saliency method. ``kinds``: the adapter kinds it supports (``adapter.kind``:
    vlm, vit, clip, diffusion); ``Config``: a dataclass of its options (typed fields with defaults,
    optional ``validate()``). ``Method(adapter, **opts)`` builds the config from ``opts`` (unknown
    names, wrong types and refused values raise :class:`ConfigError` naming the valid options);
    ``Method(adapter, config=Method.Config(...))`` takes one built already (the registry's way)."""

    name: str = ""
    kinds: tuple[str, ...] = ("vlm", "vit", "clip")

    @dataclass
    class Config:
        """No options."""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "families" in cls.__dict__ and "kinds" not in cls.__dict__:  # the attribute's former name
            cls.kinds = tuple(cls.__dict__["families"])

    def __init__(self, adapter, config=None, **opts):
        check_kind(self, adapter)
        self.adapter = adapter
        self.config = build_config(type(self), config, opts)

    @property
    def opts(self) -> dict:
        """The options in use, ``{name: value}`` (read-only view of :attr:`config`)."""
        return options_of(self.config)

    def compute(self, t: Targets) -> np.ndarray:
        """Patch scores ``[t.n, n_patches]`` (float); may add ``t.arrays`` / ``t.meta``."""
        raise NotImplementedError

    def resolve(self, batch: Batch, target=None, image_index: int = 0) -> Targets:
        return resolve(self.adapter, batch, target, image_index, max_new_tokens=getattr(self.config, "max_new_tokens", 8))

    def attribute(self, batch: Batch, target=None, image_index: int = 0) -> Result:
        """Explain ``target`` (see :mod:`.targets`) on image ``image_index`` of ``batch``.
        Returns a Result: ``scores`` ``[n_targets, n_patches]``, ``targets`` labels, the layout
        of the patches' stream; ``meta``: method, family, options, resolved ``target``, answer..."""
        t = self.resolve(batch, target, image_index)
        scores = np.asarray(self.compute(t), dtype=np.float32)
        n_patches = len(t.patches)
        if scores.shape != (t.n, n_patches):
            raise ShapeMismatchError(f"{self.name} produced scores {scores.shape}, expected {(t.n, n_patches)}")
        if not np.all(np.isfinite(scores)):
            raise NaNError(f"{self.name} produced NaN or Inf scores")
        meta = {"method": self.name, "family": self.adapter.family, "model": self.adapter.name,
                "options": _jsonable(self.opts), "target": t.spec, "image_index": int(image_index),
                "stream": t.stream, **t.meta}
        return Result(self.name, {"scores": scores, **t.arrays}, t.layout, list(t.labels), t.image_index, meta)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} on {self.adapter.name!r} {self.opts}>"


# ------------------------------------------------------------------ options
@dataclass
class AnswerConfig:
    """``max_new_tokens``: length of the greedy answer generated when a VLM target is ``None``."""

    max_new_tokens: int = 8

    def validate(self) -> None:
        positive(self, "max_new_tokens")


@dataclass
class LayersConfig(AnswerConfig):
    """``layers`` / ``heads``: indices (negative from the end; ``None`` = all; heads averaged)."""

    layers: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None


def positive(cfg, *names: str) -> None:
    """Raise :class:`ConfigError` unless every option in ``names`` is > 0."""
    for n in names:
        v = getattr(cfg, n)
        if v is not None and not v > 0:
            raise ConfigError(f"option {n!r} must be greater than 0, got {v!r}")


def check_kind(method, adapter) -> None:
    """:class:`UnsupportedError` unless ``method`` supports ``adapter.kind``."""
    kinds = tuple(method.kinds)
    if adapter.kind not in kinds:
        raise UnsupportedError(f"saliency method {method.name!r} does not support {adapter.family} models "
                               f"(supports: {', '.join(kinds)})")


def build_config(cls, config, opts: dict):
    """``cls.Config`` from keyword options (strings from a CLI spec are converted by the field's
    annotation), or ``config`` itself; :class:`ConfigError` for unknown or invalid options."""
    Config = cls.Config
    what = f"saliency method {cls.name or cls.__name__!r}"
    if config is not None:
        if opts:
            raise ConfigError(f"{what}: give either config= or options, not both")
        if not isinstance(config, Config):
            raise ConfigError(f"{what}: config must be a {cls.__name__}.Config, got {type(config).__name__}")
        cfg = config
    else:
        fields = [f.name for f in dataclasses.fields(Config) if f.init]
        unknown = sorted(set(opts) - set(fields))
        if unknown:
            raise ConfigError(f"{what}: unknown option(s) {', '.join(unknown)}; options: {', '.join(fields) or 'none'}")
        hints = typing.get_type_hints(Config)
        cfg = Config(**{k: coerce(v, hints.get(k, typing.Any), f"{what} option {k!r}") for k, v in opts.items()})
    if hasattr(cfg, "validate"):
        try:
            cfg.validate()
        except ConfigError as e:
            raise ConfigError(f"{what}: {e}") from None
    return cfg


def options_of(config) -> dict:
    """``{field: value}`` of a config dataclass (values not copied)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _jsonable(opts: dict) -> dict:
    out = {}
    for k, v in opts.items():
        if isinstance(v, (str, int, float, bool, type(None))) or (isinstance(v, (list, tuple)) and all(isinstance(x, (int, float, str)) for x in v)):
            out[k] = list(v) if isinstance(v, tuple) else v
        else:
            out[k] = repr(v)
    return out


# ---------------------------------------------------------------- model access
def site_module(adapter, site: str) -> torch.nn.Module:
    """The ``nn.Module`` behind a hook site of ``adapter`` (:meth:`Adapter.module`)."""
    return adapter.module(site)


def check_layers(adapter, layers, stream: str) -> list[int]:
    """Layer indices (negative allowed) of ``stream``'s attention layers, validated; ``None`` = all."""
    sites = adapter.attention_sites(stream)
    if not sites:
        raise UnsupportedError(f"{adapter.family}: no attention layers in stream {stream!r}")
    n = max(sites) + 1
    if layers is None:
        return list(range(n))
    layers = [int(layers)] if isinstance(layers, (int, np.integer)) else [int(x) for x in layers]
    for x in layers:
        if not -n <= x < n:
            raise LayerRangeError(f"layer {x} out of range: stream {stream!r} has {n} layers (0..{n - 1})")
    return sorted({x % n for x in layers})


def with_pixel_grad(batch: Batch) -> Batch:
    """A shallow copy of ``batch`` whose ``pixel_values`` require grad (so gradients reach the
    activations even when the model's parameters are frozen)."""
    inputs = dict(batch.inputs)
    if isinstance(inputs.get("pixel_values"), torch.Tensor) and inputs["pixel_values"].is_floating_point():
        inputs["pixel_values"] = inputs["pixel_values"].detach().clone().requires_grad_(True)
    return Batch(inputs, batch.layouts, batch.main, batch.images, batch.text, batch.meta)


@contextlib.contextmanager
def graph_from_layer(adapter, layer: int):
    """For the block: every parameter frozen and the autograd graph started at the input of
    language-model decoder layer ``layer`` (a leaf that requires grad), so a ``run(..., grad=True)``
    records nothing before it: not the vision tower, the projector or earlier layers. Gradients of
    anything computed from layer ``layer`` on (its attention probabilities) are unchanged; on
    LLaVA-NeXT shapes this cut relevancy's peak memory from 8.6 to 6.8 GB. Undone on exit."""
    with adapter.raw_hooks() as h:
        for p in adapter.model.parameters():
            if p.requires_grad:
                h.setattr(p, "requires_grad", False)

        def leaf(module, args, kwargs):
            if args:
                return (args[0].detach().requires_grad_(True),) + tuple(args[1:]), kwargs
            return args, dict(kwargs, hidden_states=kwargs["hidden_states"].detach().requires_grad_(True))

        h.pre(f"blocks.{int(layer)}.resid", leaf, with_kwargs=True)
        yield


@contextlib.contextmanager
def attention_with_grad(adapter, layers: Iterable[int], stream: str, pool: str | None = None):
    """Yield ``{layer: probs [B, H, Tq, Tk]}``, filled by the next ``adapter.run(..., grad=True)``
    inside the block with the attention probabilities the model actually multiplies with its
    values, so ``torch.autograd.grad(score, probs[l])`` is the true gradient. ``pool``: also the
    attention-pooling head at that site (SigLIP), as ``probs["pool"]`` ``[B, H, 1, T]``.

    Recomputed probabilities (``Adapter.attention``) are a side branch of the graph with zero
    gradient, so each attention module is switched, for the block only, to its explicit path:
    transformers modules to the ``eager`` attention function (their output ``[1]`` is then the
    probabilities), timm ``Attention`` to ``fused_attn=False`` (probabilities read at ``attn_drop``).
    ``nn.MultiheadAttention`` (open_clip) returns only a view of its probabilities, so its output
    is replaced by ``out_proj(P @ V)`` with ``P`` from ``adapter._attention_probs`` (same values).
    Hooks and switches go through ``adapter.raw_hooks()``: on exit, also by exception, every hook
    is removed and every switch restored."""
    sites = adapter.attention_sites(stream)
    probs: dict[int, torch.Tensor] = {}
    with adapter.raw_hooks() as h:
        for l in layers:
            _install(adapter, h, sites[l], l, probs)
        if pool is not None:
            _install(adapter, h, pool, "pool", probs)
        yield probs


def _install(adapter, h, site: str, layer: int, probs: dict) -> None:
    mod = adapter.module(site)

    def store(t):
        if t is None:
            raise UnsupportedError(f"{site}: the attention module returned no probabilities")
        probs[layer] = t

    if isinstance(mod, torch.nn.MultiheadAttention):
        h.forward(mod, _mha_hook(adapter, site, store), with_kwargs=True)
        return
    if hasattr(mod, "fused_attn") and isinstance(getattr(mod, "attn_drop", None), torch.nn.Module):
        h.setattr(mod, "fused_attn", False)
        h.forward(mod.attn_drop, lambda m, a, out: store(out))
        return
    cfg = getattr(mod, "config", None)
    if cfg is not None and hasattr(cfg, "_attn_implementation"):
        if cfg._attn_implementation != "eager":
            h.setattr(cfg, "_attn_implementation", "eager")
        h.forward(mod, lambda m, a, out: store(out[1] if isinstance(out, tuple) and len(out) > 1 else None))
        return
    raise UnsupportedError(f"{site}: gradients of attention are not available for {type(mod).__name__} modules")


def _mha_hook(adapter, site: str, store):
    """Forward hook: recompute an ``nn.MultiheadAttention`` output from in-graph probabilities."""

    def hook(m, args, kwargs, out):
        P = adapter._attention_probs(site, m, args, kwargs, out)              # [B, H, Tq, Tk]
        q = args[0] if args else kwargs["query"]
        v = args[2] if len(args) > 2 else kwargs.get("value", args[1] if len(args) > 1 else kwargs.get("key", q))
        if not m.batch_first:
            v = v.transpose(0, 1)
        E, H = m.embed_dim, m.num_heads
        b = None if m.in_proj_bias is None else m.in_proj_bias[2 * E:]
        w = m.in_proj_weight[2 * E:] if m.in_proj_weight is not None else m.v_proj_weight
        vv = torch.nn.functional.linear(v, w, b).view(v.shape[0], v.shape[1], H, E // H).transpose(1, 2)
        o = (P @ vv).transpose(1, 2).reshape(v.shape[0], P.shape[2], E)
        o = m.out_proj(o)
        if not m.batch_first:
            o = o.transpose(0, 1)
        store(P)
        return (o,) + tuple(out[1:]) if isinstance(out, tuple) else o

    return hook


@contextlib.contextmanager
def probe_attention(adapter, t: Targets):
    """Yield a dict whose ``"probs"`` (``[B, H, 1, T]``, no grad) the next run inside the block fills
    with the attention of ``t.pool``'s probe (SigLIP's MAP head); stays empty when ``t.pool`` is None."""
    got: dict = {}
    if t.pool is None:
        yield got
        return

    def hook(module, args, kwargs, out):
        with torch.no_grad():
            got["probs"] = adapter._attention_probs(t.pool, module, args, kwargs, out).detach()

    with adapter.raw_hooks() as h:
        h.forward(t.pool, hook, with_kwargs=True)
        yield got


def with_probe_row(M: torch.Tensor, probe: torch.Tensor | None) -> torch.Tensor:
    """``M`` ``[T, T]`` (attention, rollout or relevance over a stream) with one more row ``T``: the
    pooling probe's row ``probe @ M`` (``probe`` ``[T]``: the probe's attention over the sequence;
    the probe is not a token, so it reads the sequence only through its attention). ``None``: ``M``."""
    if probe is None:
        return M
    return torch.cat([M, (probe.to(M.dtype) @ M)[None]])


@contextlib.contextmanager
def keep_param_grads(model: torch.nn.Module):
    """Restore every parameter's ``.grad`` on exit (for libraries that call ``backward()``)."""
    saved = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, g in saved:
            p.grad = g


# ----------------------------------------------------------------- pixel space
def pixels(t: Targets) -> torch.Tensor:
    x = t.batch.inputs.get("pixel_values")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = None if x is None else tuple(x.shape)
        raise UnsupportedError(f"pixel-space methods perturb one crop per image ([3, H, W]); this model's processor gives "
                               f"pixel_values of shape {shape} (tiles, or patches packed into rows); ig takes space=tokens there")
    if t.stream == "lm" and len(t.layout.images[t.image_index].tiles) != 1:
        raise UnsupportedError(f"pixel-space methods perturb one crop per image; this image is split into "
                               f"{len(t.layout.images[t.image_index].tiles)} tiles; ig takes space=tokens there")
    if x.shape[0] != 1:
        raise UnsupportedError(f"pixel-space methods explain one image per prompt; this prompt has {x.shape[0]}")
    return x


def tiled_input(t: Targets) -> bool:
    """Whether the explained image reaches the model as more than one crop (tiles, a thumbnail) or as
    patches packed into rows (Qwen): no single ``[3, H, W]`` crop and no single patch grid."""
    x = t.batch.inputs.get("pixel_values")
    return not (isinstance(x, torch.Tensor) and x.dim() == 4) or len(t.layout.images[t.image_index].tiles) != 1


def pixel_forward(adapter, t: Targets, grad: bool):
    """``f(x) -> [k, n_targets]`` for pixels ``x`` ``[k, 3, H, W]`` (copies of the one explained
    image): the batch's other inputs are repeated ``k`` times (captum expands inputs along dim 0)."""
    pixels(t)

    def f(x: torch.Tensor) -> torch.Tensor:
        k = x.shape[0]
        inputs = dict(t.batch.inputs)
        inputs["pixel_values"] = x
        if t.stream == "lm" and k > 1:  # every per-token input: ids, mask, token types (Gemma 3, PaliGemma) ...
            T = inputs["input_ids"].shape[1]
            for key, v in t.batch.inputs.items():
                if key != "pixel_values" and isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape == (1, T):
                    inputs[key] = v.repeat(k, 1)
        b = Batch(inputs, t.batch.layouts, t.batch.main, t.batch.images, t.batch.text, t.batch.meta)
        return t.select(adapter.run(b, grad=grad).logits).float()

    return f


def pool_pixels(attr: torch.Tensor, t: Targets, absolute: bool = True) -> np.ndarray:
    """Pixel attributions ``[3, H, W]`` of the explained image -> per-patch means ``[n_patches]``
    over each patch cell of the processed input (``H // rows`` x ``W // cols`` pixels), row-major."""
    rows, cols = t.layout.grid(t.image_index)
    a = attr.detach().float()
    a = a.abs() if absolute else a
    a = a.mean(0)
    ph, pw = a.shape[0] // rows, a.shape[1] // cols
    a = a[: rows * ph, : cols * pw].reshape(rows, ph, cols, pw).mean(dim=(1, 3))
    return a.flatten().cpu().numpy()


def select_heads(A: torch.Tensor, heads) -> torch.Tensor:
    """``A`` ``[..., H, Tq, Tk]`` restricted to ``heads`` (``None`` = all) along dim -3."""
    if heads is None:
        return A
    H = A.shape[-3]
    heads = [int(heads)] if isinstance(heads, (int, np.integer)) else [int(h) for h in heads]
    for h in heads:
        if not -H <= h < H:
            raise LayerRangeError(f"head {h} out of range: layers have {H} heads (0..{H - 1})")
    return A.index_select(-3, torch.as_tensor([h % H for h in heads], device=A.device))
