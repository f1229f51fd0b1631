"""Prototype push: the discriminative push (the default) against ProtoPNet's nearest-window push,
side by side in one run: push time as a ratio, and the pointing game, consistency and accuracy
each gives on held-out scenes.

    python benchmarks/prototypes_push.py [--model shapes-vit] [--n 2000] [--eval-n 300] [--eval-seed 81]

Both heads come from ``fit_shapes`` with the same seed, so they share the warm-up (seeded, on the
same features) and differ only from the push on.
"""
from __future__ import annotations

import argparse

import torch

import vlinterp as vi
from vlinterp.eval.protos import evaluate_shapes, fit_shapes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-vit")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--eval-n", type=int, default=300)
    ap.add_argument("--eval-seed", type=int, default=81)
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = vi.load(a.model)
    pms = {k: fit_shapes(m, n=a.n, push_mode=k, progress=False) for k in ("nearest", "discriminative")}
    print(f"{a.model} at {pms['nearest'].site}, {a.n} training scenes; eval {a.eval_n} scenes of seed {a.eval_seed}")
    t_near = pms["nearest"].info["push_seconds"]
    for k, pm in pms.items():
        r = evaluate_shapes(pm, a.eval_n, a.eval_seed)
        loc, t = r["localisation"], pm.info["push_seconds"]
        print(f"{k:15s} push {t:6.2f} s ({t / t_near:6.1f}x nearest), whole fit {pm.info['train_seconds']:6.1f} s  "
              f"pointing {loc['pointing_game']:.3f} (by scale {', '.join(f'{s}: {v:.2f}' for s, v in loc['pointing_game_by_scale'].items())})  "
              f"consistent {r['consistency']['share_consistent']:.2f}  accuracy {r['head']['mean_label_accuracy']:.3f} "
              f"(probe {r['probe']['mean_label_accuracy']:.3f})")


if __name__ == "__main__":
    main()
