"""What ``vlinterp info`` shows of a model: its hook sites and the token layout of a sample input.

>>> d = describe(vi.load("tiny:llava"))
>>> d["sites"][:3], d["site_groups"], d["layouts"]["lm"]["grids"]
"""
from __future__ import annotations

import re


def sample_inputs(kind: str) -> dict:
    """``prepare`` keyword arguments of a sample input for an adapter of ``kind`` (vlm, vit, clip,
    diffusion): a 128x128 scene with a red circle and a blue square, and a question or caption."""
    import numpy as np
    from PIL import Image

    a = np.full((128, 128, 3), 30, np.uint8)
    yy, xx = np.mgrid[:128, :128]
    a[(yy - 40) ** 2 + (xx - 40) ** 2 < 15**2] = (220, 40, 40)
    a[70:105, 70:105] = (50, 90, 230)
    img = Image.fromarray(a)
    if kind == "vit":
        return {"images": [img]}
    if kind == "diffusion":
        return {"text": ["a red circle and a blue square"]}
    if kind == "clip":
        return {"images": [img], "text": ["a red circle and a blue square."]}
    return {"images": [img], "text": ["is there a red circle?"]}


def site_groups(sites: list[str]) -> dict[str, list[str]]:
    """Sites grouped by their name with layer numbers as ``N`` (``blocks.N.attn`` -> its sites)."""
    groups: dict[str, list[str]] = {}
    for s in sites:
        key = re.sub(r"\.\d+\.", ".N.", s)
        key = re.sub(r"\.\d+$", ".N", key)
        groups.setdefault(key, []).append(s)
    return groups


def describe(m, name: str | None = None) -> dict:
    """``{"model", "family", "kind", "class", "parameters", "sites", "site_groups", "main_stream",
    "layouts"}`` of adapter ``m``; ``layouts[stream]``: the sample input's layout (row 0) with
    ``grids`` per image."""
    batch = m.prepare(**sample_inputs(m.kind))
    layouts = {}
    for stream, L in batch.layouts.items():
        d = L.to_dict(b=0)
        d.pop("spans", None)
        d["grids"] = [[t["grid"] for t in im["tiles"]] for im in d["images"]]
        layouts[stream] = d
    return {
        "model": name or m.name,
        "family": m.family,
        "kind": m.kind,
        "class": type(m.model).__name__,
        "parameters": int(sum(p.numel() for p in m.model.parameters())),
        "sites": m.sites(),
        "site_groups": {k: len(v) for k, v in site_groups(m.sites()).items()},
        "main_stream": m.main_stream,
        "layouts": layouts,
    }


def describe_text(info: dict) -> str:
    """:func:`describe`'s dict as the lines ``vlinterp info`` prints."""
    lines = [f"{info['model']}: {info['class']} ({info['family']}), {info['parameters']:,} parameters", "hook sites:"]
    for k, v in site_groups(info["sites"]).items():
        lines.append(f"  {k:<28} x{len(v)}" if len(v) > 1 else f"  {v[0]}")
    for stream, d in info["layouts"].items():
        c = d["counts"][0]
        grids = "; ".join(" + ".join(f"{g[0]}x{g[1]}" for g in gs) for gs in d["grids"]) or "-"
        lines.append(f"layout[{stream}] T={d['shape'][1]}: " + ", ".join(f"{k}={v}" for k, v in c.items() if v) + f"; image grids: {grids}")
    return "\n".join(lines)


__all__ = ["sample_inputs", "site_groups", "describe", "describe_text"]
