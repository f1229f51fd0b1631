"""`vlinterp bench saliency --model M [--methods a,b] [--n N] [--seed K] [--json PATH]`.

Scores saliency methods against the shapes world's exact masks on held-out scenes and prints a
table method x (pointing game, energy pointing game, deletion AUC, insertion AUC, Obj-IoU,
infidelity, max-sensitivity, seconds per image), with the ``random`` and ``centre`` baseline maps as rows. The benchmark itself
is :func:`vlinterp.eval.saliency.bench_saliency`.
"""
from __future__ import annotations

import argparse

from ..cli import register
from . import args as A


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
    A.add_n_seed(p, 8, 1, "held-out scenes")
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

    if args.steps > 1000:
        raise UsageError(f"--steps must be in 0..1000, got {args.steps}")
    res = bench_saliency(args.model, args.methods, args.n, args.seed, args.steps, progress=None, sample_steps=args.sample_steps,
                         workers=args.workers, address=args.address, guidance=args.guidance, load_options=A.load_kwargs(args),
                         infidelity_samples=args.infidelity_samples, sensitivity_samples=args.sensitivity_samples)
    print(f"bench saliency: {res['model']} ({res['family']}), {res['items']} items on {res['scenes']} held-out scenes (seed {res['seed']})")
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
