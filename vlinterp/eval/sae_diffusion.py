"""SAE colour steering on the shapes-diffusion organism: single-object prompts of the shapes world,
one SAE feature per colour, and how often steering turns the sample's colour (judged by the
``shapes-vit`` organism). Built on the prompt-level methods of :mod:`vlinterp.sae.diffusion`.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..data.shapes import COLOURS, PAIRS
from ..sae.diffusion import SITE, harvest_prompts, label_features, steer_edit, steer_samples, swap_edit
from ..zoo.diffusion_data import caption
from ..zoo.recipe_diffusion import SAMPLING

GUIDANCE = SAMPLING["guidance_scale"]  # sample as the organism does


def harvest_hspace(adapter, n: int = 96, steps: int = 10, seed: int = 0, batch_size: int = 48, progress: bool = True,
                   site: str = SITE):
    """An activation store of ``site`` rows from sampling ``n`` single-object prompts (all 24 pairs
    cycled) with ``steps`` sampler steps (guidance ``GUIDANCE``). ``meta["colour"]`` (= ``labels``)
    ``[n]``: colour index of sample ``i``'s prompt."""
    pairs = [PAIRS[(i + seed) % len(PAIRS)] for i in range(n)]
    labels = [COLOURS.index(p[0]) for p in pairs]
    return harvest_prompts(adapter, [caption([p]) for p in pairs], labels, steps=steps, seed=seed, guidance_scale=GUIDANCE,
                           batch_size=batch_size, site=site, progress=progress,
                           meta={"colour": labels, "pairs": [list(p) for p in pairs]})


def colour_feature(sae, store, score: str = "rate") -> dict[str, dict]:
    """One distinct feature per colour (:func:`vlinterp.sae.diffusion.label_features` over the colours)."""
    return label_features(sae, store, list(COLOURS), score)


def steer_colour(adapter, sae, features: dict, target: str, prompts: list, alpha: float = 2.0, steps: int = 20,
                 seed: int = 0, mode: str = "add", site: str | None = None):
    """Samples ``[n, 3, S, S]`` for ``(colour, shape)`` ``prompts`` steered to colour ``target``
    (:func:`vlinterp.sae.diffusion.steer_samples`, guidance ``GUIDANCE``)."""
    return steer_samples(adapter, sae, features, target, [caption([p]) for p in prompts], [p[0] for p in prompts], alpha,
                         steps, seed, mode, site, GUIDANCE)


def steering_success(adapter, sae, features: dict, judge, n_per_target: int = 16, alpha: float = 2.0, steps: int = 20,
                     seed: int = 5, progress: bool = True, mode: str = "add", site: str | None = None) -> dict:
    """For each target colour: prompts of another colour (cycled pairs), steered; the share of
    samples the judge (``shapes-vit``) sees in the target colour, and the unsteered share."""
    from ..zoo.recipe_diffusion import sample_prompts, vit_judge

    rows = {}
    hit, base_hit, total = 0, 0, 0
    for ci, target in enumerate(tqdm(COLOURS, desc="steering per target colour", disable=not progress)):
        src = COLOURS[(ci + 1) % len(COLOURS)]  # one source colour per target, so its feature can be removed
        prompts = [(src, PAIRS[j % len(PAIRS)][1]) for j in range(n_per_target)]
        x = steer_colour(adapter, sae, features, target, prompts, alpha, steps, seed, mode, site)
        x0 = sample_prompts(adapter, prompts, seed=seed, steps=steps, guidance_scale=GUIDANCE)
        got = [p is not None and p[0] == target for p in vit_judge(judge, x)]
        got0 = [p is not None and p[0] == target for p in vit_judge(judge, x0)]
        rows[target] = {"from": src, "steered": float(np.mean(got)), "unsteered": float(np.mean(got0))}
        hit, base_hit, total = hit + sum(got), base_hit + sum(got0), total + len(got)
    return {"success": hit / total, "unsteered": base_hit / total, "per_colour": rows, "alpha": alpha, "mode": mode,
            "n": total}


__all__ = ["harvest_hspace", "colour_feature", "steer_colour", "steering_success", "steer_edit", "swap_edit", "GUIDANCE", "SITE"]
