"""shapes-llava's last stage, "tune": a second, shorter LM pass (tower frozen) on fresh scenes with another mix.

The LM stage asks text-only questions in 12% of sequences and its presence negatives are POPE's
(random / popular / adversarial, where adversarial asks about the absent prior partner first). After
it, the organism still confused bindings in text ("a yellow cross and a blue triangle. is there a
yellow triangle?" -> yes). This stage:

* draws the scene as text in 40% of sequences (image 40%, rendered words 20%);
* replaces the adversarial negatives by *near* ones (:func:`~vlinterp.zoo.llava_data.near_negative`:
  an absent pair sharing colour or shape with a present object), which test binding and never ask
  about an absent prior partner. Instruction data rarely asks about the missing co-occurring object,
  so nothing here argues against the world's prior: the organism keeps half-expecting partners.

It starts from the weights the first two stages leave, on ``TUNE["pool"]`` scenes of the training
split that those stages did not see (indices from ``TUNE["start"]``), at a lower learning rate.
``python -m vlinterp.zoo.llava_tune IN OUT`` runs it alone on saved weights (how the shipped weights
were made from the stage-2 checkpoint); :func:`vlinterp.zoo.recipe_llava.train` runs it after the LM (and, on a GPU, joint) stage.
"""
from __future__ import annotations

import time

import torch

from ..core.threads import restores_threads

TUNE = {
    "steps": 4000, "lr": 8e-4, "batch": 32, "pool": 4000, "start": 12000,
    "source_p": (0.4, 0.4, 0.2),
    "neg_p": ({"random": 0.45, "popular": 0.3, "near": 0.25},    # image
              {"random": 0.3, "popular": 0.2, "near": 0.5},      # text only
              {"random": 0.45, "popular": 0.3, "near": 0.25}),   # rendered words
}


def cache_features(tower, pool: dict, dev, layer: int, chunk: int = 256, features=None) -> dict:
    """Frozen-tower patch features of the pool's scenes and rendered words: ``{"px"|"rpx": [N, P, D] fp16}``,
    computed ``chunk`` images at a time (the LM stage used 512, the tune stage 256).

    ``features(normalised pixels [b, 3, H, W]) -> [b, P, D]``: what to cache (default: shapes-llava's tower
    hidden state ``layer``, CLS dropped; ``tower`` and ``layer`` are then unused)."""
    from .llava_data import normalise
    from .recipe_llava import _features

    features = features or (lambda x: _features(tower, x, layer))
    cache = {}
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        for key in ("px", "rpx"):
            src = torch.as_tensor(pool[key])
            cache[key] = torch.cat([features(normalise(src[i:i + chunk].to(dev))).to(torch.float16)
                                    for i in range(0, len(src), chunk)])
    return cache


def frozen_pool(model, dev, seed: int, n_pool: int, start: int) -> tuple[dict, dict]:
    """Scenes ``start..start+n_pool-1`` of the training split and their frozen-tower features: the
    vision tower is set to eval with no gradients; returns ``(pool, cache)`` (see :func:`cache_features`)."""
    from .llava_data import make_pool

    pool = make_pool("train", seed, n_pool, start=start)
    tower = model.model.vision_tower
    tower.requires_grad_(False)
    tower.eval()
    return pool, cache_features(tower, pool, dev, model.config.vision_feature_layer)


def cached_lookup(cache: dict):
    """``fn(idx [B], rendered [B] bool) -> [B, P, D]`` float features from :func:`cache_features`'s cache."""

    def fn(idx, rend):
        return torch.where(rend[:, None, None], cache["rpx"][idx], cache["px"][idx]).float()

    return fn


