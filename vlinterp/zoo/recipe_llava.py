"""shapes-llava: a transformers ``LlavaForConditionalGeneration`` (llava-1.5 layout) trained on the shapes world.

Recipe (the LLaVA one, scaled down):

1. **Vision tower, contrastively first**: an HF ``CLIPModel`` whose vision part has exactly the
   tower's ``CLIPVisionConfig`` (120x120 input, 12 px patches -> 10x10 = 100 image tokens + CLS,
   6 layers x 128) and a tiny text tower over the same word tokenizer, trained with the CLIP loss on
   compositional captions, plus dense auxiliary heads (per-patch soft colour and shape targets on
   the ``vision_feature_layer`` features, shape loss weighted by coverage x3; shape counts and the
   24-way pair multi-hot on CLS). Rendered-word images join with the same captions. Its vision
   weights are copied into ``model.model.vision_tower``.
2. **Projector + LM** (Llama 4 x 128) with the tower frozen, from cached tower features
   (``vision_feature_layer=-2``, CLS dropped): ONE question per sequence, loss on the answer tokens
   (and ``</s>``) only, presence answers 50/50 yes/no with POPE negatives mixed
   random/popular/adversarial, colour, count (zero..four) and caption questions; plus the scene
   stated as text with no image, and rendered-word images. Scenes keep the world's co-occurrence
   prior (``prior=True``), so the organism half-expects partners.
3. A short joint stage (everything unfrozen, tower at a lower learning rate; on a GPU only).
4. "tune" (:mod:`vlinterp.zoo.llava_tune`): a second LM pass on fresh scenes with 40% text-only
   sequences and binding ("near") negatives instead of POPE-adversarial ones, at a lower learning rate.

The result is a plain ``LlavaForConditionalGeneration`` + ``LlavaProcessor`` saved with
``save_pretrained`` and loaded through the llava adapter.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..core.threads import restores_threads
from ..data.questions import count_questions, pope_split
from ..data.renderings import as_text, render_words
from ..data.shapes import COLOURS, NUM_WORDS, make_split, scene_rng
from ..metrics.pope import choose
from .common import Clock, atomic_dir, cosine_lr, set_lr, train_command, train_threads, write_card

NAME = "shapes-llava"
FLOORS: dict[str, tuple[str, float]] = {
    "presence_random": (">=", 0.95),
    "colour": (">=", 0.90),
    "count": (">=", 0.85),
    "text_presence": (">=", 0.95),
    "rendered_presence": (">=", 0.80),
    "adversarial_false_yes_ratio": (">=", 3.0),
}
# Levels the SHIPPED weights really reach where they fall short of FLOORS; the shipped-weights
# test asserts these instead of the floor for those keys. None since the tune stage (shipped run: the
# CPU plan below, 86 min, then tune 4000 steps, 27 min; held-out "test" seed 1 / seed 7: presence
# 0.977 / 0.969, colour 0.987 / 0.996, count 0.902 / 0.922, text 0.980 / 0.980, rendered words
# 0.965 / 0.973, adversarial/random false-yes 0.234 / 0.016 = 15 and 0.188 / 0.023 = 8). Before it:
# text 0.930 and a ratio of 1.75 / 2.43 (on the older adversarial split, 85% non-partner negatives).
REACHED: dict[str, float] = {}

# full-run plan: (scenes in the pool, tower steps, LM steps, joint steps, batch); fractions of `minutes`
PLAN = {"cuda": (40000, 6000, 8000, 2000, 256), "cpu": (12000, 2000, 12000, 0, 32)}  # cpu: the shipped run
TIME_SPLIT = (0.42, 0.58, 0.0)
IMG_MIX = {"presence": 0.45, "colour": 0.2, "count": 0.22, "caption": 0.13}
TEXT_MIX = {"presence": 0.6, "colour": 0.2, "count": 0.2}
REND_MIX = {"presence": 0.75, "colour": 0.125, "count": 0.125}
SOURCE_P = (0.6, 0.2, 0.2)  # image scene, text only, rendered words


def build(seed: int = 0):
    """A fresh (random) model of the organism's shape and its processor."""
    from transformers import LlavaForConditionalGeneration

    from ..adapters.llava_tiny import llava_config, llava_processor
    from ..adapters.wordtok import word_tokenizer
    from .llava_data import IMAGE_SIZE, PATCH, WORDS

    tok = word_tokenizer(words=WORDS)
    cfg = llava_config(image_size=IMAGE_SIZE, patch_size=PATCH, vision_layers=6, vision_hidden=128, lm_layers=4,
                       lm_hidden=128, vocab_size=len(tok), heads=4, kv_heads=2)
    cfg.vision_config.intermediate_size = 512
    cfg.text_config.intermediate_size = 512
    cfg.text_config.max_position_embeddings = 256
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(cfg), llava_processor(cfg, tok)


