"""The information-flow methods of `vlinterp trace` (``--knockout FROM:TO``, ``--method dla|relp|parts``).

    vlinterp trace IMG --prompt "is there a red circle?" --knockout image:last,question:last --window 2 --json ko.json --plot ko.png
    vlinterp trace IMG --prompt "is there a red circle?" --target yes --method dla --foil no --json dla.json --plot dla.png
    vlinterp trace IMG --prompt "is there a red circle?" --target yes --method relp --json relp.json
    vlinterp trace IMG --prompt "is there a red circle?" --target yes --method parts --json parts.json --plot parts.png
    vlinterp trace --dataset shapes --n 32 --knockout image:last --json flow.json --plot flow.png

One image: the method's result (JSON; ``--plot``: the flow map, the DLA bars and head map, the
RelP table, or the attention parts' recovery rates per layer). ``--dataset``: every item, and the means over items. Options the CLI flags do not
cover go in the method spec (``--method relp:rules=none``, ``--method dla:heads=false``).
"""
from __future__ import annotations

import sys

from . import args as A

CORRUPTING = ("relp", "parts")  # the flow methods that patch a corrupted run (causal runs in .trace)


def method_name(args) -> str:
    """The tracing method the arguments ask for (``--knockout`` means ``knockout``)."""
    name = str(args.method).split(":")[0].split("[")[0]
    return "knockout" if args.knockout and name == "causal" else name


def check(args) -> None:
    """Combinations the flow methods cannot take, refused before any work."""
    from ..core.errors import UsageError

    name = method_name(args)
    if args.knockout and name != "knockout":
        raise UsageError(f"--knockout is the knockout method; it cannot go with --method {name}")
    if args.foil is not None and name != "dla":
        raise UsageError("--foil is for --method dla")
    if args.interchange and name not in CORRUPTING:
        raise UsageError(f"--interchange IMAGE2 is for a corrupting method (causal, relp), not {name}")
    if args.dataset:
        if args.image:
            raise UsageError("give an IMAGE or --dataset, not both")
        for flag in ("prompt", "target", "box", "object", "interchange", "foil"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} is for one IMAGE; with --dataset each item gives its own")
        if args.positions != "groups":
            raise UsageError("a dataset runs over the position groups (--positions groups): token positions differ between items")
        if args.stream == "vision":
            raise UsageError(f"{name} runs on the language model (--stream lm)")
        return
    if not args.image:
        raise UsageError("trace needs an IMAGE, or --dataset")
    if args.n is not None or args.image_dir:
        raise UsageError("--n and --image-dir are for --dataset")
    if args.stream == "vision":
        raise UsageError(f"{name} runs on the language model (--stream lm)")
    kind = args.corruption.split(":")[0]
    if name in CORRUPTING and kind == "interchange" and not args.interchange:
        raise UsageError("--corruption interchange needs --interchange IMAGE2")


def _method(args):
    from ..eval.flow import method_of

    spec = args.method if method_name(args) == str(args.method).split(":")[0] else "knockout"
    return method_of(spec, components=tuple(args.components), positions=args.positions, window=args.window,
                     window_mode=args.window_mode, samples=args.samples, seed=args.noise_seed, batch_size=args.batch_size,
                     edges=tuple(args.knockout) if args.knockout else None, foil=args.foil)


def _plot(name: str, arrays: dict, meta: dict, path: str, title: str) -> None:
    import numpy as np

    from ..core.result import Result
    from ..viz.flow_plot import plot_dla, plot_knockout_flow, plot_layer_curves
    from ..viz.trace_plot import plot_trace

    if name == "knockout":
        labels = [f"{w[0]}" if len(w) == 1 else f"{w[0]}-{w[-1]}" for w in meta["windows"]]
        plot_knockout_flow(np.asarray(arrays["drop"]), meta["edges"], labels, path, title=title)
    elif name == "dla":
        plot_dla(np.asarray(arrays["components"]), np.asarray(arrays["heads"]), float(np.asarray(arrays["direct"]).ravel()[0]),
                 float(np.asarray(arrays["total"]).ravel()[0]), path, title=title)
    elif name == "parts":
        rr = np.asarray(arrays["rr"])
        plot_layer_curves({f"{p} part" if p != "whole" else "whole attention output": rr[i] for i, p in enumerate(meta["parts"])},
                          path, title=title, ylabel="recovery rate of P(target)")
    else:
        key = "rr" if meta.get("metric", "prob") == "prob" else "ie"
        r = Result("relp", {"rr": np.asarray(arrays[key]), "p_clean": np.asarray(arrays["p_clean"]).ravel()[:1],
                            "p_corrupt": np.asarray(arrays.get("p_corrupt", arrays["p_clean"])).ravel()},
                   meta={k: meta[k] for k in ("components", "layers", "positions")})
        plot_trace(r, path, title=title)


