"""SAE-V acceptance numbers on shapes-llava (issue 6): FVU/L0, splice accuracy, colour features,
cross-modal features, data filtering vs random weights.

    python benchmarks/sae_v.py [--model shapes-llava] [--site blocks.2.resid] [--json out.json]
"""
from __future__ import annotations

import argparse
import json

import torch

import vlinterp as vi
from vlinterp.eval.saev import shapes_saev


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-llava")
    ap.add_argument("--site", default="blocks.2.resid")
    ap.add_argument("--d-sae", type=int, default=512)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    r = shapes_saev(vi.load(a.model), a.site, d_sae=a.d_sae, k=a.k, progress=True)
    r.pop("sae")
    print(json.dumps(r, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