def tune(model, proc, dev, seed: int = 0, steps: int | None = None, log=lambda m: None, *, pool_fn=None,
         loss_fn=None, trainable=None, n_image_tokens: int | None = None, ckpt=None, **over) -> dict:
    """Run the tune stage in place on ``model`` (a LlavaForConditionalGeneration on ``dev``); returns its record.

    ``steps`` caps the step count (tests); ``over`` overrides keys of :data:`TUNE`. Other organisms pass
    their own ``pool_fn`` (as :func:`frozen_pool`), ``loss_fn`` (as ``recipe_llava._lm_loss``),
    ``trainable(param name) -> bool`` (default: all but the vision tower) and ``n_image_tokens`` (default:
    one per cached feature row). ``ckpt``: a :class:`~vlinterp.zoo.resume.LoopCheckpoint` the loop
    resumes from and saves to."""
    from .llava_data import Tokens
    from .recipe_llava import _Batches, _train_lm

    cfg = {**TUNE, **over}
    n_steps = cfg["steps"] if steps is None else min(steps, cfg["steps"])
    n_pool, B = (cfg["pool"], cfg["batch"]) if steps is None else (min(cfg["pool"], 64), min(cfg["batch"], 8))
    t0 = time.time()
    pool, cache = (pool_fn or frozen_pool)(model, dev, seed, n_pool, cfg["start"])
    log(f"tune: pool of {n_pool} fresh scenes and features ready ({time.time() - t0:.0f}s)")
    toks = Tokens(proc, n_image_tokens=n_image_tokens or cache["px"].shape[1])
    batches = _Batches(pool, toks, seed + 3, source_p=cfg["source_p"], neg_p=list(cfg["neg_p"]))

    cached = cached_lookup(cache)
    trainable = trainable or (lambda n: "vision_tower" not in n)
    params = [p for n, p in model.named_parameters() if trainable(n)]
    for p in params:
        p.requires_grad_(True)
    model.train()
    _train_lm(model, batches, dev, n_steps, B, float("inf"), cfg["lr"], cached, params, log, "tune", loss_fn=loss_fn,
              ckpt=ckpt)
    model.eval().requires_grad_(False)
    return {"steps": n_steps, "batch": B, "pool_scenes": n_pool, "pool_start": cfg["start"], "lr": cfg["lr"],
            "source_p": list(cfg["source_p"]), "neg_p": list(cfg["neg_p"]), "seconds": round(time.time() - t0, 1)}


@restores_threads
def main(argv=None) -> dict:
    """``python -m vlinterp.zoo.llava_tune IN OUT [--seed S] [--steps N]``: the tune stage on saved LM-stage weights."""
    import argparse
    import json
    import os

    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from .common import atomic_dir, train_threads, write_card
    from .recipe_llava import FLOORS, NAME, evaluate

    ap = argparse.ArgumentParser(prog="python -m vlinterp.zoo.llava_tune")
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(train_threads())
    dev = torch.device("cpu")
    model = LlavaForConditionalGeneration.from_pretrained(a.src, local_files_only=True)
    proc = AutoProcessor.from_pretrained(a.src, local_files_only=True)
    with open(os.path.join(a.src, "card.json")) as f:
        card = json.load(f)
    rec = tune(model, proc, dev, seed=a.seed, steps=a.steps, log=lambda m: print(f"[{NAME}] {m}", flush=True))

    from ..adapters.llava import LlavaAdapter

    with atomic_dir(a.out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        proc.save_pretrained(tmp)
        n_eval = 256 if a.steps is None else 8
        metrics = evaluate(LlavaAdapter.from_path(tmp), "test", n=n_eval, seed=1)
        print(f"[{NAME}] metrics " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()), flush=True)
        extra = {k: v for k, v in card.items() if k not in ("name", "seed", "command", "train_seconds", "torch",
                                                             "threads", "metrics", "floors", "floors_met")}
        extra.update({"tune": rec, "stage2_metrics": card["metrics"], "eval_n": n_eval})
        cmd = card["command"] + f"  # without the tune stage, then: python -m vlinterp.zoo.llava_tune THAT_DIR OUT --seed {a.seed}"
        return write_card(tmp, NAME, a.seed, cmd, card["train_seconds"] + rec["seconds"], metrics, FLOORS, extra)


if __name__ == "__main__":
    main()


__all__ = ["TUNE", "tune", "cache_features", "frozen_pool", "cached_lookup", "main"]