def run(args) -> int:
    """Run a flow method on one image or a dataset, write ``--json`` (and ``--plot``), print a summary."""
    import numpy as np

    from ..core.io import write_json

    check(args)
    m = _method(args)  # options checked before any model loads
    name = m.name
    if args.dataset:
        from .trace import _items
        from ..eval.flow import flow_dataset
        from ..scale import WorkerPool

        items, info = _items(args)  # read (and checked) before the model loads
        with WorkerPool(args.model, args.workers, args.address, load_options=A.load_kwargs(args)) as pool:
            out = flow_dataset(pool, items, m, args.corruption, args.noise, progress=sys.stderr.isatty())
            model = pool.local_adapter().name if args.workers <= 1 else args.model
        out["meta"].update(model=model, dataset=info["dataset"], kinds=info["kinds"], seed=info["seed"], workers=args.workers)
        write_json(args.json, out, flag="--json")
        arrays, meta = out["mean"], out["meta"]
        title = f"{model}: {name}, mean over {meta['n']} items"
    else:
        from .. import load
        from ..core.images import load_image
        from ..core.items import Item, Object
        from ..eval.flow import flow_item

        img = load_image(args.image, name="IMAGE")
        item = Item(img, args.prompt, args.target, [Object(args.object or "object", args.box)] if args.box else [], args.image,
                    "trace", {"object": args.object})
        model = load(args.model, **A.load_kwargs(args))
        r = flow_item(model, item, m, args.corruption, args.noise, saliency=args.saliency, object_fraction=args.object_fraction,
                      interchange=load_image(args.interchange, name="IMAGE2") if args.interchange else None,
                      progress=sys.stderr.isatty())
        r.meta.update({"model": model.name, "image": args.image, "method": name})
        out = r.to_json()
        write_json(args.json, out, flag="--json")
        arrays, meta = out["arrays"], out["meta"]
        title = f"{model.name}: {name} of {meta['target']!r}"
        if name == "parts":
            title = (f"{model.name}: last token's attention restored by key group, P({meta['target']!r}) clean "
                     f"{float(np.ravel(arrays['p_clean'])[0]):.3f}, corrupted {float(np.mean(arrays['p_corrupt'])):.3f}")
    if args.plot:
        _plot(name, arrays, meta, args.plot, title)
    if name == "knockout":
        d = np.asarray(arrays["drop"])
        for e, row in zip(meta["edges"], d):
            k = int(np.argmax(row))
            print(f"  {e:22s} largest drop {100 * row[k]:.1f}% at layers {meta['windows'][k]}")
    elif name == "dla":
        c = np.asarray(arrays["components"])
        total = float(np.asarray(arrays["total"]).ravel()[0])
        l, k = np.unravel_index(np.argmax(np.abs(c)), c.shape)[::-1]
        print(f"  logit difference {total:.4f} (target {meta['target']!r} vs {meta.get('foil')!r}); "
              f"largest part: layer {l} {meta['components'][k]} {c[k, l]:+.4f}; direct path {float(np.asarray(arrays['direct']).ravel()[0]):+.4f}")
    elif name == "parts":
        rr = np.asarray(arrays["rr"])
        for p, row in zip(meta["parts"], rr):
            what = "whole attention output" if p == "whole" else f"{p} keys' part"
            print(f"  last token's {what:22s} largest RR {row.max():.3f} at layer {meta['layers'][int(row.argmax())]}")
    else:
        ie = np.asarray(arrays["ie"])
        c, l, g = np.unravel_index(np.argmax(ie), ie.shape)
        print(f"  largest estimated effect {ie[c, l, g]:.4f}: {meta['components'][c]} at layer {meta['layers'][l]}, positions {meta['positions'][g]}")
    print(f"wrote {args.json}" + (f" and {args.plot}" if args.plot else ""))
    return 0


__all__ = ["run", "check", "method_name"]
