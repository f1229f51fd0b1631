"""`vlinterp bench saliency --model M [--methods a,b] [--dataset SPEC] [--n N] [--seed K] [--json PATH]`.

Scores saliency methods against ground-truth object masks (default: the shapes world's exact masks
on held-out scenes; ``--dataset coco:instances.json:images`` COCO's polygon / RLE masks) and prints a
table method x (pointing game, energy pointing game, deletion AUC, insertion AUC, Obj-IoU,
infidelity, max-sensitivity, seconds per image), with the ``random`` and ``centre`` baseline maps as rows. The benchmark itself
is :func:`vlinterp.eval.saliency.bench_saliency`.
"""
from __future__ import annotations

import argparse

from ..cli import register
from . import args as A
from .dataset_args import add_dataset

SHAPES_N, SHAPES_SEED = 8, 1


class _MethodNames:
    """The saliency registry's names plus the baselines, looked up when parsing."""

    kind = "saliency method"

    def __iter__(self):
        from ..eval.saliency import BASELINES
        from ..saliency import REGISTRY

        return iter([*REGISTRY, *BASELINES])


def _add(p: argparse.ArgumentParser):
    p.add_argument("what", choices=sorted(BENCHES), help="what to benchmark")
    A.add_model(p, required=True)
    A.add_load_options(p)
    p.add_argument("--methods", type=A.names_in(_MethodNames()), metavar="M1,M2",
                   help="saliency methods, and/or the baselines random, centre (default: every method of the model's kind)")
    add_dataset(p, "shapes:heldout", SHAPES_N, SHAPES_SEED, "images with object masks (or boxes) to score the maps against",
                n_help=f"items to take (a shapes split without N: its number of scenes, default {SHAPES_N})")
    p.add_argument("--steps", type=A.nonneg_int, default=16, help="deletion/insertion steps (0 = skip them)")
    p.add_argument("--infidelity-samples", type=A.nonneg_int, default=16,
                   help="random square removals per map for captum's infidelity (0 = skip it)")
    p.add_argument("--sensitivity-samples", type=A.nonneg_int, default=4,
                   help="noised images per map for captum's max-sensitivity, each a re-run of the method (0 = skip it)")
    p.add_argument("--sample-steps", type=A.positive_int, default=20, help="diffusion: sampler steps per generated image")
    p.add_argument("--guidance", type=A.positive_float, default=1.0, help="diffusion: classifier-free guidance scale of the sampler")
    A.add_workers(p)
    A.add_json(p)


def _saliency(args) -> int:
    from ..core.errors import UsageError
    from ..core.io import write_json
    from ..eval.saliency import bench_saliency, table

    from ..eval.saliency import WANTED
    from .dataset_args import read

    if args.steps > 1000:
        raise UsageError(f"--steps must be in 0..1000, got {args.steps}")
    items, info = read(args, WANTED, SHAPES_N, SHAPES_SEED)  # read (and checked) before the model loads
    seed = info["seed"] if info["seed"] is not None else SHAPES_SEED
    res = bench_saliency(args.model, args.methods, len(items), seed, args.steps, progress=None, sample_steps=args.sample_steps,
                         workers=args.workers, address=args.address, guidance=args.guidance, load_options=A.load_kwargs(args),
                         items=items, dataset=info["dataset"], infidelity_samples=args.infidelity_samples,
                         sensitivity_samples=args.sensitivity_samples)
    res["kinds"] = info["kinds"]
    print(f"bench saliency: {res['model']} ({res['family']}), {res['items']} cases on {res['scenes']} items of {res['dataset']} "
          f"(seed {res['seed']})")
    print(table(res))
    if res.get("answer_accuracy") is not None:
        print(f"answer accuracy: {res['answer_accuracy']:.3f}")
        pc = res.get("pointing_game_correct_answers") or {}
        if pc:
            print("pointing game on correctly answered items: " + ", ".join(f"{k} {v:.3f}" for k, v in pc.items()))
    for k, why in res["skipped"].items():
        print(f"skipped {k}: {why}")
    if args.json:
        write_json(args.json, res, flag="--json")  # NaN (no deletion/insertion) stays NaN, as Python reads it
    return 0


BENCHES = {"saliency": _saliency}


def _run(args) -> int:
    return BENCHES[args.what](args)


register("bench", "benchmarks: `bench saliency` scores saliency methods against shapes-world masks", _add, _run)
