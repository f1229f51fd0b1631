"""`vlinterp sae harvest|train|eval|inspect|score-data`: SAE-V on any adapter site.

    vlinterp sae harvest --model shapes-llava --site blocks.2.resid --dataset shapes:sae-train:mixed --n 600 --out STORE [--tokens content]
    vlinterp sae train --store STORE --out SAE [--arch topk --d-sae 512 --k 32 --steps 2000 --image-fraction 0.5]
    vlinterp sae eval --sae SAE --store HELDOUT_STORE [--model M --splice-n 256] [--json PATH]
    vlinterp sae inspect --sae SAE --store STORE --model M --out DASH_DIR [--features 3,17 | --top 32]
    vlinterp sae score-data --sae SAE --calib-store STORE --store DATA_STORE --json scores.json

Datasets: any ``--dataset`` spec (:mod:`vlinterp.eval.datasets`): ``shapes:SPLIT[:KIND]`` (KIND
caption, question, mixed or any shapes item kind; ``--n`` scenes drawn with ``--seed``), COCO with
captions, POPE, HF, or JSON lines of ``{"image", "text", "answer"?}``; the caption items of data
that has several kinds. The store records a spec that reads exactly its items again.
Stores and SAEs are output directories (new, empty, or an earlier vlinterp output: files you put
there are kept); ``harvest`` and ``train`` (``--resume``) continue where a killed run stopped.
"""
from __future__ import annotations

import argparse
import os

from ..cli import register
from . import args as A
from .dataset_args import add_dataset
from ..core.errors import UsageError

TOKENS = ("content", "all", "image", "text", "answer")


def _store_dir(text: str) -> str:
    A._dir(text)
    if not os.path.isfile(os.path.join(text, "manifest.json")):
        raise UsageError(f"{text!r} is not an activation store (no manifest.json; make one with `vlinterp sae harvest`)")
    return text


def _sae_dir(text: str) -> str:
    A._dir(text)
    if not os.path.isfile(os.path.join(text, "cfg.json")):
        raise UsageError(f"{text!r} is not an SAE directory (no cfg.json; make one with `vlinterp sae train`)")
    return text


def _image_fraction(text: str) -> float:
    v = A._float(text)
    if v != -1 and not 0.0 <= v <= 1.0:
        raise UsageError(f"{text} must be in [0, 1] (or -1: uniform over rows)")
    return v


def _fraction(text: str) -> float:
    v = A._float(text)
    if not 0.0 <= v < 1.0:
        raise UsageError(f"{text} must be in [0, 1)")
    return v


def _features(text: str) -> list[int]:
    out = A._ints(text)
    if any(k < 0 for k in out):
        raise UsageError(f"feature ids are >= 0, got {text!r}")
    return out


store_dir = A._type(_store_dir, "store")
sae_dir = A._type(_sae_dir, "SAE directory")


