"""Data for the shapes-llava recipe: scene pools (pixels, dense targets) and one-question sequences.

A pool holds, per scene: the processor-equivalent pixels of the scene and of its rendered words
(uint8, 3x120x120 for shapes-llava), per-patch soft colour/shape targets on the 10x10 patch grid, shape counts,
the 24-way pair multi-hot, and a light copy of the scene (no image, no masks) for questions.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from ..adapters.wordtok import BASE_WORDS
from ..data.questions import (CAPTION_QUESTION, NEG_TYPES, caption, colour_question, count_question, negatives,
                              presence_question)
from ..data.renderings import as_text, render_words
from ..data.shapes import COLOURS, NUM_WORDS, PAIRS, SHAPES, Scene, make_scene, partner, patch_coverage, scene_rng

WORDS = list(dict.fromkeys(BASE_WORDS + ["shows", "also", "has", "nothing", "else"]))
IMAGE_SIZE, PATCH = 120, 12
GRID = IMAGE_SIZE // PATCH
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def pixels(img: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """The organism's CLIPImageProcessor resize (bicubic to 120x120), uint8 [3,120,120]; see :func:`normalise`."""
    return np.asarray(img.convert("RGB").resize((size, size), Image.BICUBIC), np.uint8).transpose(2, 0, 1).copy()


