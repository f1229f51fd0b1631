"""SAE-V's payoff on the shapes world: does fine-tuning on the samples the SAE-V score ranks highest
beat a random subset of the same size, and the whole pool?

The pool: ``n`` training scenes, each an instruction sample whose text (a caption, and the
presence / colour / count questions asked about it) was written for an *annotation scene*: the
sample's own scene, or for a known share ``mismatch`` of the samples another scene (the caption
"moved to the wrong image", and every answer with it). That is the noise data filtering should
remove: image-text pairs whose text does not describe the image.

1. **Score** (:func:`score_pool`): harvest ``site`` of the scoring model (``shapes-llava-aligned``,
   the organism with cross-modal features) over the pool's (image, caption) pairs, encode with an
   SAE trained on other scenes (:func:`train_scorer`), and compute the SAE-V overlap score
   (:func:`~vlinterp.sae.analysis.sample_scores` with modality-balanced ``omega``, ``min_rel`` and
   ``overlap=True``: the variant the README's SAE-V section chose on its validation split).
2. **Select** (:func:`select`): the top ``x`` of the pool by score, a random ``x``, the whole pool,
   and the matched samples only (the oracle the score is aiming at).
3. **Fine-tune** (:func:`finetune`): the language model and projector (shapes-qwen: merger) of a
   fresh copy of the shipped ``shapes-llava`` or ``shapes-qwen`` (tower frozen, its features cached),
   the same number of steps for every subset, with the organism's own teacher-forced answer loss
   (:func:`vlinterp.zoo.recipe_llava._lm_loss`, :func:`vlinterp.zoo.qwen_model.lm_loss`).
4. **Measure** (:func:`measure`): POPE accuracy (random and adversarial negatives), colour, count
   (:func:`vlinterp.zoo.recipe_llava.evaluate`, held-out scenes) and CHAIR on free captions.
5. **Over seeds** (:func:`summarise`): each seed draws its own pool, scorer, subsets and fine-tuning
   order; the runs' means, standard errors and per-seed ratios to the full pool.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ConfigError
from ..core.items import Item
from .chair import shapes_chair

IMAGE_MIX = {"presence": 0.45, "colour": 0.2, "count": 0.22, "caption": 0.13}  # the LM stage's image mix
NEG_P = {"random": 0.45, "popular": 0.3, "near": 0.25}  # the tune stage's image negatives


@dataclass
class Pool:
    """``scenes`` (light :class:`~vlinterp.data.shapes.Scene`, no pixels), ``px`` ``[N, 3, 120, 120]``
    uint8 (what the processor feeds the tower), ``annotation[i]``: the scene sample ``i``'s text
    describes (``i`` when matched), ``bad``: the mismatched sample ids."""

    scenes: list
    px: np.ndarray
    annotation: np.ndarray
    bad: set
    seed: int = 0
    start: int = 30000

    def __len__(self) -> int:
        return len(self.scenes)

    def pixels(self, pixel_fn) -> np.ndarray:
        """``[N, 3, H, W]`` uint8: every sample's scene rendered again and resized by ``pixel_fn`` (another
        organism's processor-equivalent resize, e.g. shapes-qwen's 140 px)."""
        from ..data.shapes import make_scene

        return np.stack([pixel_fn(make_scene("train", self.seed, self.start + i).pil()) for i in range(len(self))])

    def image(self, i: int):
        from PIL import Image

        return Image.fromarray(np.ascontiguousarray(self.px[i].transpose(1, 2, 0)))

    def caption(self, i: int) -> str:
        from ..data.questions import caption

        return caption(self.scenes[int(self.annotation[i])])

    def caption_items(self) -> list[Item]:
        """One (image, ``describe the image.``, caption) item per sample: what the SAE-V score reads."""
        from ..data.questions import CAPTION_QUESTION

        return [Item(self.image(i), CAPTION_QUESTION, self.caption(i), [], str(i), "caption", {"mismatched": i in self.bad})
                for i in range(len(self))]


def make_pool(n: int, seed: int = 0, mismatch: float = 0.4, start: int = 30000) -> Pool:
    """``n`` training-split scenes from index ``start`` (past those the organisms trained on) with a
    share ``mismatch`` of samples annotated by another scene whose caption differs."""
    from ..data.questions import caption
    from ..zoo.llava_data import make_pool as scene_pool

    raw = scene_pool("train", seed, n, start=start)
    rng = np.random.default_rng(seed + 4242)
    bad = set(rng.choice(n, int(round(mismatch * n)), replace=False).tolist())
    ann = np.arange(n)
    for i in sorted(bad):
        j = (i + 1 + int(rng.integers(n - 1))) % n
        while caption(raw["scenes"][j]) == caption(raw["scenes"][i]):
            j = (j + 1) % n
        ann[i] = j
    return Pool(raw["scenes"], raw["px"], ann, bad, seed, start)


# ----------------------------------------------------------------------------- scoring
def train_scorer(adapter, site: str = "blocks.2.resid", n_train: int = 800, d_sae: int = 512, k: int = 32,
                 steps: int = 4000, seed: int = 0, progress: bool = False) -> dict:
    """The SAE-V scorer on ``adapter``: a TopK SAE trained on ``n_train`` ``sae-train`` scenes'
    captions and questions (as :func:`vlinterp.eval.saev.shapes_saev` trains it), its balanced
    cross-modal weights ``omega`` and reference activations."""
    from ..sae import analysis as A
    from ..sae.store import ActivationStore
    from ..sae.train import train_sae
    from .sae_data import shapes_items

    tr = ActivationStore.harvest(adapter, site, shapes_items("sae-train", n_train, seed, "mixed"), batch_size=32,
                                 progress=progress, tokens="content")
    sae = train_sae(tr, d_sae=d_sae, k=k, steps=steps, batch_size=256, image_fraction=0.5, seed=seed, progress=progress)
    F = A.encode_rows(sae, tr.acts)
    mod = tr.rows["modality"]
    return {"sae": sae, "site": site, "omega": A.cross_modal_weights(F, tr.acts, mod, balanced=True),
            "ref": A.reference_activations(F, mod)}


def score_pool(adapter, scorer: dict, pool: Pool, min_rel: float = 0.5, progress: bool = False) -> np.ndarray:
    """SAE-V overlap score ``[N]`` of each pool sample (its image tokens vs its caption's tokens)."""
    from ..sae import analysis as A
    from ..sae.store import ActivationStore

    st = ActivationStore.harvest(adapter, scorer["site"], pool.caption_items(), batch_size=32, progress=progress,
                                 tokens="answer")
    F = A.encode_rows(scorer["sae"], st.acts)
    s = A.sample_scores(F, st.rows["modality"], st.rows["sample"], scorer["omega"], scorer["ref"], min_rel, overlap=True)
    return np.array([s.get(i, 0.0) for i in range(len(pool))])


def select(scores: np.ndarray, pool: Pool, fractions=(0.25, 0.5), seed: int = 0) -> dict[str, np.ndarray]:
    """Subsets (sorted sample ids): ``top-{x}`` (highest scores; ties by id), ``random-{x}``,
    ``full`` and ``matched`` (the oracle: every matched sample)."""
    n = len(pool)
    order = np.lexsort((np.arange(n), -np.asarray(scores)))
    rng = np.random.default_rng(seed + 77)
    out = {}
    for x in fractions:
        m = int(round(x * n))
        out[f"top-{int(round(100 * x))}"] = np.sort(order[:m])
        out[f"random-{int(round(100 * x))}"] = np.sort(rng.choice(n, m, replace=False))
    out["full"] = np.arange(n)
    out["matched"] = np.array([i for i in range(n) if i not in pool.bad])
    return out


# --------------------------------------------------------------------------- fine-tuning
class SubsetBatches:
    """Image sequences drawn from the samples ``ids`` of ``pool``: one question per sequence (mix
    :data:`IMAGE_MIX`), asked and answered about the sample's annotation scene, shown its image.
    Calling returns ``(ids, mask, labels, pool index [B], rendered [B] = False)``."""

    def __init__(self, pool: Pool, ids, toks, seed: int):
        self.pool, self.ids, self.toks = pool, np.asarray(ids), toks
        self.rng = np.random.default_rng(seed + 505)

    def __call__(self, B: int):
        from ..zoo.llava_data import build_batch, sample_question

        items, idx = [], []
        for _ in range(B):
            k = int(self.ids[int(self.rng.integers(len(self.ids)))])
            q, a = sample_question(self.pool.scenes[int(self.pool.annotation[k])], self.rng, IMAGE_MIX, NEG_P)
            items.append((self.toks.prompt(q, True), self.toks.answer(a)))
            idx.append(k)
        ids, mask, labels = build_batch(items, self.toks)
        return ids, mask, labels, torch.as_tensor(idx, dtype=torch.long), torch.zeros(len(idx), dtype=torch.bool)


def is_qwen(model) -> bool:
    """A Qwen2-VL-style model (shapes-qwen) rather than a LLaVA (shapes-llava)."""
    return hasattr(model.model, "visual")


def pool_features(model, pool: Pool, chunk: int = 256) -> torch.Tensor:
    """Frozen-tower patch features ``[N, P, D]`` (fp16) of the pool's images: shapes-llava's tower
    hidden state, or shapes-qwen's last block output before the merger (its own 140 px pixels)."""
    from ..zoo.llava_data import normalise

    if is_qwen(model):
        from ..zoo import qwen_model as qm

        px, fn = pool.pixels(qm.pixels), qm.features(model)
        model.model.visual.eval()
    else:
        from ..zoo.recipe_llava import _features

        tower, layer = model.model.vision_tower.eval(), model.config.vision_feature_layer
        px, fn = pool.px, (lambda x: _features(tower, x, layer))
    with torch.no_grad():
        return torch.cat([fn(normalise(torch.as_tensor(px[i:i + chunk]))).to(torch.float16) for i in range(0, len(pool), chunk)])


def finetune(model, proc, pool: Pool, feats: torch.Tensor, ids, steps: int = 300, batch: int = 16, lr: float = 1e-3,
             seed: int = 0, log=lambda m: None) -> dict:
    """Fine-tune ``model`` (shapes-llava's ``LlavaForConditionalGeneration`` or shapes-qwen's
    ``Qwen2_5_VLForConditionalGeneration``) in place on the samples ``ids``: the language model and the
    projector / merger, tower frozen, AdamW with warm-up then cosine decay (the organisms' ``_train_lm``,
    with shapes-qwen's own loss). ``feats``: :func:`pool_features` of the same model."""
    from ..zoo.llava_data import Tokens
    from ..zoo.recipe_llava import _train_lm

    torch.manual_seed(seed)
    if is_qwen(model):
        from ..zoo import qwen_model as qm
        from ..zoo.recipe_qwen import is_lm_param

        trainable, n_tokens, loss = is_lm_param, qm.N_TOKENS, {"loss_fn": qm.lm_loss}
    else:
        trainable, n_tokens, loss = (lambda n: "vision_tower" not in n), feats.shape[1], {}
    batches = SubsetBatches(pool, ids, Tokens(proc, n_image_tokens=n_tokens), seed)
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(trainable(n))
        if trainable(n):
            params.append(p)
    model.train()
    (model.model.visual if is_qwen(model) else model.model.vision_tower).eval()
    t0 = time.time()
    _train_lm(model, batches, torch.device("cpu"), steps, batch, float("inf"), lr, lambda idx, rend: feats[idx].float(),
              params, log, "finetune", **loss)
    model.eval().requires_grad_(False)
    return {"steps": steps, "batch": batch, "lr": lr, "samples": int(len(ids)), "seconds": round(time.time() - t0, 1)}


# ----------------------------------------------------------------------------- measuring
def measure(adapter, n: int = 256, n_captions: int = 128, seed: int = 1, split: str = "test") -> dict:
    """POPE (random / adversarial), colour, count (:func:`vlinterp.zoo.recipe_llava.evaluate` on ``n``
    held-out scenes) and CHAIR on free captions of ``n_captions`` scenes."""
    from ..data.shapes import make_split
    from ..zoo.recipe_llava import evaluate

    m = evaluate(adapter, split, n=n, seed=seed)
    out = {k: m[k] for k in ("presence_random", "presence_adversarial", "false_yes_adversarial", "colour", "count")}
    scenes = make_split(split, n_captions, seed + 100)
    caps = []
    for i in range(0, len(scenes), 32):
        chunk = scenes[i:i + 32]
        b = adapter.prepare(images=[s.pil() for s in chunk], text=["describe the image."] * len(chunk))
        caps += adapter.generate(b, max_new_tokens=24).texts
    c = shapes_chair(caps, scenes)
    out.update({"chair_s": c["chair_s"], "chair_i": c["chair_i"], "caption_coverage": c["coverage"],
                "caption_examples": caps[:3]})
    return out


def composite(row: dict) -> float:
    """One number per run: the mean of POPE random, POPE adversarial, colour, count and 1 - CHAIR_S."""
    return float(np.mean([row["presence_random"], row["presence_adversarial"], row["colour"], row["count"], 1 - row["chair_s"]]))


SUMMARY_METRICS = ("presence_random", "presence_adversarial", "colour", "count", "chair_s", "composite")


def summarise(per_seed: dict[int, dict]) -> dict:
    """``per_seed[seed]`` = one seed's ``results.json`` (its ``runs``: run name -> metrics). Over the runs
    every seed has: ``mean`` / ``se`` (standard error over seeds; 0 for one seed) per run and metric,
    ``relative_to_full`` (each seed's composite over its own full-pool composite: mean, min, max) and
    ``beats_full`` / ``beats_random`` (how many seeds the top-x subset's composite beats the full pool /
    the random subset of the same size)."""
    if not per_seed:
        raise ConfigError("no seeds to summarise")
    runs = sorted(set.intersection(*(set(r["runs"]) for r in per_seed.values())))
    seeds = sorted(per_seed)

    def vals(run, m):
        return np.array([per_seed[s]["runs"][run][m] for s in seeds], float)

    k = len(seeds)
    mean = {r: {m: float(vals(r, m).mean()) for m in SUMMARY_METRICS} for r in runs}
    se = {r: {m: float(vals(r, m).std(ddof=1) / np.sqrt(k)) if k > 1 else 0.0 for m in SUMMARY_METRICS} for r in runs}
    out = {"seeds": seeds, "runs": runs, "mean": mean, "se": se, "auroc": [float(per_seed[s]["auroc"]) for s in seeds]}
    if "full" in runs:
        rel = {r: vals(r, "composite") / vals("full", "composite") for r in runs}
        out["relative_to_full"] = {r: {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())} for r, v in rel.items()}
        out["beats_full"] = {r: int((vals(r, "composite") > vals("full", "composite")).sum()) for r in runs if r.startswith("top-")}
    out["beats_random"] = {r: int((vals(r, "composite") > vals(r.replace("top", "random"), "composite")).sum())
                           for r in runs if r.startswith("top-") and r.replace("top", "random") in runs}
    return out


__all__ = ["summarise", "SUMMARY_METRICS", "Pool", "make_pool", "train_scorer", "score_pool", "select", "SubsetBatches", "pool_features", "finetune",
           "measure", "composite", "IMAGE_MIX", "NEG_P"]