def _add(p: argparse.ArgumentParser):
    from ..sae.archs import SAE_ARCHS

    sub = p.add_subparsers(dest="sae_cmd", required=True, metavar="{harvest,train,eval,inspect,score-data}", title="sub-commands")
    h = sub.add_parser("harvest", help="harvest a site's activations over a dataset into a store",
                       description="harvest a site's activations over a dataset into a store")
    A.add_model(h)
    A.add_load_options(h)
    h.add_argument("--site", required=True, metavar="SITE", help="adapter site, e.g. blocks.2.resid (`vlinterp info MODEL` lists them)")
    add_dataset(h, None, 512, 0, "the items to harvest (shapes:SPLIT:KIND with KIND caption, question, mixed ...)", required=True)
    A.add_out(h, "store directory (resumable: run again on it to continue)")
    h.add_argument("--tokens", default="content", choices=TOKENS,
                   help="which tokens become rows; content: image patches and text without specials; "
                        "answer: image patches + the answer's tokens (pairs to score, without the instruction)")
    h.add_argument("--batch-size", type=A.positive_int, default=16, help="items per forward")
    h.add_argument("--shard-samples", type=A.positive_int, default=256, help="items per store shard (the unit of resuming)")
    A.add_workers(h)
    t = sub.add_parser("train", help="train an SAE (SAELens) on a store", description="train an SAE (SAELens) on a store")
    t.add_argument("--store", required=True, type=store_dir, metavar="STORE", help="activation store (from `sae harvest`)")
    A.add_out(t, "SAE directory (SAELens format + vlinterp.json; new, empty or an earlier vlinterp output)")
    t.add_argument("--arch", default="topk", choices=SAE_ARCHS.names(), help="SAE architecture (SAELens)")
    t.add_argument("--d-sae", type=A.positive_int, default=512, help="number of features")
    t.add_argument("--k", type=A.positive_int, default=32, help="top-k architectures: active features per token")
    t.add_argument("--l1", type=A.nonneg_float, default=5.0, help="standard (ReLU-L1) SAEs: L1 coefficient")
    t.add_argument("--steps", type=A.positive_int, default=2000, help="optimiser steps")
    t.add_argument("--batch-size", type=A.positive_int, default=256, help="rows per step")
    t.add_argument("--lr", type=A.positive_float, default=3e-4, help="learning rate")
    t.add_argument("--image-fraction", type=A._type(_image_fraction, "fraction"), default=0.5,
                   help="share of image tokens per batch (-1: uniform over rows)")
    t.add_argument("--seed", type=A.integer, default=0, help="seed of the weights and the batch order")
    t.add_argument("--checkpoint-every", type=A.positive_int, default=500, help="steps between checkpoints")
    t.add_argument("--checkpoint-dir", metavar="DIR", help="where checkpoints go (default: OUT.ckpt)")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    A.add_workers(t)
    e = sub.add_parser("eval", help="FVU, L0, dead/dense fractions; answer accuracy with the SAE spliced in",
                       description="FVU, L0, dead/dense fractions; answer accuracy with the SAE spliced in")
    e.add_argument("--sae", required=True, type=sae_dir, metavar="SAE", help="SAE directory (from `sae train`)")
    e.add_argument("--store", required=True, type=store_dir, metavar="STORE", help="held-out store")
    e.add_argument("--model", metavar="M", help="also splice into this model (LLaVA: POPE accuracy and answer CE)")
    A.add_load_options(e)
    e.add_argument("--splice-n", type=A.positive_int, default=256, help="POPE questions for the splice test")
    A.add_json(e)
    i = sub.add_parser("inspect", help="HTML dashboards per feature + index", description="HTML dashboards per feature + index")
    i.add_argument("--sae", required=True, type=sae_dir, metavar="SAE", help="SAE directory")
    i.add_argument("--store", required=True, type=store_dir, metavar="STORE", help="store whose tokens the pages show")
    A.add_model(i)
    A.add_load_options(i)
    A.add_out(i, "dashboard directory (index.html + one page per feature)")
    i.add_argument("--features", type=A._type(_features, "feature list"), metavar="IDS",
                   help="comma-separated feature ids (default: the --top most frequent)")
    i.add_argument("--top", type=A.positive_int, default=32, help="without --features: how many of the most frequent features")
    s = sub.add_parser("score-data", help="SAE-V sample scores (rank/filter image-text pairs)",
                       description="SAE-V sample scores (rank/filter image-text pairs)")
    s.add_argument("--sae", required=True, type=sae_dir, metavar="SAE", help="SAE directory")
    s.add_argument("--calib-store", required=True, type=store_dir, metavar="STORE", help="store the cross-modal weights are computed on")
    s.add_argument("--store", required=True, type=store_dir, metavar="STORE", help="store of the pairs to score")
    A.add_json(s, "JSON file: sample id -> score, plus the weights' summary", required=True)
    s.add_argument("--balanced", action="store_true",
                   help="omega from each feature's top activations within each modality (see the README's SAE-V section)")
    s.add_argument("--min-rel", type=A._type(_fraction, "fraction"), default=0.0,
                   help="active = above this fraction of the feature's top-activation scale in that modality (calib store)")
    s.add_argument("--overlap", action="store_true",
                   help="divide by the omega mass active on either side (a weighted Jaccard index in [0, 1])")


def _store(path):
    from ..sae.store import ActivationStore

    return ActivationStore.open(path)


def _read(args):
    """``(items, resolved spec)`` of the harvest, read and checked before any model loads."""
    import sys

    from ..eval.sae_data import read_harvest_items

    items, spec = read_harvest_items(args.dataset, args.n, args.seed)
    print(f"harvesting {len(items)} items of {spec}", file=sys.stderr)
    return items, spec


def _checkpoint_dir(args) -> str:
    from ..core.errors import UsageError

    d = args.checkpoint_dir or args.out.rstrip("/") + ".ckpt"
    if os.path.lexists(d) and not os.path.isdir(d):
        raise UsageError(f"--checkpoint-dir {d!r} exists and is not a directory")
    return d


