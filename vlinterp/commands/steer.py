"""`vlinterp steer eval|generate`: hallucination steering compared on POPE (issue 7, in progress).

    vlinterp steer eval --model shapes-llava --methods none,iri,vcd,meandiff [--n 256] [--seed 11] [--json PATH]
    vlinterp steer eval --model PATH --methods none,vcd --pope-jsonl pope.jsonl [--captions-jsonl caps.jsonl --vocab syn.json] [--image-dir DIR]
    vlinterp steer generate IMAGE --prompt "describe the image." --method meandiff [--model M]

User data (any LLaVA): POPE-format lines ``{"image", "text", "label"}``; caption truth lines
``{"image", "objects": [...]}`` with a synonym table ``{object: [synonyms]}`` for CHAIR. The
methods themselves are still fitted on the shapes world's probe splits.

Methods are fitted on their own probe / calibration splits, never on the evaluation scenes. The
table: POPE accuracy, F1, yes rate and false-yes rate per negative type, colour / count accuracy
(collateral damage), and CHAIR_S / CHAIR_I on free captions of ``--captions`` scenes.
"""
from __future__ import annotations

import argparse
import json
import time

from ..cli import register

METHODS = ("none", "iri", "vcd", "meandiff", "save")


def _add(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="steer_cmd", required=True)
    e = sub.add_parser("eval", help="compare steering methods on POPE (+ colour/count accuracy)")
    e.add_argument("--model", default="shapes-llava")
    e.add_argument("--methods", default="none,iri,vcd,meandiff,save")
    e.add_argument("--captions", type=int, default=64, help="scenes captioned for CHAIR (0: skip)")
    e.add_argument("--n", type=int, default=256)
    e.add_argument("--seed", type=int, default=11)
    e.add_argument("--pope-jsonl", help="your POPE-format file (image, text, label per line) instead of the shapes splits")
    e.add_argument("--captions-jsonl", help="your caption-truth file (image, objects per line) for CHAIR")
    e.add_argument("--vocab", help="synonym table JSON {object: [synonyms]} for --captions-jsonl")
    e.add_argument("--image-dir", help="folder the image paths in those files are relative to")
    e.add_argument("--json")
    g = sub.add_parser("generate", help="answer with a steering method on")
    g.add_argument("image")
    g.add_argument("--prompt", required=True)
    g.add_argument("--model", default="shapes-llava")
    g.add_argument("--method", default="meandiff", choices=METHODS)
    g.add_argument("--max-new-tokens", type=int, default=16)


def fit_method(name: str, m):
    from ..steering import IRI, SAVE, VCD, MeanDiff

    if name == "none":
        return None
    if name == "iri":
        return IRI.fit(m)
    if name == "vcd":
        return VCD()
    if name == "meandiff":
        return MeanDiff.fit(m, alpha="auto")
    if name == "save":
        return SAVE.fit(m)
    from ..core.errors import UnsupportedError

    raise UnsupportedError(f"unknown steering method {name!r}; one of {', '.join(METHODS)}")


def _answers(method, m, items, candidates):
    import contextlib

    from ..metrics.pope import choose

    if method is not None and hasattr(method, "choose"):
        return method.choose(m, items, candidates)
    with method.applied(m) if method is not None else contextlib.nullcontext():
        return choose(m, items, candidates)


def captions(method, m, images, max_new_tokens: int = 24) -> list[str]:
    """Free captions (``describe the image.``) of PIL ``images`` with ``method`` on."""
    out = []
    for i in range(0, len(images), 32):
        chunk = images[i:i + 32]
        b = m.prepare(images=chunk, text=["describe the image."] * len(chunk))
        if method is None:
            out += m.generate(b, max_new_tokens=max_new_tokens).texts
        elif hasattr(method, "applied"):
            out += method.generate(m, b, max_new_tokens=max_new_tokens).texts
        else:
            out += method.generate(m, b, max_new_tokens=max_new_tokens)
    return out


def evaluate_user(m, method, pope_items=None, caption_truth=None, vocab=None) -> dict:
    """Scores on user data: POPE items ``[(image, question, label)]``, and CHAIR on captions of
    ``caption_truth = (images, [objects])`` with the synonym ``vocab``."""
    from ..metrics.chair import chair
    from ..metrics.pope import yes_no_scores

    row = {}
    if pope_items:
        pred = _answers(method, m, [(im, q) for im, q, _ in pope_items], ["yes", "no"])
        row["pope"] = yes_no_scores(pred, [a for _, _, a in pope_items])
    if caption_truth:
        imgs, truths = caption_truth
        caps = captions(method, m, imgs)
        row["chair"] = chair(caps, truths, vocabulary=vocab)
        row["captions"] = caps
    return row


