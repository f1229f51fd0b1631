"""Is the part of the last token's attention output that reads the image (or the text) a better
IRI source than the whole output?

A layer's attention output at the last position splits exactly by key position:
``o = W_O sum_j p_j v_j`` = the image keys' part + the text keys' part. This injects one part of a
source layer's output into the attention output of the same or a later layer (IRI's
norm-preserving rule, strengths 0.5-4 and -1) and prints the best POPE changes on the
calibration split (128 questions per negative type), within the 1-point random tolerance and
overall.

    python benchmarks/iri_parts.py [--model shapes-llava] [--n 128] [--parts image,text]
"""
from __future__ import annotations

import argparse
import contextlib

import torch

import vlinterp as vi
from vlinterp.core.attention import hf_self_attention

from iri_grid import calib_accuracy  # run as a script: benchmarks/ is on the path

LAMBDAS = (0.5, 1.0, 2.0, 4.0, -1.0)


@contextlib.contextmanager
def part_injection(adapter, src: int, tgt: int, lam: float, part: str):
    """Prompt pass only (the POPE answer is its last position; left padding, so that is ``T-1``):
    keep ``part`` of layer ``src``'s attention output at the last position ``[B, D]`` and inject it
    into layer ``tgt``'s. Hooks are removed on exit, exceptions included."""
    model = adapter.model
    img_id = model.config.image_token_index
    st: dict = {}

    def ids(mod, args, kwargs):
        st["ids"] = kwargs.get("input_ids")

    def keep(mod, args, kwargs, out):
        h = kwargs.get("hidden_states", args[0] if args else None)
        B, T, _ = h.shape
        p = hf_self_attention(mod, args, kwargs)[:, :, -1]  # [B, H, T]
        v = mod.v_proj(h).view(B, T, -1, mod.head_dim).transpose(1, 2)  # [B, Hkv, T, hd]
        v = v.repeat_interleave(p.shape[1] // v.shape[1], dim=1)
        img = (st["ids"] == img_id).to(p.dtype)  # [B, T]
        w = img if part == "image" else 1 - img
        st["a"] = mod.o_proj(torch.einsum("bht,bhtd->bhd", p * w[:, None], v).reshape(B, -1))  # [B, D]

    def inject(mod, args, out):
        t = out[0]
        x = t[:, -1]
        y = x + lam * st["a"]
        t = t.clone()
        t[:, -1] = y * x.norm(dim=-1, keepdim=True) / y.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return (t,) + tuple(out[1:])

    with adapter.raw_hooks() as h:
        h.pre(model, ids, with_kwargs=True)
        h.forward(f"blocks.{src}.attn", keep, with_kwargs=True)
        h.forward(f"blocks.{tgt}.attn", inject)
        yield


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="shapes-llava")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--parts", default="image,text")
    a = ap.parse_args()
    torch.set_num_threads(2)
    m = vi.load(a.model)
    L = m.num_layers("lm")

    def acc():
        return calib_accuracy(m, a.n)

    base = acc()
    print(f"unsteered: adversarial {base['adversarial']:.3f}, random {base['random']:.3f}")
    for part in a.parts.split(","):
        res = []
        for s in range(L):
            for t in range(s, L):
                for lam in LAMBDAS:
                    with part_injection(m, s, t, lam, part):
                        r = acc()
                    res.append((r["adversarial"] - base["adversarial"], r["random"] - base["random"], s, t, lam))
        print(f"{part} part, {len(res)} settings; best adversarial change with random within -1 point:")
        for d_adv, d_rand, s, t, lam in sorted((x for x in res if x[1] >= -0.01), reverse=True)[:3]:
            print(f"  adversarial {100 * d_adv:+.1f} pt, random {100 * d_rand:+.1f} pt: attn@{s} -> attn@{t}, lambda {lam}")
        print(f"{part} part, best adversarial change overall:")
        for d_adv, d_rand, s, t, lam in sorted(res, reverse=True)[:3]:
            print(f"  adversarial {100 * d_adv:+.1f} pt, random {100 * d_rand:+.1f} pt: attn@{s} -> attn@{t}, lambda {lam}")


if __name__ == "__main__":
    main()
