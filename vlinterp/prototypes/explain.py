"""The "this looks like that" explanation of one image: for the top predicted classes, the
prototypes that contributed most (similarity x last-layer weight), each with its map on the test
image and the training patch it was pushed onto (the figure: :mod:`vlinterp.viz.proto_plot`)."""
from __future__ import annotations

import torch

from .maps import heatmap, pooled_map


@torch.no_grad()
def explanation(pm, image, top_classes: int = 2, per_class: int = 3) -> dict:
    """``{"probs": [K], "rows": [{class, prob, prototype, scale, similarity, contribution, map [H, W], source [48, 48, 3]}]}``."""
    pf = pm.features([image])
    out = pm.run(pf.feats)
    probs = torch.sigmoid(out["logits"][0])
    W = pm.head.last.weight
    rows = []
    for k in probs.argsort(descending=True)[:top_classes].tolist():
        contrib = out["score"][0] * W[k]
        top = float(contrib.max())
        for j in contrib.argsort(descending=True)[:per_class].tolist():
            if float(contrib[j]) < 0.02 * top and j != int(contrib.argmax()):
                continue  # prototypes that add (almost) nothing to this class
            grid_map = pooled_map(pm.head, pf.feats[0], j).numpy()
            rows.append({"class": pm.classes[k], "prob": float(probs[k]), "prototype": j, "scale": int(pm.head.proto_scale[j]),
                         "prototype_class": pm.classes[int(pm.head.proto_class[j])], "similarity": float(out["score"][0, j]),
                         "contribution": float(contrib[j]), "map": heatmap(grid_map, pf.boxes[0], pf.sizes[0], int(pm.head.proto_scale[j]), pf.grid),
                         "source": pm.sources["crop"][j].numpy() if "crop" in pm.sources else None})
    return {"probs": probs.tolist(), "rows": rows}


__all__ = ["explanation"]
