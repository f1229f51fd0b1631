"""`vlinterp info MODEL [--json PATH]`: hook sites and the token layout of a sample input."""
from __future__ import annotations

import argparse

from ..cli import register


def sample_inputs(family: str) -> dict:
    """A sample input for ``family``: a 128x128 shapes-world-like scene and a question."""
    import numpy as np
    from PIL import Image

    a = np.full((128, 128, 3), 30, np.uint8)
    yy, xx = np.mgrid[:128, :128]
    a[(yy - 40) ** 2 + (xx - 40) ** 2 < 15**2] = (220, 40, 40)
    a[70:105, 70:105] = (50, 90, 230)
    img = Image.fromarray(a)
    if family == "vit":
        return {"images": [img]}
    if family == "diffusion":
        return {"text": ["a red circle and a blue square"]}
    if family == "clip":
        return {"images": [img], "text": ["a red circle and a blue square."]}
    return {"images": [img], "text": ["is there a red circle?"]}


def _site_groups(sites: list[str]) -> dict[str, list[str]]:
    import re

    groups: dict[str, list[str]] = {}
    for s in sites:
        key = re.sub(r"\.\d+\.", ".N.", s)
        key = re.sub(r"\.\d+$", ".N", key)
        groups.setdefault(key, []).append(s)
    return groups


def _info_add(p: argparse.ArgumentParser):
    from .args import add_json

    p.add_argument("model", help="tiny:<family>, a zoo organism name, or a local model path")
    add_json(p, help="also write the sites and layouts as JSON to this file")


def _info_run(args) -> int:
    import vlinterp as vi

    m = vi.load(args.model)
    batch = m.prepare(**sample_inputs(m.kind))
    layouts = {}
    for stream, L in batch.layouts.items():
        d = L.to_dict(b=0)
        d.pop("spans", None)
        d["grids"] = [[t["grid"] for t in im["tiles"]] for im in d["images"]]
        layouts[stream] = d
    info = {
        "model": args.model,
        "family": m.family,
        "class": type(m.model).__name__,
        "parameters": int(sum(p.numel() for p in m.model.parameters())),
        "sites": m.sites(),
        "site_groups": {k: len(v) for k, v in _site_groups(m.sites()).items()},
        "main_stream": m.main_stream,
        "layouts": layouts,
    }
    if args.json:
        from ..core.io import write_json

        write_json(args.json, info, indent=2, flag="--json")
    print(f"{info['model']}: {info['class']} ({info['family']}), {info['parameters']:,} parameters")
    print("hook sites:")
    for k, v in _site_groups(m.sites()).items():
        print(f"  {k:<28} x{len(v)}" if len(v) > 1 else f"  {v[0]}")
    for stream, d in layouts.items():
        c = d["counts"][0]
        grids = "; ".join(" + ".join(f"{g[0]}x{g[1]}" for g in gs) for gs in d["grids"]) or "-"
        print(f"layout[{stream}] T={d['shape'][1]}: " + ", ".join(f"{k}={v}" for k, v in c.items() if v) + f"; image grids: {grids}")
    return 0


register("info", "hook sites and the token layout of a sample input", _info_add, _info_run)


