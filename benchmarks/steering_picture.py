"""Draw ``assets/steering_before_after.png``: held-out POPE-adversarial questions about absent
partner objects that the unsteered shapes-llava answers "yes" to, with the answers under
mean-difference steering (strength chosen on the probe split).

    python benchmarks/steering_picture.py [--out assets/steering_before_after.png] [--k 4]
"""
from __future__ import annotations

import argparse

import torch

import vlinterp as vi
from vlinterp.data.questions import pope_split
from vlinterp.metrics.pope import choose
from vlinterp.steering import MeanDiff
from vlinterp.viz.steer_plot import before_after


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="assets/steering_before_after.png")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--alpha", default="auto")
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = vi.load("shapes-llava")
    md = MeanDiff.fit(m, n=256, alpha="auto" if a.alpha == "auto" else float(a.alpha))
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
    before_after(rows, a.out, title=f"absent partner objects: mean-difference steering (α {md.alpha}) fixes "
                                    f"{len(fixed)} of {len(hall)} hallucinated yeses")
    print(f"{len(hall)} hallucinated, {len(fixed)} fixed by steering (alpha {md.alpha}) -> {a.out}")


if __name__ == "__main__":
    main()
