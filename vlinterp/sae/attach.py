"""SAEs on adapter sites: save/load (SAELens format both ways), width checks, and edits that
splice the reconstruction in or scale features.

``save_sae`` writes SAELens's inference format (``cfg.json`` + ``sae_weights.safetensors``,
loadable with ``sae_lens.SAE.load_from_disk``) plus ``vlinterp.json`` (site, model, training
settings), as one output directory (:func:`vlinterp.core.io.output_dir`: files the user put there
stay). ``cfg.json``'s ``metadata`` names the hook the way SAELens attaches it: ``hook_name`` is the
TransformerLens name of the site (``blocks.2.resid`` -> ``blocks.2.hook_resid_post``, ``.attn`` ->
``hook_attn_out``, ``.mlp`` -> ``hook_mlp_out``, ``embed`` -> ``hook_embed``), so
``SAETransformerBridge.add_sae`` / ``HookedSAETransformer.add_sae`` splice it where vlinterp does;
``model_name`` is the model it was trained on and ``vlinterp_site`` the site's vlinterp name.
Sites TransformerLens has no name for (vision tower, UNet) keep ``hook_name`` = the vlinterp site.
``load_sae`` reads any SAELens SAE directory (ours or SAELens's own).
"""
from __future__ import annotations

import json
import os
import re

import torch

from ..core.errors import ConfigError, LoadError, ShapeMismatchError
from ..core.layout import IMAGE, PAD, TEXT

_TL_HOOKS = {"resid": "hook_resid_post", "attn": "hook_attn_out", "mlp": "hook_mlp_out"}


def tl_hook_name(site: str) -> str | None:
    """The TransformerLens / SAELens hook of a language-model site, or ``None`` when it has none."""
    m = re.fullmatch(r"blocks\.(\d+)\.(resid|attn|mlp)", str(site))
    if m:
        return f"blocks.{m.group(1)}.{_TL_HOOKS[m.group(2)]}"
    return "hook_embed" if site == "embed" else None


def set_metadata(sae, site: str | None, model: str | None) -> None:
    """Write what SAELens reads to attach ``sae`` (``cfg.metadata.hook_name``, ``model_name``) and the
    vlinterp site into its config (a model name SAELens already set is kept)."""
    md = sae.cfg.metadata
    if site:
        md.hook_name = tl_hook_name(site) or site
        md.vlinterp_site = site
    if model and md.get("model_name") is None:
        md.model_name = model


def save_sae(sae, path: str, meta: dict | None = None) -> str:
    """Write ``sae`` (training or inference SAELens SAE) to ``path`` in SAELens's inference format,
    with the metadata SAELens attaches it by (see the module doc)."""
    from ..core.io import output_dir, write_json

    info = {**getattr(sae, "vlinterp_meta", {}), **(meta or {})}
    set_metadata(sae, info.get("site"), info.get("model"))
    with output_dir(path) as tmp:
        (sae.save_inference_model if hasattr(sae, "save_inference_model") else sae.save_model)(tmp)
        write_json(os.path.join(tmp, "vlinterp.json"), info)
    return path


def load_sae(path: str):
    """A SAELens inference SAE from a directory (``cfg.json`` + weights); ``.vlinterp_meta`` holds
    our ``vlinterp.json`` when present."""
    from sae_lens import SAE

    if not os.path.isfile(os.path.join(path, "cfg.json")):
        raise LoadError(f"{path} is not an SAE directory (no cfg.json)")
    sae = SAE.load_from_disk(path)
    meta_path = os.path.join(path, "vlinterp.json")
    sae.vlinterp_meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    return sae.eval()


def _mask(t: torch.Tensor, layout, positions: str) -> torch.Tensor:
    """``[B, T]`` bool: which positions of ``t`` the SAE acts on."""
    B, T = t.shape[:2]
    if layout is None or tuple(layout.shape) != (B, T):  # decoding steps: the new token(s)
        return torch.ones(B, T, dtype=torch.bool, device=t.device)
    mod = torch.as_tensor(layout.modality, device=t.device)
    m = mod != PAD
    if positions == "image":
        m &= mod == IMAGE
    elif positions == "text":
        m &= mod != IMAGE
    elif positions == "content":
        m &= (mod == IMAGE) | (mod == TEXT)
    elif positions != "all":
        raise ConfigError(f"positions must be all, content, image or text, got {positions!r}")
    return m


def _check_width(sae, t: torch.Tensor, site: str = "") -> None:
    d = int(sae.cfg.d_in)
    if t.shape[-1] != d:
        raise ShapeMismatchError(f"SAE width mismatch at {site or 'the site'}: the SAE reads d_in={d} "
                                 f"but the activations have width {t.shape[-1]}")


def splice_edit(sae, site: str = "", positions: str = "all"):
    """Edit replacing the site's activations by the SAE reconstruction ``decode(encode(x))``
    at ``positions`` (``all`` non-padding tokens, ``image`` or ``text``)."""

    def fn(t, layout):
        _check_width(sae, t, site)
        m = _mask(t, layout, positions)
        x = t[m]
        with torch.no_grad():
            r = sae.decode(sae.encode(x.float())).to(t.dtype)
        t = t.clone()
        t[m] = r
        return t

    return fn


def feature_edit(sae, features: dict[int, float], site: str = "", positions: str = "all", mode: str = "scale"):
    """Edit moving features: ``mode="scale"`` multiplies feature ``k``'s activation by
    ``features[k]`` (adds ``(s - 1) f_k W_dec[k]`` to the activations, the SAE error kept);
    ``mode="add"`` adds ``features[k] * W_dec[k]`` wherever ``positions`` says."""

    def fn(t, layout):
        _check_width(sae, t, site)
        m = _mask(t, layout, positions)
        x = t[m].float()
        W = sae.W_dec.detach()
        delta = torch.zeros_like(x)
        with torch.no_grad():
            f = sae.encode(x) if mode == "scale" else None
            for k, s in features.items():
                if mode == "scale":
                    delta += (float(s) - 1.0) * f[:, k:k + 1] * W[k]
                else:
                    delta += float(s) * W[k]
        t = t.clone()
        t[m] = (x + delta).to(t.dtype)
        return t

    return fn


__all__ = ["save_sae", "load_sae", "splice_edit", "feature_edit", "tl_hook_name", "set_metadata"]