def evaluate(m, method, n: int, seed: int, n_captions: int = 0, split: str = "test") -> dict:
    from ..data.questions import count_questions, pope_split
    from ..data.shapes import COLOURS, NUM_WORDS, make_split, scene_rng
    from ..metrics.pope import yes_no_scores

    row = {}
    for neg in ("random", "popular", "adversarial"):
        items = pope_split(split, n, seed, neg)
        pred = _answers(method, m, [(s.pil(), qa.question) for s, qa in items], ["yes", "no"])
        row[neg] = yes_no_scores(pred, [qa.answer for _, qa in items])
    col, cnt = [], []
    for s in make_split(split, n, seed):
        rng = scene_rng(split, seed, s.index, 99)
        once = [o for o in s.objects if s.count(o.shape) == 1]
        if once:
            o = once[int(rng.integers(len(once)))]
            col.append((s.pil(), f"what color is the {o.shape}?", o.colour))
        qa = count_questions(s, rng)[0]
        cnt.append((s.pil(), qa.question, qa.answer))
    for key, items, cands in (("colour", col, COLOURS), ("count", cnt, NUM_WORDS)):
        pred = _answers(method, m, [(im, q) for im, q, _ in items], cands)
        row[key] = sum(p == a for p, (_, _, a) in zip(pred, items)) / max(1, len(items))
    if n_captions:
        from ..metrics.chair import chair

        scenes = make_split("chair", n_captions, seed)
        row["chair"] = chair(captions(method, m, [s.pil() for s in scenes]), scenes)
    return row


def _run(args) -> int:
    from .. import load

    m = load(args.model)
    if args.steer_cmd == "eval" and (args.pope_jsonl or args.captions_jsonl):
        from ..core.errors import PromptError
        from ..metrics.chair import load_caption_truth, load_vocabulary
        from ..metrics.pope import load_pope_jsonl

        if args.captions_jsonl and not args.vocab:
            raise PromptError("--captions-jsonl needs --vocab (the synonym table)")
        items = load_pope_jsonl(args.pope_jsonl, args.image_dir) if args.pope_jsonl else None
        truth = load_caption_truth(args.captions_jsonl, args.image_dir) if args.captions_jsonl else None
        vocab = load_vocabulary(args.vocab) if args.vocab else None
        table = {}
        for name in [x.strip() for x in args.methods.split(",") if x.strip()]:
            table[name] = evaluate_user(m, fit_method(name, m), items, truth, vocab)
            r = table[name]
            pp = r.get("pope", {})
            ch = r.get("chair", {})
            print(f"{name:9s} POPE acc {pp.get('accuracy', float('nan')):.3f} F1 {pp.get('f1', float('nan')):.3f} "
                  f"yes {pp.get('yes_rate', float('nan')):.3f}  CHAIR_S {ch.get('chair_s', float('nan')):.3f} CHAIR_I {ch.get('chair_i', float('nan')):.3f}")
        if args.json:
            from ..viz.overlay import write_bytes_atomic

            write_bytes_atomic(args.json, json.dumps(table, indent=1).encode())
    elif args.steer_cmd == "eval":
        table = {}
        for name in [x.strip() for x in args.methods.split(",") if x.strip()]:
            t0 = time.perf_counter()
            method = fit_method(name, m)
            fit_s = time.perf_counter() - t0
            table[name] = evaluate(m, method, args.n, args.seed, args.captions)
            table[name]["fit_seconds"] = fit_s
        print(f"{'method':9s} {'adv acc':>7s} {'adv F1':>6s} {'adv false-yes':>13s} {'pop acc':>7s} {'rand acc':>8s} {'colour':>6s} "
              f"{'count':>5s} {'CHAIR_S':>7s} {'CHAIR_I':>7s}")
        for name, r in table.items():
            a = r["adversarial"]
            ch = r.get("chair", {})
            print(f"{name:9s} {a['accuracy']:7.3f} {a['f1']:6.3f} {a['false_yes']:13.3f} {r['popular']['accuracy']:7.3f} "
                  f"{r['random']['accuracy']:8.3f} {r['colour']:6.3f} {r['count']:5.3f} {ch.get('chair_s', float('nan')):7.3f} "
                  f"{ch.get('chair_i', float('nan')):7.3f}")
        if args.json:
            from ..viz.overlay import write_bytes_atomic

            write_bytes_atomic(args.json, json.dumps(table, indent=1).encode())
    else:
        from ..core.images import load_image

        b = m.prepare(images=[load_image(args.image, name="IMAGE")], text=[args.prompt])
        method = fit_method(args.method, m)
        if method is None:
            text = m.generate(b, max_new_tokens=args.max_new_tokens).texts[0]
        elif hasattr(method, "applied"):
            text = method.generate(m, b, max_new_tokens=args.max_new_tokens).texts[0]
        else:
            text = method.generate(m, b, max_new_tokens=args.max_new_tokens)[0]
        print(text)
    return 0


register("steer", "hallucination steering (IRI, VCD, mean-difference) compared on POPE; generate with steering on", _add, _run)
