"""LRP propagation rules for a transformer language model, as a modified backward pass.

Layer-wise relevance propagation through a transformer (Ali et al. 2022, AttnLRP: Achtibat et al.
2024) is gradient x input on a forward whose nonlinear factors are held constant in the backward
pass. :func:`lrp_rules` installs forward hooks (through the adapter's
:meth:`~vlinterp.adapters.base.Adapter.raw_hooks`) that leave every value as it was and change only
the gradients, for every decoder layer of the language model and its final norm:

- **LN rule** (norms): ``norm(x) = x * s`` with the scale ``s`` (gain over the root mean square, or
  over the standard deviation after centring) detached: the gradient is ``s``.
- **AH rule** (attention): the attention probabilities are detached; the output is recomputed
  explicitly as ``o_proj(P . v_proj(x))`` with ``P`` recomputed from the layer's own inputs and mask
  (:func:`~vlinterp.core.attention.hf_self_attention`), so the gradient flows through the values only.
  RelP as published uses it. ``attention="attnlrp"`` instead follows AttnLRP's rules: the softmax by
  its own gradient (AttnLRP's softmax rule is gradient x input at its input) and the uniform rule on
  both products, ``q . k`` and ``P . v``, so half the relevance reaches the values and a quarter
  reaches the queries and keys through the attention pattern.
- **Identity rule** (activation functions): ``act(g) = g * (act(g) / g)`` with the ratio detached.
- **Uniform (half) rule** (gated MLPs, ``down(act(gate(x)) * up(x))``): the product's gradient is
  halved, each factor receiving half the relevance.

With every rule on, the language model is linear in its input embeddings for the backward pass,
so relevance is conserved: for a bias-free model, ``sum(x * grad) == logit`` at the input embeddings
(the test of this module). Modules the rules do not know raise :class:`UnsupportedError`.
"""
from __future__ import annotations

import math

import torch

from ..core.attention import hf_self_attention
from ..core.errors import ConfigError, UnsupportedError

RULES = ("lrp", "attnlrp", "none")
ATTENTION = ("ah", "attnlrp", "grad")
_SETS = {"lrp": {"attention": "ah", "norm": True, "mlp": True},
         "attnlrp": {"attention": "attnlrp", "norm": True, "mlp": True},
         "none": None}


def rule_set(rules) -> dict | None:
    """The keyword arguments of :func:`lrp_rules` for ``rules``: a name of :data:`RULES` (``lrp``:
    RelP as published; ``attnlrp``: AttnLRP's attention rules; ``none``: plain gradients, ``None``),
    or a dict ``{attention: ah|attnlrp|grad, norm: bool, mlp: bool}`` (rules left out are on, with
    the AH rule) for ablations. Raises :class:`ConfigError` on anything else."""
    if isinstance(rules, str):
        if rules not in _SETS:
            raise ConfigError(f"rules must be one of {', '.join(RULES)}, got {rules!r}")
        return None if _SETS[rules] is None else dict(_SETS[rules])
    if not isinstance(rules, dict) or not set(rules) <= {"attention", "norm", "mlp"}:
        raise ConfigError(f"rules must be one of {', '.join(RULES)} or a dict of attention/norm/mlp, got {rules!r}")
    out = {**_SETS["lrp"], **rules}
    if out["attention"] not in ATTENTION or not isinstance(out["norm"], bool) or not isinstance(out["mlp"], bool):
        raise ConfigError(f"rules: attention is one of {', '.join(ATTENTION)}, norm and mlp are booleans; got {rules!r}")
    return out


def _eps(norm) -> float | None:
    for k in ("variance_epsilon", "eps", "epsilon"):
        v = getattr(norm, k, None)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def is_norm(module: torch.nn.Module) -> bool:
    """A LayerNorm or an RMS norm (a class named ``*RMSNorm`` with a weight and an epsilon)."""
    return isinstance(module, torch.nn.LayerNorm) or (type(module).__name__.endswith("RMSNorm") and _eps(module) is not None)


def _norm_hook(module, args, output):
    x = args[0]
    out = output
    eps = _eps(module)
    xf = x.float()
    if isinstance(module, torch.nn.LayerNorm):
        w = module.weight if module.weight is not None else torch.ones(x.shape[-1], device=x.device)
        scale = (w.float() / torch.sqrt(xf.var(-1, unbiased=False, keepdim=True) + eps)).detach()
        d = x - x.detach()
        lin = (d - d.mean(-1, keepdim=True)) * scale
    else:
        with torch.no_grad():
            gain = module.forward(torch.ones(1, x.shape[-1], dtype=x.dtype, device=x.device))[0].float() * math.sqrt(1.0 + eps)
        scale = (gain / torch.sqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).detach()
        lin = (x - x.detach()) * scale
    return out.detach() + lin.to(out.dtype)


