"""The SAE-V acceptance run on the shapes world: one function, used by the tests and
``benchmarks/sae_v.py``.

Harvest a site over training scenes (captions and POPE questions alternating) and held-out
scenes, train a TopK SAE through SAELens, then measure on held-out data: FVU and L0, the POPE
accuracy with the SAE spliced in, the best patch-colour feature per colour (AUROC), how many
colours have a cross-modal feature (patch AUROC and colour-word AUROC both >= 0.9), and the
SAE-V data-filtering AUROC on a caption set with ``swap`` of the captions moved to the wrong
image, beside a baseline with random feature weights.
"""
from __future__ import annotations

import numpy as np

from ..data.questions import caption
from ..data.shapes import make_split
from . import analysis as A
from .quality import reconstruction, splice_effect
from .store import ActivationStore, shapes_items
from .train import train_sae


def swapped_captions(scenes, swap: float = 0.3, seed: int = 0):
    """Items ``(image, "describe the image.", caption)`` with ``swap`` of the captions taken from
    another scene, and the set of mismatched sample ids."""
    rng = np.random.default_rng(seed)
    n = len(scenes)
    bad = set(rng.choice(n, int(round(swap * n)), replace=False).tolist())
    items = []
    for i, s in enumerate(scenes):
        if i in bad:
            j = (i + 1 + int(rng.integers(n - 1))) % n
            while caption(scenes[j]) == caption(s):
                j = (j + 1) % n
            items.append((s.pil(), "describe the image.", caption(scenes[j])))
        else:
            items.append((s.pil(), "describe the image.", caption(s)))
    return items, bad


def shapes_saev(adapter, site: str = "blocks.2.resid", n_train: int = 800, n_heldout: int = 200, d_sae: int = 512,
                k: int = 32, steps: int = 4000, seed: int = 0, splice_n: int = 256, progress: bool = False) -> dict:
    tr = ActivationStore.harvest(adapter, site, shapes_items("sae-train", n_train, seed, "mixed"), batch_size=32,
                                 progress=progress, keep="content")
    ho_scenes = make_split("sae-heldout", n_heldout, seed + 1)
    ho = ActivationStore.harvest(adapter, site, [(s.pil(), "describe the image.", caption(s)) for s in ho_scenes],
                                 batch_size=32, progress=progress, keep="content")
    sae = train_sae(tr, d_sae=d_sae, k=k, steps=steps, batch_size=256, image_fraction=0.5, seed=seed, progress=progress)
    out = {"site": site, "d_sae": d_sae, "k": k, "steps": steps, "reconstruction": reconstruction(sae, ho.acts, ho.rows["modality"]),
           "splice": splice_effect(adapter, sae, site, n=splice_n)}
    F = A.encode_rows(sae, ho.acts)
    out["colours"] = A.colour_features(F, ho, ho_scenes, getattr(adapter, "tokenizer", None))
    if getattr(adapter, "tokenizer", None) is not None:
        out["colour_alignment"] = A.colour_alignment(ho, ho_scenes, adapter.tokenizer)
    Ftr = A.encode_rows(sae, tr.acts)
    omega = A.cross_modal_weights(Ftr, tr.acts, tr.rows["modality"])
    items, bad = swapped_captions(ho_scenes, 0.3, seed)
    fs = ActivationStore.harvest(adapter, site, items, batch_size=32, progress=progress, keep="content")
    Ff = A.encode_rows(sae, fs.acts)
    score = A.sample_scores(Ff, fs.rows["modality"], fs.rows["sample"], omega)
    rand = np.random.default_rng(seed + 7).random(len(omega))
    out["filter"] = {"auroc": A.filter_auroc(score, bad),
                     "random_weights_auroc": A.filter_auroc(A.sample_scores(Ff, fs.rows["modality"], fs.rows["sample"], rand), bad),
                     "cross_modal_features": int((omega > 0).sum()), "mismatched": len(bad), "n": len(items)}
    out["sae"] = sae
    return out


__all__ = ["shapes_saev", "swapped_captions"]
