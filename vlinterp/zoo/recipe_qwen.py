"""shapes-qwen: a transformers ``Qwen2_5_VLForConditionalGeneration`` trained on the shapes world.

The organism (:mod:`vlinterp.zoo.qwen_model`): the real Qwen2.5-VL vision tower (6 blocks x 128,
window attention except blocks 2 and 5), its 2x2 patch merger and an M-RoPE Qwen2 LM (4 x 128);
140x140 input, 10x10 patches, 25 image tokens. Same world, question grammar, renderings and
co-occurrence prior as shapes-llava, and the same stages (code shared with :mod:`recipe_llava`):

1. **tower**: the vision blocks with a contrastive text tower and dense heads
   (:class:`~vlinterp.zoo.llava_tower.TowerTrainer`): per-patch soft colour / shape targets on the last
   block (what the merger reads), shape counts and the 24-way pair multi-hot on an attention-pooled
   vector (the tower has no CLS).
2. **lm**: merger + LM from cached block outputs (tower frozen), one question per sequence
   (:class:`~vlinterp.zoo.recipe_llava._Batches`: image / text-only / rendered-word sources, POPE negatives).
3. **tune** (:func:`~vlinterp.zoo.llava_tune.tune`): fresh scenes, 40% text-only, binding negatives.

Stage checkpoints go to ``OUT.stages/`` (``tower.safetensors``, ``lm/``, ``stages.json``), and the LM
and tune loops save every 500 steps inside their stage (:mod:`vlinterp.zoo.resume`), so a stopped run
resumes where it stopped (same seed and plan). The result is saved with
``save_pretrained`` (model + processor) and ``card.json``; :func:`evaluate` runs on any VLM adapter
or on the HF model directly (:class:`HFQwen`).
"""
from __future__ import annotations

import json
import math
import os
import time
from functools import partial
from types import SimpleNamespace

import torch
from torch import nn

from ..core.threads import restores_threads
from . import qwen_model as qm
from .llava_tower import TowerTrainer, text_config
from .recipe_llava import FLOORS as _LLAVA_FLOORS

NAME = "shapes-qwen"
FLOORS: dict[str, tuple[str, float]] = dict(_LLAVA_FLOORS)   # the same floors as shapes-llava
# Levels the SHIPPED weights really reach where they fall short of FLOORS (see recipe_llava.REACHED).
REACHED: dict[str, float] = {}

# (scenes in the pool, tower steps, LM steps, batch); the tune stage is llava_tune.TUNE's
PLAN = {"cuda": (40000, 6000, 8000, 256), "cpu": (12000, 2000, 10000, 32)}
TIME_SPLIT = (0.4, 0.6)
LM_LR = 2e-3


