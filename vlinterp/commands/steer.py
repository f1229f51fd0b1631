"""`vlinterp steer eval|generate`: hallucination steering compared on POPE.

    vlinterp steer eval --model shapes-llava --methods none,iri,vcd,meandiff,save,probe,ground [--n 256] [--seed 11] [--json PATH]
    vlinterp steer eval --model PATH --methods none,vcd --pope-jsonl pope.jsonl [--captions-jsonl caps.jsonl --vocab syn.json] [--image-dir DIR]
    vlinterp steer generate IMAGE --prompt "describe the image." [--method ground] [--model M]

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
from . import args as A

METHODS = ("none", "iri", "vcd", "meandiff", "save", "probe", "ground")


def _add(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="steer_cmd", required=True)
    e = sub.add_parser("eval", help="compare steering methods on POPE (+ colour/count accuracy)")
    e.add_argument("--model", default="shapes-llava")
    e.add_argument("--methods", default="none,iri,vcd,meandiff,save,probe,ground")
    e.add_argument("--captions", type=int, default=64, help="scenes captioned for CHAIR (0: skip)")
    e.add_argument("--n", type=int, default=256)
    e.add_argument("--seed", type=int, default=11)
    e.add_argument("--pope-jsonl", help="your POPE-format file (image, text, label per line) instead of the shapes splits")
    e.add_argument("--captions-jsonl", help="your caption-truth file (image, objects per line) for CHAIR")
    e.add_argument("--vocab", help="synonym table JSON {object: [synonyms]} for --captions-jsonl")
    e.add_argument("--image-dir", help="folder the image paths in those files are relative to")
    e.add_argument("--workers", type=int, default=1, help="Ray workers, each fitting the methods once (needs vlinterp[scale])")
    e.add_argument("--address", help="existing Ray cluster instead of a local one")
    e.add_argument("--json")
    A.add_load_options(e)
    g = sub.add_parser("generate", help="answer with a steering method on")
    g.add_argument("image")
    g.add_argument("--prompt", required=True)
    g.add_argument("--model", default="shapes-llava")
    g.add_argument("--method", default="ground", choices=METHODS)
    g.add_argument("--max-new-tokens", type=int, default=16)
    A.add_load_options(g)


def fit_method(name: str, m):
    """The method ``name`` fitted on its probe split with its default options (strengths chosen
    there); the chosen strengths go to stderr."""
    import sys

    method = _fit(name, m)
    said = {k: getattr(method, k) for k in ("alpha", "beta", "gate") if isinstance(getattr(method, k, None), (int, float))}
    if said:
        print(f"{name}: " + ", ".join(f"{k} {v:g}" for k, v in said.items()), file=sys.stderr)
    return method


def _fit(name: str, m):
    from ..steering import IRI, SAVE, VCD, Grounding, MeanDiff, ProbeSteer

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
    if name == "probe":
        return ProbeSteer.fit(m)
    if name == "ground":
        return Grounding.fit(m)
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


def eval_tasks(n: int, seed: int, n_captions: int = 0, split: str = "test") -> list[tuple]:
    """The evaluation as a flat task list ``(key, image, prompt, candidates or None, truth)``: POPE
    random / popular / adversarial, colour, count, and free captions (``candidates`` None) for CHAIR."""
    from ..data.questions import count_questions, pope_split
    from ..data.shapes import COLOURS, NUM_WORDS, make_split, scene_rng

    tasks = []
    for neg in ("random", "popular", "adversarial"):
        tasks += [(neg, s.pil(), qa.question, ("yes", "no"), qa.answer) for s, qa in pope_split(split, n, seed, neg)]
    for s in make_split(split, n, seed):
        rng = scene_rng(split, seed, s.index, 99)
        once = [o for o in s.objects if s.count(o.shape) == 1]
        if once:
            o = once[int(rng.integers(len(once)))]
            tasks.append(("colour", s.pil(), f"what color is the {o.shape}?", tuple(COLOURS), o.colour))
        qa = count_questions(s, rng)[0]
        tasks.append(("count", s.pil(), qa.question, tuple(NUM_WORDS), qa.answer))
    if n_captions:
        tasks += [("chair", s.pil(), "describe the image.", None, s) for s in make_split("chair", n_captions, seed)]
    return tasks


def run_tasks(method, m, tasks) -> list[str]:
    """Predictions for consecutive runs of tasks with the same candidates (captions: free text)."""
    out = []
    i = 0
    while i < len(tasks):
        j = i
        while j < len(tasks) and tasks[j][3] == tasks[i][3]:
            j += 1
        run = tasks[i:j]
        if run[0][3] is None:
            out += captions(method, m, [t[1] for t in run])
        else:
            out += _answers(method, m, [(t[1], t[2]) for t in run], list(run[0][3]))
        i = j
    return out


def score_tasks(tasks, preds) -> dict:
    from ..metrics.chair import chair
    from ..metrics.pope import yes_no_scores

    row = {}
    for key in ("random", "popular", "adversarial"):
        got = [(p, t[4]) for t, p in zip(tasks, preds) if t[0] == key]
        row[key] = yes_no_scores([p for p, _ in got], [g for _, g in got])
    for key in ("colour", "count"):
        got = [(p, t[4]) for t, p in zip(tasks, preds) if t[0] == key]
        row[key] = sum(p == g for p, g in got) / max(1, len(got))
    caps = [(p, t[4]) for t, p in zip(tasks, preds) if t[0] == "chair"]
    if caps:
        row["chair"] = chair([p for p, _ in caps], [s for _, s in caps])
    return row


def evaluate(m, method, n: int, seed: int, n_captions: int = 0, split: str = "test") -> dict:
    tasks = eval_tasks(n, seed, n_captions, split)
    return score_tasks(tasks, run_tasks(method, m, tasks))


_FITTED: dict = {}


def _steer_worker(adapter, tasks, start, name: str):
    key = (id(adapter.model), name)
    if key not in _FITTED:
        _FITTED[key] = fit_method(name, adapter)
    return run_tasks(_FITTED[key], adapter, tasks)


def _print_table(table: dict) -> None:
    print(f"{'method':9s} {'adv acc':>7s} {'adv F1':>6s} {'adv false-yes':>13s} {'pop acc':>7s} {'rand acc':>8s} {'colour':>6s} "
          f"{'count':>5s} {'CHAIR_S':>7s} {'CHAIR_I':>7s} {'cover':>5s}")
    for name, r in table.items():
        a = r["adversarial"]
        ch = r.get("chair", {})
        print(f"{name:9s} {a['accuracy']:7.3f} {a['f1']:6.3f} {a['false_yes']:13.3f} {r['popular']['accuracy']:7.3f} "
              f"{r['random']['accuracy']:8.3f} {r['colour']:6.3f} {r['count']:5.3f} {ch.get('chair_s', float('nan')):7.3f} "
              f"{ch.get('chair_i', float('nan')):7.3f} {ch.get('coverage', float('nan')):5.3f}")


def _run(args) -> int:
    from .. import load

    shapes_eval = args.steer_cmd == "eval" and not (args.pope_jsonl or args.captions_jsonl)
    m = None if shapes_eval else load(args.model, **A.load_kwargs(args))
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
    elif shapes_eval:
        from functools import partial

        from ..scale import WorkerPool

        names = [x.strip() for x in args.methods.split(",") if x.strip()]
        bad = [x for x in names if x not in METHODS]
        if bad:
            from ..core.errors import UnsupportedError

            raise UnsupportedError(f"unknown steering method(s) {', '.join(bad)}; one of {', '.join(METHODS)}")
        tasks = eval_tasks(args.n, args.seed, args.captions)
        table = {}
        with WorkerPool(args.model, args.workers, args.address, load_options=A.load_kwargs(args)) as pool:
            for name in names:
                t0 = time.perf_counter()
                preds = pool.map(partial(_steer_worker, name=name), tasks, shard=64, desc=f"steer eval {name}",
                                 ids=[f"{t[0]} item {i}" for i, t in enumerate(tasks)])
                table[name] = score_tasks(tasks, preds)
                table[name]["fit_and_eval_seconds"] = time.perf_counter() - t0
        _print_table(table)
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
