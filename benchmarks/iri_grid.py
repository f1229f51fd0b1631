"""Does any IRI configuration lift POPE-adversarial accuracy within a point of random accuracy?

Every source -> target pair of layers and components (attention / MLP sources; attention, MLP or
residual targets) and the RR-ranked configurations of ``IRI.from_rr`` (1-2 sources, 1-2 targets,
per component or both), each at strengths 0.5-4, on the calibration split (128 questions per
negative type). Prints the best changes within the 1-point random tolerance and the best overall.

    python benchmarks/iri_grid.py [--model shapes-llava] [--n 128] [--lambdas=-2,-1,-0.5]

Negative strengths subtract a source's output instead of adding it.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

import vlinterp as vi
from vlinterp.core.errors import DataError
from vlinterp.eval.pope import pope
from vlinterp.eval.steer import fit_items
from vlinterp.steering import IRI


def calib_accuracy(m, n: int) -> dict[str, float]:
    """POPE accuracy on ``n`` calibration questions per negative type: ``{adversarial, random}``."""
    return {k: pope(m, k, "iri-calib", n, 1)["accuracy"] for k in ("adversarial", "random")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-llava")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--lambdas", default="0.5,1,2,4")
    a = ap.parse_args()
    torch.set_num_threads(2)
    m = vi.load(a.model)
    L = m.num_layers("lm")
    rr = IRI.layer_rr(m, fit_items("iri", "iri-calib", 32, 0, calib=False)[0])
    print("last-token RR per layer:", {k: np.round(v, 3).tolist() for k, v in rr.items()})

    def acc():
        return calib_accuracy(m, a.n)

    base = acc()
    print(f"unsteered: adversarial {base['adversarial']:.3f}, random {base['random']:.3f}")
    cands = []
    for comps in (("attn",), ("mlp",), ("attn", "mlp")):
        for ns, nt in ((1, 1), (2, 1), (1, 2), (2, 2)):
            try:
                cands.append((f"from_rr {'+'.join(comps)} sources {ns} targets {nt}", IRI.from_rr(rr, ns, nt, components=comps)))
            except DataError:  # no positive-RR source for that component
                pass
    for sl in range(L - 1):
        for tl in range(sl + 1, L):
            for sc in ("attn", "mlp"):
                for tc in ("attn", "mlp", "resid"):
                    cands.append((f"{sc}@{sl} -> {tc}@{tl}", IRI([(sc, sl, 1.0)], [(tc, tl)])))
    res = []
    for name, iri in cands:
        for lam in (float(x) for x in a.lambdas.split(",")):
            with iri.replace(lam=lam).applied(m):
                r = acc()
            res.append((r["adversarial"] - base["adversarial"], r["random"] - base["random"], name, lam))
    print(f"{len(res)} configurations; best adversarial change with random within -1 point:")
    for d_adv, d_rand, name, lam in sorted((x for x in res if x[1] >= -0.01), reverse=True)[:5]:
        print(f"  adversarial {100 * d_adv:+.1f} pt, random {100 * d_rand:+.1f} pt: {name}, lambda {lam}")
    print("best adversarial change overall:")
    for d_adv, d_rand, name, lam in sorted(res, reverse=True)[:5]:
        print(f"  adversarial {100 * d_adv:+.1f} pt, random {100 * d_rand:+.1f} pt: {name}, lambda {lam}")


if __name__ == "__main__":
    main()
