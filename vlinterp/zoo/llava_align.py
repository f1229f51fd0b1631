"""The ``shapes-llava-aligned`` organism: shapes-llava plus a fifth stage, "align", that ties each
colour and shape word to the image patches that show it, inside the language model (shapes-llava
itself ships without it, so every measurement made on it stands).

Why: after stages 1-4 the organism answers well but keeps a colour's patch direction and its word
direction nearly orthogonal at every LM residual site (cosine -0.17 to 0.17), so no SAE feature can
fire on both and SAE-V's cross-modal analysis has nothing to find. Real MLLMs get such shared
directions from caption pretraining over a language model that already knows the words; the
organism learned its LM and its visual tokens together from scratch and never needed them.

What it does, from the shipped weights (tower frozen, projector + LM trained):

* the tune stage's question batches (same mix, fresh scenes) keep the answers as they are;
* caption sequences (``describe the image.`` answered by the scene's caption, the format the SAE
  store harvests) are run teacher-forced, and at the residual outputs of ``ALIGN["layers"]``
  - **direction loss**: per colour (and per shape) present in the batch, ``1 - cos`` between its
    image direction (mean state of the patches covering an object of that colour, minus the mean
    object-patch state) and its word direction (mean state of that colour word in the captions,
    minus the mean colour-word state);
  - **shared-prototype loss**: every such patch and word state, centred on its own group's mean,
    is classified by cosine against one learned prototype per colour (shape) that both modalities
    share (temperature 0.1);
  plus the captions' own answer loss.

``python -m vlinterp.zoo.llava_align IN OUT [--steps N]`` runs it on saved weights and writes a card
with the floor metrics; the prototypes are training-only and are not saved.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..core.threads import restores_threads
from .recipe_llava import FLOORS, evaluate  # noqa: F401  (the zoo reads a recipe's FLOORS and evaluate)

NAME = "shapes-llava-aligned"
# every shapes-llava floor holds for the aligned variant too (its test checks them); none is short
REACHED: dict[str, float] = {}

ALIGN = {
    "steps": 1500, "lr": 4e-4, "batch": 32, "caption_batch": 16, "pool": 3000, "start": 16000,
    "layers": (1, 2), "weight": 1.0, "temperature": 0.1, "min_cover": 0.5,
}


def _caption_batch(pool, toks, rng, n: int):
    """``n`` caption sequences: ids/mask/labels, pool indices, and the answer's start per row."""
    from ..data.questions import CAPTION_QUESTION, caption
    from .llava_data import build_batch

    idx = rng.integers(len(pool["scenes"]), size=n)
    items = [(toks.prompt(CAPTION_QUESTION, True), toks.answer(caption(pool["scenes"][int(k)]))) for k in idx]
    ids, mask, labels = build_batch(items, toks)
    return ids, mask, labels, torch.as_tensor(idx, dtype=torch.long)


def _labels(pool, idx, ids, toks, min_cover: float):
    """Per token of the caption batch: colour and shape class (-1: none) for image patches covering an
    object by ``min_cover``, and for the answer's colour and shape words. Returns ``(col, shp, is_img)``,
    each ``[B, T]``."""
    from ..data.shapes import COLOURS, SHAPES

    B, T = ids.shape
    col = torch.full((B, T), -1, dtype=torch.long)
    shp = torch.full((B, T), -1, dtype=torch.long)
    is_img = ids == toks.image_id
    pc = torch.as_tensor(pool["colour"][idx.numpy()])            # [B, P, 7], column 0 background
    ps = torch.as_tensor(pool["shape"][idx.numpy()])             # [B, P, S] (normalised over objects)
    cover = torch.as_tensor(pool["cover"][idx.numpy()])          # [B, P]
    c_max, c_arg = pc[..., 1:].max(-1)
    pcol = torch.where(c_max >= min_cover, c_arg, torch.full_like(c_arg, -1))
    pshp = torch.where(cover >= min_cover, ps.argmax(-1), torch.full_like(c_arg, -1))
    for b in range(B):
        pos = is_img[b].nonzero().squeeze(1)
        col[b, pos], shp[b, pos] = pcol[b, : len(pos)], pshp[b, : len(pos)]
    tok = toks.tok
    for ci, c in enumerate(COLOURS):
        col[(ids == tok.convert_tokens_to_ids(c)) & ~is_img] = ci
    for si, s in enumerate(SHAPES):
        shp[(ids == tok.convert_tokens_to_ids(s)) & ~is_img] = si
    return col, shp, is_img