def _identity(g: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``a = act(g)`` with the gradient ``act(g) / g`` (detached): the identity rule."""
    ratio = torch.where(g.abs() > 1e-12, a / torch.where(g.abs() > 1e-12, g, torch.ones_like(g)), torch.zeros_like(g)).detach()
    return a.detach() + (g - g.detach()) * ratio


def _half(p: torch.Tensor) -> torch.Tensor:
    """A product of two factors with half the gradient to each: the uniform rule."""
    return 0.5 * p + 0.5 * p.detach()


def _mlp_hook(module, args, output):
    x = args[0] if args else None
    if x is None:
        raise UnsupportedError(f"MLP {type(module).__name__}: no positional input to recompute it from")
    if all(hasattr(module, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
        g = module.gate_proj(x)
        return module.down_proj(_half(_identity(g, module.act_fn(g)) * module.up_proj(x)))
    if all(hasattr(module, a) for a in ("fc1", "fc2")):
        act = getattr(module, "activation_fn", None) or getattr(module, "act", None) or getattr(module, "act_fn", None)
        if act is None:
            raise UnsupportedError(f"MLP {type(module).__name__}: no activation function found")
        h = module.fc1(x)
        return module.fc2(_identity(h, act(h)))
    raise UnsupportedError(f"LRP rules do not know the MLP {type(module).__name__} (gate/up/down or fc1/fc2 expected)")


def _attn_hook(module, args, kwargs, output, attnlrp: bool = False):
    h = kwargs.get("hidden_states", args[0] if args else None)
    if not all(hasattr(module, a) for a in ("v_proj", "o_proj")):
        raise UnsupportedError(f"LRP rules do not know the attention {type(module).__name__} (v_proj/o_proj expected)")
    probs = hf_self_attention(module, args, kwargs)  # [B, H, T, Tk]
    probs = _half(probs) if attnlrp else probs.detach()  # AttnLRP: q . k's uniform rule; AH: constant
    B, T, _ = h.shape
    hd = getattr(module, "head_dim", None) or module.v_proj.out_features // probs.shape[1]
    v = module.v_proj(h).view(B, T, -1, hd).transpose(1, 2)  # [B, kvH, T, hd]
    if getattr(module, "v_norm", None) is not None:
        raise UnsupportedError(f"LRP rules do not know the attention {type(module).__name__} with a value norm")
    rep = probs.shape[1] // v.shape[1]
    if rep > 1:
        v = v.repeat_interleave(rep, dim=1)
    pv = probs.to(v.dtype) @ v
    o = module.o_proj((_half(pv) if attnlrp else pv).transpose(1, 2).reshape(B, T, -1))
    first = output[0] if isinstance(output, tuple) else output
    err = float((o.detach() - first.detach()).abs().max())
    if err > 1e-3 * max(1.0, float(first.detach().abs().max())):
        raise UnsupportedError(f"the explicit attention of {type(module).__name__} misses the model's output by {err:.2e}")
    o = first.detach() + (o - o.detach())  # the model's own values, the rule's gradient
    return (o,) + tuple(output[1:]) if isinstance(output, tuple) else o


def _attnlrp_hook(module, args, kwargs, output):
    return _attn_hook(module, args, kwargs, output, attnlrp=True)


def lrp_rules(hooks, adapter, attention: str = "ah", norm: bool = True, mlp: bool = True) -> None:
    """Install the LRP rules on every decoder layer of ``adapter``'s language model and its final norm,
    on ``hooks`` (a :class:`~vlinterp.core.hooks.RawHooks`, so they go when its block ends).
    ``attention``: ``ah`` (the AH rule), ``attnlrp`` (AttnLRP's softmax and uniform rules) or ``grad``
    (plain gradient); ``norm`` / ``mlp``: the LN rule / the identity and uniform rules of the MLPs
    (off: plain gradients there; for ablations)."""
    if attention not in ATTENTION:
        raise ConfigError(f"attention rule must be one of {', '.join(ATTENTION)}, got {attention!r}")
    L = adapter.num_layers("lm")
    for l in range(L):
        attn = adapter.module(f"blocks.{l}.attn")
        mlp_m = adapter.module(f"blocks.{l}.mlp")
        inside = {id(m) for m in attn.modules()} | {id(m) for m in mlp_m.modules()}
        for m in adapter.module(f"blocks.{l}.resid").modules():
            if norm and id(m) not in inside and is_norm(m):
                hooks.forward(m, _norm_hook)
        if attention != "grad":
            hooks.forward(attn, _attnlrp_hook if attention == "attnlrp" else _attn_hook, with_kwargs=True)
        if mlp:
            hooks.forward(mlp_m, _mlp_hook)
    final = adapter.module("norm")
    if not is_norm(final):
        raise UnsupportedError(f"LRP rules do not know the final norm {type(final).__name__}")
    if norm:
        hooks.forward(final, _norm_hook)


__all__ = ["lrp_rules", "rule_set", "is_norm", "RULES", "ATTENTION"]