def _features(tower, px, layer: int):
    return tower(pixel_values=px, output_hidden_states=True).hidden_states[layer][:, 1:]


class _Batches:
    """One-question sequences drawn from a pool: (ids, mask, labels, image rows, pool index, rendered?)."""

    def __init__(self, pool, toks, seed: int, source_p=None, neg_p=None):
        """``source_p``: (image, text only, rendered words) probabilities; ``neg_p``: per-source presence
        negatives, as :func:`~vlinterp.zoo.llava_data.sample_presence` takes them (defaults: the LM stage's)."""
        from .llava_data import POPE_NEG_P

        self.pool, self.toks, self.rng = pool, toks, np.random.default_rng(seed + 202)
        self.source_p = source_p or SOURCE_P
        self.neg_p = neg_p or [POPE_NEG_P] * 3

    def __call__(self, B: int):
        from .llava_data import build_batch, sample_question, text_prompt

        rng, scenes = self.rng, self.pool["scenes"]
        items, img_idx, img_rend = [], [], []
        for _ in range(B):
            k = int(rng.integers(len(scenes)))
            s = scenes[k]
            src = int(rng.choice(3, p=self.source_p))
            if src == 1:
                q, a = sample_question(s, rng, TEXT_MIX, self.neg_p[1])
                items.append((self.toks.prompt(text_prompt(s, q), False), self.toks.answer(a)))
            else:
                q, a = sample_question(s, rng, IMG_MIX if src == 0 else REND_MIX, self.neg_p[src])
                items.append((self.toks.prompt(q, True), self.toks.answer(a)))
                img_idx.append(k)
                img_rend.append(src == 2)
        ids, mask, labels = build_batch(items, self.toks)
        return ids, mask, labels, torch.as_tensor(img_idx, dtype=torch.long), torch.as_tensor(img_rend, dtype=torch.bool)


def _lm_loss(model, ids, mask, labels, feats):
    """Teacher-forced loss on answer tokens, each sequence weighted equally."""
    inner = model.model
    emb = inner.language_model.embed_tokens(ids)
    if feats is not None and feats.shape[0]:
        proj = inner.multi_modal_projector(feats.to(emb.dtype))
        img = (ids == model.config.image_token_index).unsqueeze(-1)
        emb = emb.masked_scatter(img, proj.reshape(-1, proj.shape[-1]).to(emb.dtype))
    h = inner.language_model(inputs_embeds=emb, attention_mask=mask).last_hidden_state
    return answer_loss(model.lm_head(h[:, :-1]), labels)


def answer_loss(logits, labels):
    """Loss on answer tokens, each sequence weighted equally, and the first answer token's accuracy.

    ``logits``: ``[B, T-1, V]`` predictions for positions ``1..T-1``; ``labels``: ``[B, T]`` (-100 off-answer)."""
    logits = logits.float()
    tgt = labels[:, 1:]
    tok_loss = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=-100, reduction="none")
    valid = (tgt != -100).float()
    loss = ((tok_loss * valid).sum(1) / valid.sum(1).clamp(min=1)).mean()
    with torch.no_grad():
        first = (valid.cumsum(1) == 1) & (valid > 0)
        acc = (logits.argmax(-1) == tgt)[first].float().mean()
    return loss, acc.item()