def alignment_loss(h: torch.Tensor, lab: torch.Tensor, is_img: torch.Tensor, protos: torch.Tensor, tau: float):
    """Direction + shared-prototype loss for one layer's states ``h [B, T, D]`` and classes ``lab [B, T]``
    (-1: ignore); returns ``(loss, mean direction cosine)``."""
    m_img, m_txt = (lab >= 0) & is_img, (lab >= 0) & ~is_img
    if not m_img.any() or not m_txt.any():
        return h.sum() * 0, float("nan")
    hi, li = h[m_img], lab[m_img]
    ht, lt = h[m_txt], lab[m_txt]
    ci, ct = hi - hi.mean(0), ht - ht.mean(0)
    cos = []
    for k in torch.unique(li).tolist():
        if (lt == k).any():
            cos.append(F.cosine_similarity(ci[li == k].mean(0), ct[lt == k].mean(0), dim=0))
    d_loss = (1 - torch.stack(cos)).mean() if cos else h.sum() * 0
    P = F.normalize(protos, dim=-1)
    ce = F.cross_entropy(F.normalize(ci, dim=-1) @ P.T / tau, li) + F.cross_entropy(F.normalize(ct, dim=-1) @ P.T / tau, lt)
    return d_loss + ce, float(torch.stack(cos).detach().mean()) if cos else float("nan")


