"""`vlinterp sae harvest|train|eval|inspect|score-data`: SAE-V on any adapter site.

    vlinterp sae harvest --model shapes-llava --site blocks.2.resid --dataset shapes:sae-train:600:0:mixed --out STORE
    vlinterp sae train --store STORE --out SAE [--arch topk --d-sae 512 --k 32 --steps 2000 --image-fraction 0.5]
    vlinterp sae eval --sae SAE --store HELDOUT_STORE [--model M --splice-n 256] [--json PATH]
    vlinterp sae inspect --sae SAE --store STORE --model M --out DASH_DIR [--features 3,17 | --top 32]
    vlinterp sae score-data --sae SAE --calib-store STORE --store DATA_STORE --out scores.json

Datasets: ``shapes:SPLIT:N[:SEED[:KIND]]`` (KIND caption, question or mixed) or ``jsonl:PATH``.
Stores and SAEs are directories written atomically; ``harvest`` and ``train`` (``--resume``)
continue where a killed run stopped.
"""
from __future__ import annotations

import argparse
import json

from ..cli import register


def _fraction(v: str) -> float:
    x = float(v)
    if not 0.0 <= x < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return x


def _add(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="sae_cmd", required=True)
    h = sub.add_parser("harvest", help="harvest a site's activations over a dataset into a store")
    h.add_argument("--model", default="shapes-llava")
    h.add_argument("--site", required=True, help="adapter site, e.g. blocks.2.resid")
    h.add_argument("--dataset", required=True, help="shapes:SPLIT:N[:SEED[:KIND]] or jsonl:PATH")
    h.add_argument("--out", required=True, help="store directory (resumable)")
    h.add_argument("--keep", default="content", choices=["all", "content", "image", "text", "answer"],
                   help="answer: image patches + the answer's tokens (pairs to score, without the instruction)")
    h.add_argument("--batch-size", type=int, default=16)
    h.add_argument("--shard-samples", type=int, default=256)
    h.add_argument("--workers", type=int, default=1, help="Ray workers writing shards straight into the store (needs vlinterp[scale])")
    h.add_argument("--address", help="existing Ray cluster instead of a local one")
    t = sub.add_parser("train", help="train an SAE (SAELens) on a store")
    t.add_argument("--store", required=True)
    t.add_argument("--out", required=True, help="SAE directory (SAELens format + vlinterp.json)")
    t.add_argument("--arch", default="topk", choices=["topk", "batchtopk", "standard", "jumprelu", "matryoshka"])
    t.add_argument("--d-sae", type=int, default=512)
    t.add_argument("--k", type=int, default=32)
    t.add_argument("--l1", type=float, default=5.0, help="standard (ReLU-L1) SAEs: L1 coefficient")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--image-fraction", type=float, default=0.5, help="share of image tokens per batch (-1: uniform over rows)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=500)
    t.add_argument("--checkpoint-dir", help="default: OUT.ckpt")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    t.add_argument("--workers", type=int, default=1, help="data-parallel on Ray Train, gradients all-reduced (needs vlinterp[scale])")
    t.add_argument("--address", help="existing Ray cluster instead of a local one")
    e = sub.add_parser("eval", help="FVU, L0, dead/dense fractions; answer accuracy with the SAE spliced in")
    e.add_argument("--sae", required=True)
    e.add_argument("--store", required=True, help="held-out store")
    e.add_argument("--model", help="also splice into this model (LLaVA: POPE accuracy and answer CE)")
    e.add_argument("--splice-n", type=int, default=256)
    e.add_argument("--json")
    i = sub.add_parser("inspect", help="HTML dashboards per feature + index")
    i.add_argument("--sae", required=True)
    i.add_argument("--store", required=True)
    i.add_argument("--model", default="shapes-llava")
    i.add_argument("--out", required=True)
    i.add_argument("--features", help="comma-separated feature ids (default: the --top most frequent)")
    i.add_argument("--top", type=int, default=32)
    s = sub.add_parser("score-data", help="SAE-V sample scores (rank/filter image-text pairs)")
    s.add_argument("--sae", required=True)
    s.add_argument("--calib-store", required=True, help="store the cross-modal weights are computed on")
    s.add_argument("--store", required=True, help="store of the pairs to score")
    s.add_argument("--out", required=True, help="JSON: sample id -> score, plus the weights' summary")
    s.add_argument("--balanced", action="store_true",
                   help="omega from each feature's top activations within each modality (see the README's SAE-V section)")
    s.add_argument("--min-rel", type=_fraction, default=0.0,
                   help="active = above this fraction of the feature's top-activation scale in that modality (calib store)")
    s.add_argument("--overlap", action="store_true",
                   help="divide by the omega mass active on either side (a weighted Jaccard index in [0, 1])")