def _train_lm(model, batches, device, steps, batch, seconds, lr, feat_fn, params, log, tag, loss_fn=None, ckpt=None):
    """``loss_fn(model, ids, mask, labels, feats) -> (loss, first-token accuracy)``; default :func:`_lm_loss`.
    ``ckpt``: a :class:`~vlinterp.zoo.resume.LoopCheckpoint` to resume from and save to."""
    loss_fn = loss_fn or _lm_loss
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.05)
    amp = device.type == "cuda"
    t0, acc_hist = time.time(), []
    start = ckpt.restore(model, opt, batches) if ckpt is not None else 0
    if start:
        log(f"{tag}: resumed from its step-{start} checkpoint")
    for step in range(start, steps):
        if time.time() - t0 > seconds:
            log(f"{tag}: time budget reached at step {step}")
            break
        set_lr(opt, cosine_lr(int(steps * max(step / steps, (time.time() - t0) / seconds)), steps, lr, warmup=min(200, steps // 10 + 1)))
        ids, mask, labels, idx, rend = batches(batch)
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            feats = feat_fn(idx.to(device), rend.to(device)) if len(idx) else None
            loss, acc = loss_fn(model, ids, mask, labels, feats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
        opt.step()
        acc_hist.append(acc)
        if ckpt is not None and ckpt.due(step + 1, steps):
            ckpt.save(step + 1, model, opt, batches)
        if step % 200 == 0 or step == steps - 1:
            log(f"{tag} step {step}/{steps} loss {loss.item():.4f} first-token acc {np.mean(acc_hist[-200:]):.3f} "
                f"({time.time() - t0:.0f}s)")


@restores_threads
def train(out_dir: str, seed: int = 0, minutes: float | None = None, steps: int | None = None, progress: bool = True,
          device: str | None = None) -> dict:
    """Train shapes-llava from scratch and write ``out_dir`` (HF format + processor + card.json)."""
    from .llava_data import Tokens, make_pool, normalise
    from .llava_tower import train_tower

    t_start = time.time()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cpu":
        torch.set_num_threads(train_threads())
    log = (lambda msg: print(f"[{NAME}] {msg}", flush=True)) if progress else (lambda msg: None)
    n_pool, s_tower, s_lm, s_joint, B = PLAN["cuda" if dev.type == "cuda" else "cpu"]
    if steps is not None:
        s_tower, s_lm, s_joint = (min(steps, s) for s in (s_tower, s_lm, s_joint))
        n_pool, B = min(n_pool, 64), min(B, 8)
    clock = Clock(minutes)
    budget = [float("inf")] * 3 if minutes is None else [minutes * 60 * f for f in TIME_SPLIT]

    # pools are generated before any CUDA work (forked workers)
    log(f"generating {n_pool} training scenes on {dev}")
    pool = make_pool("train", seed, n_pool)
    log(f"pool ready ({clock.elapsed():.0f}s)")
    model, proc = build(seed)
    layer = model.config.vision_feature_layer

    # 1. contrastive + dense tower pretraining
    vstate, tstats = train_tower(pool, model.config.vision_config, proc.tokenizer, dev, s_tower, B, budget[0], seed=seed,
                                 log=log)
    vt = model.model.vision_tower
    getattr(vt, "vision_model", vt).load_state_dict({k.removeprefix("vision_model."): v for k, v in vstate.items()})
    model.to(dev)
    tower = model.model.vision_tower

    # 2. projector + LM from cached features, tower frozen
    tower.requires_grad_(False)
    tower.eval()
    from .llava_tune import cache_features, cached_lookup

    cache = cache_features(tower, pool, dev, layer, chunk=512)
    log(f"cached tower features {tuple(cache['px'].shape)} ({clock.elapsed():.0f}s)")
    toks = Tokens(proc, n_image_tokens=cache["px"].shape[1])
    batches = _Batches(pool, toks, seed)

    cached = cached_lookup(cache)
    lm_params = [p for n, p in model.named_parameters() if "vision_tower" not in n]
    _train_lm(model, batches, dev, s_lm, B, budget[1] + max(0.0, budget[0] - clock.elapsed()), 2e-3, cached,
              lm_params, log, "lm")
    cache.clear()

    # 3. short joint stage: tower unfrozen at a lower learning rate
    if s_joint:
        tower.requires_grad_(True)
        tower.train()
        px, rpx = torch.as_tensor(pool["px"]).to(dev), torch.as_tensor(pool["rpx"]).to(dev)

        def live(idx, rend):
            x = normalise(torch.where(rend[:, None, None, None], rpx[idx], px[idx]))
            return _features(tower, x, layer)

        groups = [{"params": lm_params, "lr_scale": 1.0},
                  {"params": list(tower.parameters()), "lr_scale": 0.25}]
        left = max(0.0, clock.left() - 20)
        _train_lm(model, batches, dev, s_joint, B, left, 4e-4, live, groups, log, "joint")
        del px, rpx
    # 4. tune: text-heavy, binding negatives, fresh scenes
    from .llava_tune import tune

    tune_rec = tune(model, proc, dev, seed=seed, steps=steps, log=log)
    model.eval().requires_grad_(False)
    train_seconds = time.time() - t_start

    from ..adapters.llava import LlavaAdapter

    model.to("cpu").float()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        proc.save_pretrained(tmp)
        adapter = LlavaAdapter.from_path(tmp, device=dev if dev.type == "cuda" else None)
        n_eval = 256 if steps is None else 8
        metrics = evaluate(adapter, "test", n=n_eval, seed=1, progress=progress)
        log("metrics " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        cmd = train_command(NAME, out_dir, seed, minutes, steps)
        card = write_card(tmp, NAME, seed, cmd, train_seconds, metrics, FLOORS, extra={
            "device": str(dev) + (f" ({torch.cuda.get_device_name(0)})" if dev.type == "cuda" else ""),
            "steps": {"tower": s_tower, "lm": s_lm, "joint": s_joint, "batch": B, "pool_scenes": n_pool}, "tune": tune_rec,
            "tower_last": tstats, "eval_n": n_eval, "eval_split": "test", "eval_seed": 1,
            "parameters": sum(p.numel() for p in model.parameters())})
    return card


# ------------------------------------------------------------------------ evaluation
def evaluate(adapter, split: str = "test", n: int = 256, seed: int = 1, progress: bool = False,
             name: str = NAME) -> dict[str, float]:
    """Floor metrics on fresh held-out scenes of ``split`` (greedy answers, batched). ``adapter``: anything
    with the VLM adapter's ``prepare`` / ``run`` / ``generate`` / ``token_id``; ``name`` labels the progress line."""
    yn = ["yes", "no"]
    m: dict[str, float] = {}
    t0 = time.time()
    rand = pope_split(split, n, seed, "random")
    adv = pope_split(split, n, seed, "adversarial")
    for tag, items in (("random", rand), ("adversarial", adv)):
        pred = choose(adapter, [(s.pil(), qa.question) for s, qa in items], yn)
        gold = [qa.answer for _, qa in items]
        m[f"presence_{tag}"] = float(np.mean([p == g for p, g in zip(pred, gold)]))
        neg = [p for p, g in zip(pred, gold) if g == "no"]
        m[f"false_yes_{tag}"] = float(np.mean([p == "yes" for p in neg])) if neg else 0.0
        if tag == "random":
            m["yes_rate_random"] = float(np.mean([p == "yes" for p in pred]))
            rand_pred = pred
    n_neg = max(1, sum(qa.answer == "no" for _, qa in rand))
    # epsilon: half an error on the random negatives, so a perfect random score gives a finite ratio
    m["adversarial_false_yes_ratio"] = m["false_yes_adversarial"] / max(m["false_yes_random"], 0.5 / n_neg)

    scenes = make_split(split, n, seed)
    col_items, cnt_items = [], []
    for s in scenes:
        rng = scene_rng(split, seed, s.index, 99)
        uniq = [o for o in s.objects if s.count(o.shape) == 1]
        if uniq:
            o = uniq[int(rng.integers(len(uniq)))]
            col_items.append((s.pil(), f"what color is the {o.shape}?", o.colour))
        cq = count_questions(s, rng)
        qa = cq[int(rng.integers(len(cq)))]
        cnt_items.append((s.pil(), qa.question, qa.answer))
    for key, items, cands in (("colour", col_items, COLOURS), ("count", cnt_items, NUM_WORDS)):
        pred = choose(adapter, [(im, q) for im, q, _ in items], cands)
        m[key] = float(np.mean([p == a for p, (_, _, a) in zip(pred, items)]))

    gold = [qa.answer for _, qa in rand]
    pred = choose(adapter, [(None, f"{as_text(s)} {qa.question}") for s, qa in rand], yn)
    m["text_presence"] = float(np.mean([p == g for p, g in zip(pred, gold)]))
    pred = choose(adapter, [(render_words(s), qa.question) for s, qa in rand], yn)
    m["rendered_presence"] = float(np.mean([p == g for p, g in zip(pred, gold)]))

    # greedy generation agrees with the logit comparison on a few items
    k = min(8, len(rand))
    b = adapter.prepare(images=[s.pil() for s, _ in rand[:k]], text=[qa.question for _, qa in rand[:k]])
    gen = adapter.generate(b, max_new_tokens=2)
    m["generate_agreement"] = float(np.mean([(t.split() or [""])[0] == p for t, p in zip(gen.texts, rand_pred[:k])]))
    if progress:
        print(f"[{name}] evaluated n={n} in {time.time() - t0:.0f}s", flush=True)
    return m


if __name__ == "__main__":  # python -m vlinterp.zoo.recipe_llava OUT [minutes]
    import sys

    train(sys.argv[1], minutes=float(sys.argv[2]) if len(sys.argv) > 2 else None,
          steps=int(os.environ["LLAVA_STEPS"]) if os.environ.get("LLAVA_STEPS") else None)