def align(model, proc, dev, seed: int = 0, steps: int | None = None, log=lambda m: None, **over) -> dict:
    """Run the align stage in place on ``model`` (a LlavaForConditionalGeneration on ``dev``); returns its record.
    ``steps`` caps the step count (tests); ``over`` overrides keys of :data:`ALIGN`."""
    from ..data.shapes import COLOURS, SHAPES
    from .common import cosine_lr, set_lr
    from .llava_data import Tokens
    from .llava_tune import TUNE, cached_lookup, frozen_pool
    from .recipe_llava import _Batches, _lm_loss

    cfg = {**ALIGN, **over}
    n_steps = cfg["steps"] if steps is None else min(steps, cfg["steps"])
    small = steps is not None
    n_pool = min(cfg["pool"], 64) if small else cfg["pool"]
    B, Bc = (min(cfg["batch"], 8), min(cfg["caption_batch"], 4)) if small else (cfg["batch"], cfg["caption_batch"])
    t0 = time.time()
    pool, cache = frozen_pool(model, dev, seed, n_pool, cfg["start"])
    feats = cached_lookup(cache)
    toks = Tokens(proc, n_image_tokens=cache["px"].shape[1])
    batches = _Batches(pool, toks, seed + 5, source_p=TUNE["source_p"], neg_p=list(TUNE["neg_p"]))
    rng = np.random.default_rng(seed + 77)
    D = model.config.text_config.hidden_size
    g = torch.Generator().manual_seed(seed)
    protos = {"colour": torch.nn.Parameter(torch.randn(len(COLOURS), D, generator=g).to(dev)),
              "shape": torch.nn.Parameter(torch.randn(len(SHAPES), D, generator=g).to(dev))}
    params = [p for n, p in model.named_parameters() if "vision_tower" not in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params + list(protos.values()), lr=cfg["lr"], betas=(0.9, 0.98), weight_decay=0.05)
    inner = model.model
    model.train()
    hist = []
    for step in range(n_steps):
        set_lr(opt, cosine_lr(step, n_steps, cfg["lr"], warmup=min(100, n_steps // 10 + 1)))
        ids, mask, labels, idx, rend = batches(B)
        loss_q, _ = _lm_loss(model, ids.to(dev), mask.to(dev), labels.to(dev), feats(idx.to(dev), rend.to(dev)) if len(idx) else None)

        cids, cmask, clabels, cidx = _caption_batch(pool, toks, rng, Bc)
        col, shp, is_img = _labels(pool, cidx, cids, toks, cfg["min_cover"])
        cids, cmask, clabels = cids.to(dev), cmask.to(dev), clabels.to(dev)
        emb = inner.language_model.embed_tokens(cids)
        proj = inner.multi_modal_projector(feats(cidx.to(dev), torch.zeros(len(cidx), dtype=torch.bool, device=dev)))
        emb = emb.masked_scatter(is_img.to(dev).unsqueeze(-1), proj.reshape(-1, proj.shape[-1]).to(emb.dtype))
        out = inner.language_model(inputs_embeds=emb, attention_mask=cmask, output_hidden_states=True)
        logits = model.lm_head(out.last_hidden_state[:, :-1]).float()
        loss_c = F.cross_entropy(logits.transpose(1, 2), clabels[:, 1:], ignore_index=-100)
        loss_a, cos_log = 0.0, []
        for layer in cfg["layers"]:
            h = out.hidden_states[layer + 1]
            for lab, key in ((col, "colour"), (shp, "shape")):
                la, c = alignment_loss(h, lab.to(dev), is_img.to(dev), protos[key], cfg["temperature"])
                loss_a = loss_a + la
                cos_log.append(c)
        loss = loss_q + loss_c + cfg["weight"] * loss_a / (2 * len(cfg["layers"]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        hist.append((loss_q.item(), loss_c.item(), float(loss_a.detach()), float(np.nanmean(cos_log))))
        if step % 100 == 0 or step == n_steps - 1:
            h100 = np.array(hist[-100:])
            log(f"align step {step}/{n_steps} question loss {h100[:, 0].mean():.4f} caption loss {h100[:, 1].mean():.4f} "
                f"align loss {h100[:, 2].mean():.3f} direction cos {np.nanmean(h100[:, 3]):.3f} ({time.time() - t0:.0f}s)")
    model.eval().requires_grad_(False)
    return {"steps": n_steps, "batch": B, "caption_batch": Bc, "pool_scenes": n_pool, "pool_start": cfg["start"],
            "lr": cfg["lr"], "layers": list(cfg["layers"]), "weight": cfg["weight"],
            "last_direction_cos": float(np.nanmean(np.array(hist[-100:])[:, 3])), "seconds": round(time.time() - t0, 1)}


@restores_threads
def _align_dir(src: str, out: str, seed: int, steps: int | None, log, command: str, **over) -> dict:
    """Load the shapes-llava weights in ``src``, run the align stage, write ``out`` with a card
    (``command``: how to reproduce it)."""
    import json
    import os

    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from ..adapters.llava import LlavaAdapter
    from .common import atomic_dir, train_threads, write_card

    torch.set_num_threads(train_threads())
    dev = torch.device("cpu")
    model = LlavaForConditionalGeneration.from_pretrained(src, local_files_only=True)
    proc = AutoProcessor.from_pretrained(src, local_files_only=True)
    with open(os.path.join(src, "card.json")) as f:
        card = json.load(f)
    rec = align(model, proc, dev, seed=seed, steps=steps, log=log, **over)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        proc.save_pretrained(tmp)
        n_eval = 256 if steps is None else 8
        metrics = evaluate(LlavaAdapter.from_path(tmp), "test", n=n_eval, seed=1)
        log("metrics " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        extra = {k: v for k, v in card.items() if k not in ("name", "seed", "command", "train_seconds", "torch",
                                                             "threads", "metrics", "floors", "floors_met")}
        extra.update({"align": rec, "shapes_llava_metrics": card["metrics"], "eval_n": n_eval, "eval_split": "test",
                      "eval_seed": 1})
        return write_card(tmp, NAME, seed, command, card["train_seconds"] + rec["seconds"], metrics, FLOORS, extra)


def train(out_dir: str, seed: int = 0, minutes: float | None = None, steps: int | None = None, progress: bool = True,
          device: str | None = None) -> dict:
    """``vlinterp zoo train shapes-llava-aligned``: the whole shapes-llava recipe, then the align stage."""
    import tempfile

    from . import recipe_llava
    from .common import train_command

    log = (lambda msg: print(f"[{NAME}] {msg}", flush=True)) if progress else (lambda msg: None)
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "shapes-llava")
        recipe_llava.train(base, seed=seed, minutes=minutes, steps=steps, progress=progress, device=device)
        return _align_dir(base, out_dir, seed, steps, log, train_command(NAME, out_dir, seed, minutes, steps))


def main(argv=None) -> dict:
    """``python -m vlinterp.zoo.llava_align IN OUT [--seed S] [--steps N]``: the align stage on saved
    shapes-llava weights (how the shipped shapes-llava-aligned was made from shapes-llava)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m vlinterp.zoo.llava_align")
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    a = ap.parse_args(argv)
    cmd = f"python -m vlinterp.zoo.llava_align {a.src} {a.out} --seed {a.seed}" + (f" --steps {a.steps}" if a.steps else "")
    return _align_dir(a.src, a.out, a.seed, a.steps, lambda m: print(f"[{NAME}] {m}", flush=True), cmd)


if __name__ == "__main__":
    main()


__all__ = ["NAME", "FLOORS", "REACHED", "ALIGN", "align", "alignment_loss", "evaluate", "train", "main"]