def normalise(x):
    """uint8 [..., 3, H, W] tensor -> the processor's normalised float pixels."""
    import torch

    mean = torch.as_tensor(MEAN, device=x.device).view(3, 1, 1)
    std = torch.as_tensor(STD, device=x.device).view(3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def light(scene: Scene) -> Scene:
    objs = [dataclasses.replace(o, mask=None) for o in scene.objects]
    return dataclasses.replace(scene, image=None, objects=objs)


def _one(args):
    name, seed, i, pixel_fn, grid = args
    s = make_scene(name, seed, i)
    cov = patch_coverage(s, (grid, grid)).reshape(len(s.objects), -1)        # [n, grid*grid]
    col = np.zeros((grid * grid, len(COLOURS) + 1), np.float32)
    shp = np.zeros((grid * grid, len(SHAPES)), np.float32)
    for k, o in enumerate(s.objects):
        col[:, 1 + COLOURS.index(o.colour)] += cov[k]
        shp[:, SHAPES.index(o.shape)] += cov[k]
    tot = np.clip(shp.sum(1), 0, 1)
    col[:, 0] = 1 - tot
    shp = shp / np.maximum(shp.sum(1, keepdims=True), 1e-6)
    counts = np.array([s.count(sh) for sh in SHAPES], np.int64)
    return (pixel_fn(s.pil()), pixel_fn(render_words(s)), col, shp, tot.astype(np.float32), counts,
            s.label_vector(), light(s))


def make_pool(name: str, seed: int, n: int, start: int = 0, workers: int | None = None, pixel_fn=pixels,
              grid: int = GRID) -> dict:
    """Scenes ``start..start+n-1`` of split ``name``, generated in ``workers`` processes.

    ``pixel_fn(PIL image) -> uint8 [3, H, W]``: the organism's processor-equivalent resize (a module-level
    function: workers pickle it); ``grid``: the side of the patch grid the dense targets are computed on
    (rows are row-major ``grid x grid`` patches)."""
    args = [(name, seed, i, pixel_fn, grid) for i in range(start, start + n)]
    workers = workers or min(16, os.cpu_count() or 1)
    if workers > 1 and n >= 256:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            rows = pool.map(_one, args, chunksize=64)
    else:
        rows = [_one(a) for a in args]
    keys = ["px", "rpx", "colour", "shape", "cover", "counts", "pairs"]
    pool = {k: np.stack([r[j] for r in rows]) for j, k in enumerate(keys)}
    pool["scenes"] = [r[-1] for r in rows]
    return pool


# ------------------------------------------------------------------------ questions
def near_negative(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """An absent pair sharing its colour or its shape with a present object (a binding test), never the
    prior partner of a present object; falls back to any absent pair."""
    present = set(scene.pairs())
    partners = {partner(*p) for p in present}
    absent = [p for p in PAIRS if p not in present and p not in partners]
    near = [p for p in absent if any(p[0] == c or p[1] == s for c, s in present)] or absent
    return near[int(rng.integers(len(near)))]


POPE_NEG_P = (0.45, 0.3, 0.25)  # the LM stage's presence negatives: random, popular, adversarial


def sample_presence(scene: Scene, rng: np.random.Generator, neg_p=POPE_NEG_P) -> tuple[str, str]:
    """A balanced presence question: 50% a present pair, 50% a negative.

    ``neg_p``: probabilities of the POPE negative types (random, popular, adversarial), or a dict that may
    also name ``"near"`` (:func:`near_negative`: shares colour or shape, never a prior partner)."""
    if rng.random() < 0.5:
        pos = list(dict.fromkeys(scene.pairs()))
        return presence_question(*pos[int(rng.integers(len(pos)))]), "yes"
    if isinstance(neg_p, dict):
        kinds = list(neg_p)
        nt = kinds[int(rng.choice(len(kinds), p=np.array([neg_p[k] for k in kinds]) / sum(neg_p.values())))]
        if nt == "near":
            return presence_question(*near_negative(scene, rng)), "no"
    else:
        nt = NEG_TYPES[int(rng.choice(3, p=neg_p))]
    return presence_question(*negatives(scene, rng, nt, 1)[0]), "no"


def sample_colour(scene: Scene, rng) -> tuple[str, str] | None:
    uniq = [sh for sh in SHAPES if scene.count(sh) == 1]
    if not uniq:
        return None
    sh = uniq[int(rng.integers(len(uniq)))]
    return colour_question(sh), next(o.colour for o in scene.objects if o.shape == sh)


def sample_count(scene: Scene, rng) -> tuple[str, str]:
    present = [sh for sh in SHAPES if scene.count(sh) > 0]
    absent = [sh for sh in SHAPES if scene.count(sh) == 0]
    pick = absent if absent and rng.random() < 0.3 else present
    sh = pick[int(rng.integers(len(pick)))]
    return count_question(sh), NUM_WORDS[scene.count(sh)]


def sample_question(scene: Scene, rng, mix: dict[str, float], neg_p=POPE_NEG_P) -> tuple[str, str]:
    kinds = list(mix)
    k = kinds[int(rng.choice(len(kinds), p=np.array([mix[x] for x in kinds]) / sum(mix.values())))]
    if k == "colour":
        qa = sample_colour(scene, rng)
        if qa is not None:
            return qa
        k = "count"
    if k == "count":
        return sample_count(scene, rng)
    if k == "caption":
        return CAPTION_QUESTION, caption(scene)
    return sample_presence(scene, rng, neg_p)


class Tokens:
    """Prompt / answer token ids for one-question sequences, matching the processor's chat template."""

    def __init__(self, processor, n_image_tokens: int):
        self.proc, self.tok = processor, processor.tokenizer
        self.n_img = n_image_tokens
        self.image_id = self.tok.convert_tokens_to_ids(getattr(processor, "image_token", "<image>"))
        self.eos = self.tok.eos_token_id
        self._cache: dict = {}

    def prompt(self, text: str, image: bool) -> list[int]:
        key = (text, image)
        if key not in self._cache:
            content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
            f = self.proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
            ids = self.tok(f)["input_ids"]
            out = []
            for t in ids:
                out += [t] * self.n_img if t == self.image_id else [t]
            self._cache[key] = out
        return self._cache[key]

    def answer(self, a: str) -> list[int]:
        key = ("__answer__", a)
        if key not in self._cache:
            self._cache[key] = self.tok(" " + a, add_special_tokens=False)["input_ids"] + [self.eos]
        return self._cache[key]


def build_batch(items, toks: Tokens, pad_id: int = 0):
    """``items``: list of (prompt_ids, answer_ids). Left-padded ``ids``, ``mask``, ``labels`` (-100 off-answer)."""
    import torch

    rows = [p + a for p, a in items]
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    for b, ((p, a), r) in enumerate(zip(items, rows)):
        ids[b, T - len(r):] = torch.tensor(r)
        mask[b, T - len(r):] = 1
        labels[b, T - len(a):] = torch.tensor(a)
    return ids, mask, labels


def text_prompt(scene: Scene, question: str) -> str:
    return f"{as_text(scene)} {question}"


__all__ = ["WORDS", "pixels", "make_pool", "sample_question", "sample_presence", "Tokens", "build_batch",
           "text_prompt", "PAIRS", "scene_rng"]
