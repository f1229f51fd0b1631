"""`vlinterp ask IMAGE --prompt "..." [--model shapes-llava] [--json]`: greedy answer of a LLaVA-family model."""
from __future__ import annotations

import argparse
import json

from ..cli import register


def _add(p: argparse.ArgumentParser):
    p.add_argument("image", help="image file (any mode is converted to RGB)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--model", default="shapes-llava")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--json", action="store_true", help="print the answer with each answer token's probability")
    p.add_argument("--prune", metavar="METHOD:KEEP", help="answer with visual token pruning on, e.g. hybrid:0.25 (methods: random, fastv, visionzip, info, hybrid)")


def answer(m, image, prompt: str, max_new_tokens: int = 12, prune: str | None = None) -> dict:
    """Greedy answer, its tokens and each token's probability under the model (``prune``: a
    pruning spec such as ``"hybrid:0.25"``; dropped visual tokens leave the sequence and cache)."""
    import torch

    b = m.prepare(images=[image], text=[prompt])
    if prune:
        from ..eval.prune import resolve_horizon
        from ..pruning import PrunedLM, make_pruner

        g = PrunedLM(m).generate(b, resolve_horizon(m, make_pruner(prune)), max_new_tokens=max_new_tokens)
    else:
        g = m.generate(b, max_new_tokens=max_new_tokens, keep_scores=True)
    toks, probs = [], []
    eos = m.tokenizer.eos_token_id
    for step, tid in enumerate(g.new_tokens[0].tolist()):
        if tid == eos:
            break
        p = torch.softmax(g.scores[step, 0].float(), -1)[tid].item()
        toks.append(m.tokenizer.decode([tid]).strip())
        probs.append(round(p, 6))
    return {"answer": g.texts[0], "tokens": toks, "probs": probs}


def _run(args) -> int:
    import vlinterp as vi
    from ..core.errors import UnsupportedError

    m = vi.load(args.model)
    if m.kind != "vlm":
        raise UnsupportedError(f"`ask` needs a LLaVA-family model; {args.model!r} is a {m.family} model")
    res = answer(m, args.image, args.prompt, args.max_new_tokens, args.prune)
    if args.prune:
        res["prune"] = args.prune
    print(json.dumps({"model": args.model, "prompt": args.prompt, **res}, indent=2) if args.json else res["answer"])
    return 0


register("ask", "answer a question about an image (greedy)", _add, _run)
