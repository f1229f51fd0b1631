"""Draw ``assets/steering_before_after.png``: held-out POPE-adversarial questions about absent
partner objects that the unsteered shapes-llava answers "yes" to, with the answers under
steering (patch-probe grounding by default; strengths chosen on the probe split).

    python benchmarks/steering_picture.py [--out assets/steering_before_after.png] [--k 4] [--alpha 3 --beta 1 --gate 1]
    python benchmarks/steering_picture.py --captions 512 [--out assets/steering_captions.png]

``--captions N`` draws free captions instead: of N held-out scenes, those whose unsteered caption
names an absent object (CHAIR), captioned again with steering on. ``--method probe|save|meandiff`` steers
with probe steering, SAVE (its default strength) or mean-difference steering instead.
"""
from __future__ import annotations

import argparse

import torch

import vlinterp as vi
from vlinterp.data.questions import pope_split
from vlinterp.eval.steer import fit
from vlinterp.metrics.pope import choose
from vlinterp.viz.steer_plot import before_after


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="assets/steering_before_after.png")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--alpha", default="auto")
    ap.add_argument("--beta", default=None, help="grounding's caption strength (default: --alpha)")
    ap.add_argument("--gate", type=float, default=0.0, help="grounding's gate (with --alpha; auto fits choose it)")
    ap.add_argument("--captions", type=int, default=0, help="draw free captions of this many scenes instead")
    ap.add_argument("--method", default="ground", choices=["ground", "probe", "meandiff", "save"])
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = vi.load("shapes-llava")
    alpha = "auto" if a.alpha == "auto" else float(a.alpha)
    if a.method == "save":
        md = fit("save", m, progress=True)
    elif a.method == "ground":
        md = fit("ground", m, progress=True) if alpha == "auto" else \
            fit("ground", m, alpha=alpha, beta=float(a.beta or a.alpha), gate=a.gate, progress=True)
    elif a.method == "probe":
        md = fit("probe", m, alpha=alpha, progress=True)
    else:
        md = fit("meandiff", m, n=256, alpha=alpha, progress=True)
    if a.captions:
        return caption_picture(m, md, a.captions, a.k, a.out if a.out != ap.get_default("out") else "assets/steering_captions.png")
    items = [(s, qa) for s, qa in pope_split("test", 256, 11, "adversarial") if qa.answer == "no"]
    q = [(s.pil(), qa.question) for s, qa in items]
    before = choose(m, q, ["yes", "no"])
    with md.applied(m):
        after = choose(m, q, ["yes", "no"])
    hall = [i for i, b in enumerate(before) if b == "yes"]
    fixed = [i for i in hall if after[i] == "no"]
    kept = [i for i in hall if after[i] == "yes"]
    pick = (fixed + kept)[: a.k]
    rows = [(items[i][0].pil(), items[i][1].question, "no", before[i], after[i]) for i in pick]
    before_after(rows, a.out, title=f"absent partner objects: {type(md).__name__} steering ({strength(md)}) fixes "
                                    f"{len(fixed)} of {len(hall)} hallucinated yeses")
    print(f"{len(hall)} hallucinated, {len(fixed)} fixed by steering (alpha {md.alpha}) -> {a.out}")


def caption_picture(m, md, n: int, k: int, out: str) -> None:
    from vlinterp.data.shapes import make_split
    from vlinterp.eval.chair import shapes_chair as chair
    from vlinterp.eval.steer import captions

    scenes = make_split("chair", n, 11)
    plain = captions(None, m, [s.pil() for s in scenes])
    bad = [i for i, (c, s) in enumerate(zip(plain, scenes)) if chair([c], [s])["chair_s"] > 0]
    steered = captions(md, m, [scenes[i].pil() for i in bad])
    clean = lambda c, s: chair([c], [s])["chair_s"] == 0  # noqa: E731
    fixed = [j for j, i in enumerate(bad) if clean(steered[j], scenes[i])]
    order = fixed + [j for j in range(len(bad)) if j not in fixed]
    rows = [(scenes[bad[j]].pil(), "describe the image.", scenes[bad[j]], plain[bad[j]], steered[j]) for j in order[:k]]
    before_after(rows, out, judge=clean, wrap=30,
                 title=f"free captions naming an absent object (red): {len(bad)} of {n}; "
                       f"{type(md).__name__} steering ({strength(md)}) cleans {len(fixed)}")
    print(f"{len(bad)} of {n} captions hallucinate, {len(fixed)} clean with {type(md).__name__} ({strength(md)}) -> {out}")


def strength(md) -> str:
    """The strength(s) a method steers with, for titles (grounding: α on yes/no, β on caption words)."""
    return f"α {md.alpha:g}" + (f", β {md.beta:g}, gate {md.gate:g}" if hasattr(md, "gate") else "")


if __name__ == "__main__":
    main()