def _run(args) -> int:
    import torch

    from ..core.io import output_dir, write_json

    cmd = args.sae_cmd
    if cmd == "harvest":
        import vlinterp as vi
        from ..sae.store import ActivationStore

        items, spec = _read(args)  # read (and checked) before the model loads
        if args.workers > 1:
            from ..eval.sae_parallel import harvest_parallel
            from ..scale import WorkerPool

            with WorkerPool(args.model, args.workers, args.address, load_options=A.load_kwargs(args)) as pool:
                st = harvest_parallel(pool, args.model, args.site, spec, args.out, args.batch_size, args.shard_samples, args.tokens)
        else:
            m = vi.load(args.model, **A.load_kwargs(args))
            st = ActivationStore.harvest(m, args.site, items, out_dir=args.out, batch_size=args.batch_size,
                                         shard_samples=args.shard_samples, tokens=args.tokens, dataset=spec)
        print(f"{len(st)} rows x {st.d} from {st.meta['samples_done']} samples -> {args.out}")
    elif cmd == "train":
        from ..sae.attach import save_sae
        from ..sae.train import train_sae

        ckpt = _checkpoint_dir(args)
        st = _store(args.store)
        kw = dict(arch=args.arch, d_sae=args.d_sae, k=args.k, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                  image_fraction=None if args.image_fraction < 0 else args.image_fraction, seed=args.seed, checkpoint_dir=ckpt,
                  checkpoint_every=args.checkpoint_every, resume=args.resume, l1=args.l1)
        if args.workers > 1:
            from ..scale.sae_train import train_data_parallel

            sae = train_data_parallel(st, workers=args.workers, address=args.address, **kw)
        else:
            sae = train_sae(st, **kw)
        save_sae(sae, args.out, {"store": args.store, "dataset": st.meta.get("dataset")})
        print(f"SAE {args.arch} {st.d}->{args.d_sae} -> {args.out}")
    elif cmd == "eval":
        from ..sae.attach import load_sae
        from ..sae.quality import reconstruction, splice_effect

        sae = load_sae(args.sae)
        st = _store(args.store)
        out = {"reconstruction": reconstruction(sae, st.acts, st.rows["modality"])}
        if args.model:
            import vlinterp as vi
            from ..eval.saev import splice_items

            out["splice"] = splice_effect(vi.load(args.model, **A.load_kwargs(args)), sae, st.meta["site"], splice_items(args.splice_n))
        import json

        print(json.dumps(out, indent=1))
        if args.json:
            write_json(args.json, out, flag="--json")
    elif cmd == "inspect":
        import vlinterp as vi
        from ..core.errors import LoadError
        from ..eval.sae_data import items_from_spec
        from ..sae.analysis import cross_modal_weights, encode_rows
        from ..sae.attach import load_sae
        from ..viz.sae_dashboard import write_dashboards

        sae, st = load_sae(args.sae), _store(args.store)
        if not st.meta.get("dataset"):
            raise LoadError(f"{args.store} does not record its dataset, so its images cannot be shown")
        items = items_from_spec(st.meta["dataset"])
        m = vi.load(args.model, **A.load_kwargs(args))
        F = encode_rows(sae, st.acts)
        omega = cross_modal_weights(F, st.acts, st.rows["modality"])
        feats = args.features if args.features else \
            [int(k) for k in torch.argsort((F > 0).sum(0), descending=True)[:args.top] if (F[:, k] > 0).any()]
        bad = [k for k in feats if k >= F.shape[1]]
        if bad:
            from ..core.errors import UsageError

            raise UsageError(f"--features {bad} out of range: the SAE has {F.shape[1]} features")
        with output_dir(args.out) as tmp:
            write_dashboards(m, sae, st, items, tmp, feats, F=F, omega=omega)
        print(f"wrote {len(feats)} feature pages and {os.path.join(args.out, 'index.html')}")
    elif cmd == "score-data":
        from ..sae.analysis import cross_modal_weights, encode_rows, reference_activations, sample_scores
        from ..sae.attach import load_sae

        sae = load_sae(args.sae)
        cal, st = _store(args.calib_store), _store(args.store)
        Fc = encode_rows(sae, cal.acts)
        omega = cross_modal_weights(Fc, cal.acts, cal.rows["modality"], balanced=args.balanced)
        ref = reference_activations(Fc, cal.rows["modality"]) if args.min_rel > 0 else None
        sc = sample_scores(encode_rows(sae, st.acts), st.rows["modality"], st.rows["sample"], omega, ref, args.min_rel,
                           overlap=args.overlap)
        out = {"scores": {str(k): v for k, v in sc.items()}, "cross_modal_features": int((omega > 0).sum()),
               "omega_mean": float(omega[omega > 0].mean()) if (omega > 0).any() else 0.0,
               "balanced": args.balanced, "min_rel": args.min_rel, "overlap": args.overlap}
        write_json(args.json, out, flag="--json")
        print(f"scored {len(sc)} samples with {out['cross_modal_features']} cross-modal features -> {args.json}")
    return 0


register("sae", "SAE-V: harvest activations, train SAEs (SAELens), evaluate, dashboards, score data", _add, _run)