def build(seed: int = 0):
    """A fresh (random) model of the organism's shape and its processor."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    tok = qm.tokenizer()
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(qm.config(tok)), qm.processor(tok)


class QwenTowerTrainer(TowerTrainer):
    """The Qwen2.5-VL vision tower (:class:`~vlinterp.zoo.qwen_model.FastVisual` forward) with the
    shared contrastive text side and dense heads; the pooled vector is a learned-query attention pool."""

    def __init__(self, vision_config, vocab_size: int, eos_token_id: int = 3):
        nn.Module.__init__(self)
        from transformers import CLIPTextModel
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

        d = vision_config.hidden_size
        self.visual = Qwen2_5_VisionTransformerPretrainedModel._from_config(vision_config)
        self.fast = qm.FastVisual(self.visual)
        self.clip = nn.Module()
        self.clip.text_model = CLIPTextModel(text_config(vocab_size, d, eos_token_id))
        self.clip.text_projection = nn.Linear(d, d, bias=False)
        self.clip.visual_projection = nn.Linear(d, d, bias=False)
        self.clip.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.pool_query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pool_attn = nn.MultiheadAttention(d, 4, batch_first=True)
        self.pool_norm = nn.LayerNorm(d)
        self.add_heads(d)

    def encode(self, px):
        feat = self.fast.rowmajor(self.fast(qm.patchify(px)))
        q = self.pool_query.expand(feat.shape[0], -1, -1)
        return self.pool_norm(self.pool_attn(q, feat, feat, need_weights=False)[0][:, 0]), feat

    def vision_state(self) -> dict:
        return self.visual.state_dict()


def is_lm_param(name: str) -> bool:
    """Trained in the LM stages: the LM, its head and the merger (the tower's blocks stay frozen)."""
    return not name.startswith("model.visual.") or name.startswith("model.visual.merger.")


def freeze_tower(model) -> None:
    for n, p in model.named_parameters():
        p.requires_grad_(is_lm_param(n))
    model.model.visual.eval()


def frozen_pool(model, dev, seed: int, n_pool: int, start: int = 0, name: str = "train") -> tuple[dict, dict]:
    """Scenes ``start..start+n_pool-1`` of ``name`` and their frozen-tower block outputs (tower order)."""
    from .llava_data import make_pool
    from .llava_tune import cache_features

    pool = make_pool(name, seed, n_pool, start=start, pixel_fn=qm.pixels, grid=qm.GRID)
    freeze_tower(model)
    return pool, cache_features(None, pool, dev, 0, chunk=256, features=qm.features(model))


# ------------------------------------------------------------------------ training
class _Stages:
    """``OUT.stages/``: checkpoints and times of a full run's stages, so a stopped run resumes.

    Each finished stage is recorded with its key (the settings it and the stages before it depend on);
    a stage counts as done only under the same key."""

    def __init__(self, out_dir: str, enabled: bool):
        self.dir, self.enabled = os.path.abspath(out_dir) + ".stages", enabled
        self.rec = {"keys": {}, "seconds": {}}
        path = os.path.join(self.dir, "stages.json")
        if enabled and os.path.isfile(path):
            with open(path) as f:
                self.rec = json.load(f)

    def done(self, stage: str, key: dict) -> bool:
        return self.enabled and self.rec.get("keys", {}).get(stage) == key

    def loop(self, stage: str, key: dict):
        """The stage's mid-stage :class:`~vlinterp.zoo.resume.LoopCheckpoint` (None when checkpoints are off)."""
        from .resume import LoopCheckpoint

        return LoopCheckpoint(self.dir, stage, key) if self.enabled else None

    def finish(self, stage: str, key: dict, seconds: float, save=None, **extra) -> None:
        self.rec["seconds"][stage] = round(seconds, 1)
        self.rec.update(extra)
        if not self.enabled:
            return
        from ..core.io import write_json

        os.makedirs(self.dir, exist_ok=True)
        if save is not None:
            save(self.dir)
        self.rec.setdefault("keys", {})[stage] = key
        write_json(os.path.join(self.dir, "stages.json"), self.rec)


@restores_threads
def train(out_dir: str, seed: int = 0, minutes: float | None = None, steps: int | None = None, progress: bool = True,
          device: str | None = None) -> dict:
    """Train shapes-qwen from scratch (resuming from ``OUT.stages/``) and write ``out_dir``."""
    from safetensors.torch import load_file, save_file

    from ..core.io import output_dir
    from .common import train_command, train_threads, write_card
    from .llava_data import Tokens, make_pool
    from .llava_tower import train_tower
    from .llava_tune import TUNE, cached_lookup, tune
    from .recipe_llava import _Batches, _train_lm

    t_start = time.time()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cpu":
        torch.set_num_threads(train_threads())
    log = (lambda msg: print(f"[{NAME} {time.time() - t_start:6.0f}s] {msg}", flush=True)) if progress else (lambda msg: None)
    n_pool, s_tower, s_lm, B = PLAN["cuda" if dev.type == "cuda" else "cpu"]
    if steps is not None:
        s_tower, s_lm = min(steps, s_tower), min(steps, s_lm)
        n_pool, B = min(n_pool, 64), min(B, 8)
    budget = [float("inf")] * 2 if minutes is None else [minutes * 60 * f for f in TIME_SPLIT]
    st = _Stages(out_dir, enabled=steps is None and minutes is None)
    keys = {"tower": {"seed": seed, "pool": n_pool, "tower_steps": s_tower, "batch": B, "device": dev.type}}
    keys["lm"] = {**keys["tower"], "lm_steps": s_lm, "lm_lr": LM_LR}
    keys["tune"] = {**keys["lm"], "tune": {k: list(v) if isinstance(v, tuple) else v for k, v in TUNE.items()}}
    model, proc = build(seed)
    model.to(dev)

    # 1. tower: contrastive + dense; 2. merger + LM from cached block outputs
    if not st.done("lm", keys["lm"]):
        t0 = time.time()
        log(f"generating {n_pool} training scenes on {dev}")
        pool = make_pool("train", seed, n_pool, pixel_fn=qm.pixels, grid=qm.GRID)
        st.rec["seconds"]["pool"] = round(time.time() - t0, 1)
    if st.done("tower", keys["tower"]):
        model.model.visual.load_state_dict(load_file(os.path.join(st.dir, "tower.safetensors")))
        log("tower: resumed from its checkpoint")
    else:
        t0 = time.time()
        trainer = partial(QwenTowerTrainer, eos_token_id=proc.tokenizer.eos_token_id)
        vstate, tstats = train_tower(pool, model.config.vision_config, proc.tokenizer, dev, s_tower, B, budget[0],
                                     seed=seed, log=log, trainer=trainer)
        model.model.visual.load_state_dict(vstate)
        st.finish("tower", keys["tower"], time.time() - t0, lambda d: save_file({k: v.contiguous().cpu() for k, v in vstate.items()},
                                                                  os.path.join(d, "tower.safetensors")), tower_last=tstats)
    lm_dir = os.path.join(st.dir, "lm")
    if st.done("lm", keys["lm"]):
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(lm_dir, local_files_only=True).to(dev)
        log("lm: resumed from its checkpoint")
    else:
        t0 = time.time()
        freeze_tower(model)
        from .llava_tune import cache_features

        cache = cache_features(None, pool, dev, 0, chunk=256, features=qm.features(model))
        log(f"cached tower outputs {tuple(cache['px'].shape)} ({time.time() - t0:.0f}s)")
        batches = _Batches(pool, Tokens(proc, n_image_tokens=qm.N_TOKENS), seed)
        params = [p for n, p in model.named_parameters() if is_lm_param(n)]
        model.train()
        ckpt = st.loop("lm", keys["lm"])
        _train_lm(model, batches, dev, s_lm, B, budget[1] + max(0.0, budget[0] - (time.time() - t_start)), LM_LR,
                  cached_lookup(cache), params, log, "lm", loss_fn=qm.lm_loss, ckpt=ckpt)
        cache.clear()
        st.finish("lm", keys["lm"], time.time() - t0, lambda d: model.save_pretrained(lm_dir, safe_serialization=True))
        if ckpt is not None:
            ckpt.clear()
        del pool, cache

    # 3. tune: text-heavy, binding negatives, fresh scenes
    tuned_dir = os.path.join(st.dir, "tuned")
    if st.done("tune", keys["tune"]):
        from transformers import Qwen2_5_VLForConditionalGeneration

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tuned_dir, local_files_only=True).to(dev)
        tune_rec = st.rec["tune"]
        log("tune: resumed from its checkpoint")
    else:
        t0 = time.time()
        ckpt = st.loop("tune", keys["tune"])
        tune_rec = tune(model, proc, dev, seed=seed, steps=steps, log=log, pool_fn=frozen_pool, loss_fn=qm.lm_loss,
                        trainable=is_lm_param, n_image_tokens=qm.N_TOKENS, ckpt=ckpt)
        st.finish("tune", keys["tune"], time.time() - t0, lambda d: model.save_pretrained(tuned_dir, safe_serialization=True),
                  tune=tune_rec)
        if ckpt is not None:
            ckpt.clear()
    model.eval().requires_grad_(False)
    model.to("cpu").float()
    seconds = dict(st.rec["seconds"])
    train_seconds = sum(v for k, v in seconds.items())

    with output_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        proc.save_pretrained(tmp)
        n_eval = 1024 if steps is None else 8   # the prior ratio divides two rates of a few percent
        t0 = time.time()
        metrics = evaluate(HFQwen.from_path(tmp), "test", n=n_eval, seed=1, progress=progress)
        log("metrics " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        seconds["eval"] = round(time.time() - t0, 1)
        cmd = train_command(NAME, out_dir, seed, minutes, steps)
        card = write_card(tmp, NAME, seed, cmd, train_seconds, metrics, FLOORS, extra={
            "device": str(dev) + (f" ({torch.cuda.get_device_name(0)})" if dev.type == "cuda" else ""),
            "steps": {"tower": s_tower, "lm": s_lm, "batch": B, "pool_scenes": n_pool, "lm_lr": LM_LR},
            "stage_seconds": seconds, "tune": tune_rec, "tower_last": st.rec.get("tower_last"),
            "eval_n": n_eval, "eval_split": "test", "eval_seed": 1,
            "parameters": sum(p.numel() for p in model.parameters()),
            "image_tokens": qm.N_TOKENS, "image_size": qm.IMAGE_SIZE})
    return card


# ------------------------------------------------------------------------ evaluation
class HFQwen:
    """The VLM-adapter surface :func:`evaluate` and :func:`vlinterp.metrics.pope.choose` use (``prepare``,
    ``run``, ``generate``, ``token_id``) over the HF model and processor directly, with no adapter."""

    kind = "vlm"

    def __init__(self, model, processor):
        self.model, self.processor, self.tokenizer = model.eval(), processor, processor.tokenizer

    @classmethod
    def from_path(cls, path: str) -> "HFQwen":
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        return cls(Qwen2_5_VLForConditionalGeneration.from_pretrained(path, local_files_only=True),
                   AutoProcessor.from_pretrained(path, local_files_only=True))

    def token_id(self, word: str) -> int:
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id:
            from ..core.errors import PromptError

            raise PromptError(f"{word!r} is not a single token in this model's vocabulary")
        return ids[0]

    def prepare(self, images=None, text=None):
        """One chat turn per prompt (``text``: list of B strings; ``images``: B PIL images or None)."""
        prompts = [text] if isinstance(text, str) else list(text)
        head = [{"type": "image"}] if images is not None else []
        fmt = [self.processor.apply_chat_template([{"role": "user", "content": head + [{"type": "text", "text": t}]}],
                                                  add_generation_prompt=True) for t in prompts]
        enc = self.processor(images=images, text=fmt, return_tensors="pt", padding=True)
        T = enc["input_ids"].shape[1]
        return SimpleNamespace(inputs=enc, layout=SimpleNamespace(span=lambda name, row: T - 1))

    def run(self, batch):
        with torch.no_grad():
            return SimpleNamespace(logits=self.model(**batch.inputs).logits)

    def generate(self, batch, max_new_tokens: int = 8):
        with torch.no_grad():
            seq = self.model.generate(**batch.inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = seq[:, batch.inputs["input_ids"].shape[1]:]
        return SimpleNamespace(texts=[self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in new])


def evaluate(adapter, split: str = "test", n: int = 256, seed: int = 1, progress: bool = False) -> dict[str, float]:
    """shapes-llava's floor metrics (:func:`vlinterp.zoo.recipe_llava.evaluate`) on ``adapter``: a VLM
    adapter, an :class:`HFQwen`, or a saved directory (evaluated through :class:`HFQwen`)."""
    from .recipe_llava import evaluate as llava_evaluate

    if isinstance(adapter, (str, os.PathLike)):
        adapter = HFQwen.from_path(os.fspath(adapter))
    return llava_evaluate(adapter, split, n=n, seed=seed, progress=progress, name=NAME)


if __name__ == "__main__":  # python -m vlinterp.zoo.recipe_qwen OUT [--seed S] [--steps N]
    import argparse

    ap = argparse.ArgumentParser(prog="python -m vlinterp.zoo.recipe_qwen")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    a = ap.parse_args()
    train(a.out, seed=a.seed, steps=a.steps)
