"""SAE colour steering on shapes-diffusion (issue 6): the share of steered samples whose object
shapes-vit judges to be the target colour, beside the unsteered share (the baseline).

For each site: harvest the site's activations while sampling single-object prompts, train a
top-k SAE on them, pick one feature per colour (:func:`vlinterp.eval.sae_diffusion.colour_feature`),
then sample prompts of colour ``c+1`` steered to colour ``c`` for all six colours.

    python benchmarks/diffusion_steering.py [--sites unet.mid.0 unet.up.1] [--modes add swap]
        [--alphas 1 2 4] [--n-per-target 16] [--seed 5] [--json out.json]

Sites: any UNet block (``unet.mid.0``, ``unet.up.1``: h-space), cross-attention outputs
(``unet.xattn.k``) or the text encoder's output (``text.final``).
"""
from __future__ import annotations

import argparse
import json

import torch

import vlinterp as vi
from vlinterp.eval.sae_diffusion import colour_feature, harvest_hspace, steering_success
from vlinterp.sae.train import train_sae
from vlinterp.zoo import load_organism


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-diffusion")
    ap.add_argument("--sites", nargs="+", default=["unet.mid.0", "unet.up.1"])
    ap.add_argument("--modes", nargs="+", default=["add", "swap"])
    ap.add_argument("--alphas", nargs="+", type=float, default=[1.0, 2.0, 4.0])
    ap.add_argument("--harvest-n", type=int, default=96)
    ap.add_argument("--harvest-steps", type=int, default=10)
    ap.add_argument("--d-sae", type=int, default=256)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--sae-steps", type=int, default=1500)
    ap.add_argument("--n-per-target", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="sampler steps when steering")
    ap.add_argument("--seed", type=int, default=5, help="noise seed of the steered and unsteered samples")
    ap.add_argument("--json")
    a = ap.parse_args()
    m = vi.load(a.model)
    judge = load_organism("shapes-vit")
    out = []
    for site in a.sites:
        store = harvest_hspace(m, n=a.harvest_n, steps=a.harvest_steps, site=site)
        sae = train_sae(store, d_sae=a.d_sae, k=a.k, steps=a.sae_steps, batch_size=256, image_fraction=None)
        feats = colour_feature(sae, store)
        for mode in a.modes:
            for alpha in a.alphas:
                r = steering_success(m, sae, feats, judge, n_per_target=a.n_per_target, alpha=alpha, steps=a.steps,
                                     mode=mode, site=site, progress=False, seed=a.seed)
                r.update(site=site, features={c: f["feature"] for c, f in feats.items()})
                out.append(r)
                print(f"{site:12s} {mode:5s} alpha {alpha:4.1f}: steered {r['success']:.3f} "
                      f"(unsteered {r['unsteered']:.3f}, n={r['n']})", flush=True)
    best = max(out, key=lambda r: r["success"])
    print(f"best: {best['site']} {best['mode']} alpha {best['alpha']}: {best['success']:.3f} vs unsteered "
          f"{best['unsteered']:.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
