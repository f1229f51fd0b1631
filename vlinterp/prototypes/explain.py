"""The "this looks like that" figure for one image: for the top predicted classes, the prototypes
that contributed most (similarity x last-layer weight), each with its map on the test image and the
training patch it was pushed onto."""
from __future__ import annotations

import torch

from ..viz.overlay import overlay, write_bytes_atomic
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


def figure(pm, image, path: str, top_classes: int = 2, per_class: int = 3) -> str:
    """Write the explanation figure (PNG, atomically) and return ``path``."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.images import load_image

    img = load_image(image)
    ex = explanation(pm, img, top_classes, per_class)
    rows = ex["rows"]
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.2, 2.1 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows):
        ax_row[0].imshow(img)
        ax_row[0].set_title(f"{r['class']} (p={r['prob']:.2f})", fontsize=8)
        ax_row[1].imshow(overlay(img, r["map"]))
        ax_row[1].set_title(f"prototype {r['prototype']} ({r['prototype_class']}, scale {r['scale']}) here", fontsize=8)
        if r["source"] is not None:
            ax_row[2].imshow(r["source"])
        ax_row[2].set_title(f"looks like this training patch\nsim {r['similarity']:.2f} x w = {r['contribution']:.2f}", fontsize=8)
        for a in ax_row:
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle("this looks like that", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


__all__ = ["explanation", "figure"]