def _store(path):
    from ..sae.store import ActivationStore

    return ActivationStore.open(path)


def _run(args) -> int:
    import torch

    from ..viz.overlay import write_bytes_atomic

    cmd = args.sae_cmd
    if cmd == "harvest":
        from .. import load
        from ..sae.store import ActivationStore, items_from_spec

        if args.workers > 1:
            from ..sae.store_parallel import harvest_parallel
            from ..scale import WorkerPool

            with WorkerPool(args.model, args.workers, args.address) as pool:
                st = harvest_parallel(pool, args.model, args.site, args.dataset, args.out, args.batch_size, args.shard_samples, args.keep)
        else:
            m = load(args.model)
            st = ActivationStore.harvest(m, args.site, items_from_spec(args.dataset), out_dir=args.out, batch_size=args.batch_size,
                                         shard_samples=args.shard_samples, keep=args.keep, dataset=args.dataset)
        print(f"{len(st)} rows x {st.d} from {st.meta['samples_done']} samples -> {args.out}")
    elif cmd == "train":
        from ..sae.attach import save_sae
        from ..sae.train import train_sae

        st = _store(args.store)
        sae = train_sae(st, args.arch, args.d_sae, args.k, args.steps, args.batch_size, args.lr,
                        None if args.image_fraction < 0 else args.image_fraction, args.seed,
                        args.checkpoint_dir or args.out.rstrip("/") + ".ckpt", args.checkpoint_every, args.resume, l1=args.l1,
                        workers=args.workers, address=args.address)
        save_sae(sae, args.out, {"store": args.store, "dataset": st.meta.get("dataset")})
        print(f"SAE {args.arch} {st.d}->{args.d_sae} -> {args.out}")
    elif cmd == "eval":
        from ..sae.attach import load_sae
        from ..sae.quality import reconstruction, splice_effect

        sae = load_sae(args.sae)
        st = _store(args.store)
        out = {"reconstruction": reconstruction(sae, st.acts, st.rows["modality"])}
        if args.model:
            from .. import load

            out["splice"] = splice_effect(load(args.model), sae, st.meta["site"], n=args.splice_n)
        print(json.dumps(out, indent=1))
        if args.json:
            write_bytes_atomic(args.json, json.dumps(out, indent=1).encode())
    elif cmd == "inspect":
        from .. import load
        from ..core.errors import LoadError
        from ..sae.analysis import cross_modal_weights, encode_rows
        from ..sae.attach import load_sae
        from ..sae.dashboard import write_dashboards
        from ..sae.store import items_from_spec

        sae, st, m = load_sae(args.sae), _store(args.store), load(args.model)
        if not st.meta.get("dataset"):
            raise LoadError(f"{args.store} does not record its dataset, so its images cannot be shown")
        F = encode_rows(sae, st.acts)
        omega = cross_modal_weights(F, st.acts, st.rows["modality"])
        feats = [int(x) for x in args.features.split(",")] if args.features else \
            [int(k) for k in torch.argsort((F > 0).sum(0), descending=True)[:args.top] if (F[:, k] > 0).any()]
        path = write_dashboards(m, sae, st, items_from_spec(st.meta["dataset"]), args.out, feats, F=F, omega=omega)
        print(f"wrote {len(feats)} feature pages and {path}")
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
        write_bytes_atomic(args.out, json.dumps(out, indent=1).encode())
        print(f"scored {len(sc)} samples with {out['cross_modal_features']} cross-modal features -> {args.out}")
    return 0


register("sae", "SAE-V: harvest activations, train SAEs (SAELens), evaluate, dashboards, score data", _add, _run)
