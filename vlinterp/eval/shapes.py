"""The shapes world as items: every split, question kind and POPE negative type of
:mod:`vlinterp.data` turned into :class:`~vlinterp.core.items.Item` lists that methods consume.

Objects carry the exact masks and boxes; names are ``"{colour} {shape}"`` with ``attrs`` colour,
shape and rgb. ``meta`` keeps the scene (``meta["scene"]``) for code that needs the world itself
(the audit's renderings, CHAIR's vocabulary).
"""
from __future__ import annotations

from functools import partial

from ..core.items import Item, Object
from ..data.questions import (CAPTION_QUESTION, caption, colour_question, colour_questions, count_questions, make_questions,
                              pope_split, positive_presence, presence_question)
from ..data.shapes import COLOURS, NUM_WORDS, PAIRS, Scene, make_split, scene_rng

CANDIDATES = {"presence": ("yes", "no"), "colour": tuple(COLOURS), "count": tuple(NUM_WORDS)}


def objects(scene: Scene) -> list[Object]:
    """The scene's objects with their exact masks ``[128, 128]`` bool and tight boxes."""
    return [Object(f"{o.colour} {o.shape}", tuple(float(v) for v in o.bbox), o.mask.astype(bool),
                   {"colour": o.colour, "shape": o.shape, "rgb": tuple(o.rgb)}) for o in scene.objects]


def scene_item(scene: Scene, prompt: str | None = None, answer: str | None = None, kind: str = "", **meta) -> Item:
    """One item on ``scene`` (id ``split/seed/index``)."""
    return Item(scene.pil(), prompt, answer, objects(scene), f"{scene.split}/{scene.seed}/{scene.index}", kind,
                {"scene": scene, **meta})


def scenes(split: str, n: int, seed: int = 0, prior: bool = True) -> list[Item]:
    """``n`` scenes as image-only items (no prompt): for vision encoders and probes."""
    return [scene_item(s) for s in make_split(split, n, seed, prior)]


def scenes_with_questions(split: str, n: int, seed: int = 0) -> list[Item]:
    """``n`` scenes as image-only items whose ``meta["questions"]`` holds every question about the
    scene (presence with adversarial negatives, colour, count, caption: the
    :class:`~vlinterp.data.questions.QA` dicts that :mod:`vlinterp.data.export` writes)."""
    return [scene_item(s, kind="scene", questions=[qa.to_dict() for qa in make_questions(s, scene_rng(split, seed, s.index, 99),
                                                                            neg_type="adversarial")])
            for s in make_split(split, n, seed)]


def pope(split: str, n: int, seed: int = 0, neg_type: str = "random") -> list[Item]:
    """``n`` POPE items (half "yes", half "no") with negatives of ``neg_type``; ``meta``: target pair,
    ``neg_type``, ``candidates`` ("yes", "no")."""
    return [scene_item(s, qa.question, qa.answer, "presence", target=qa.target, neg_type=neg_type,
                       candidates=CANDIDATES["presence"], obj_index=qa.obj_index)
            for s, qa in pope_split(split, n, seed, neg_type)]


def colour(split: str, n: int, seed: int = 0) -> list[Item]:
    """One "what color is the {shape}?" item per scene that has a shape occurring once (of ``n``)."""
    out = []
    for s in make_split(split, n, seed):
        once = [o for o in s.objects if s.count(o.shape) == 1]
        if once:
            rng = scene_rng(split, seed, s.index, 99)
            o = once[int(rng.integers(len(once)))]
            k = s.objects.index(o)
            out.append(scene_item(s, f"what color is the {o.shape}?", o.colour, "colour", target=o.shape,
                                  candidates=CANDIDATES["colour"], obj_index=k))
    return out


def colour_all(split: str, n: int, seed: int = 0) -> list[Item]:
    """Every colour question of ``n`` scenes (one per shape that occurs once)."""
    return [scene_item(s, qa.question, qa.answer, "colour", target=qa.target, candidates=CANDIDATES["colour"],
                       obj_index=qa.obj_index) for s in make_split(split, n, seed) for qa in colour_questions(s)]


def count(split: str, n: int, seed: int = 0) -> list[Item]:
    """One count item per scene (the first of its count questions)."""
    out = []
    for s in make_split(split, n, seed):
        qa = count_questions(s, scene_rng(split, seed, s.index, 99))[0]
        out.append(scene_item(s, qa.question, qa.answer, "count", target=qa.target, candidates=CANDIDATES["count"]))
    return out


def captions(split: str, n: int, seed: int = 0) -> list[Item]:
    """``n`` caption items (``describe the image.`` -> the scene's caption)."""
    return [scene_item(s, CAPTION_QUESTION, caption(s), "caption") for s in make_split(split, n, seed)]


def colour_count(split: str, n: int, seed: int = 0) -> list[Item]:
    """Per scene of ``n``: a colour item (a shape that occurs once, when there is one) and a count
    item, both drawn with one generator per scene (the pruning bench's questions)."""
    out = []
    for s in make_split(split, n, seed):
        rng = scene_rng(split, seed, s.index, 99)
        uniq = [o for o in s.objects if s.count(o.shape) == 1]
        if uniq:
            o = uniq[int(rng.integers(len(uniq)))]
            out.append(scene_item(s, f"what color is the {o.shape}?", o.colour, "colour", target=o.shape,
                                  candidates=CANDIDATES["colour"], obj_index=s.objects.index(o)))
        cq = count_questions(s, rng)
        qa = cq[int(rng.integers(len(cq)))]
        out.append(scene_item(s, qa.question, qa.answer, "count", target=qa.target, candidates=CANDIDATES["count"]))
    return out


def mixed_questions(split: str, n: int, seed: int = 0) -> list[Item]:
    """One question per scene of ``n``, cycling by scene index: presence of one of its objects,
    that object's colour, a count (no answers: probe items)."""
    out = []
    for s in make_split(split, n, seed):
        rng = scene_rng(split, seed, s.index, 5)
        o = s.objects[int(rng.integers(len(s.objects)))]
        kind = s.index % 3
        if kind == 0:
            q, k = presence_question(o.colour, o.shape), "presence"
        elif kind == 1:
            q, k = f"what color is the {o.shape}?", "colour"
        else:
            cq = count_questions(s, rng)
            q, k = cq[int(rng.integers(len(cq)))].question, "count"
        out.append(scene_item(s, q, None, k))
    return out


def present_objects(split: str, n: int, seed: int = 0) -> list[Item]:
    """The positive presence questions of ``n`` scenes (answer ``yes``; ``meta["obj_index"]`` the
    object asked about, ``meta["target"]`` its (colour, shape))."""
    return [scene_item(s, qa.question, qa.answer, "presence", target=qa.target, obj_index=qa.obj_index,
                       candidates=CANDIDATES["presence"]) for s, qa in positive_presence(split, n, seed)]


def caption_presence(split: str, n: int, seed: int = 0) -> list[Item]:
    """``n`` items alternating a caption (even: ``describe the image.`` -> the caption) and a POPE
    presence question with adversarial negatives (odd): SAE-V's ``mixed`` harvest. Sample ``i`` shows
    the scene of :func:`~vlinterp.data.questions.pope_split`'s item ``i``."""
    return [scene_item(s, CAPTION_QUESTION, caption(s), "caption") if i % 2 == 0 else
            scene_item(s, qa.question, qa.answer, "presence", target=qa.target, neg_type="adversarial",
                       candidates=CANDIDATES["presence"])
            for i, (s, qa) in enumerate(pope_split(split, n, seed, "adversarial"))]


def audit_question(scene: Scene, rng, index: int) -> tuple[str, str, tuple[str, ...], str, int | None]:
    """The modality audit's question about ``scene`` (the ``index``-th): ``(question, answer,
    candidates, kind, obj_index)``, cycling presence (even index: yes about a random object; odd: a
    random absent pair), colour (of a shape that occurs once) and count by ``index % 3``."""
    from ..data.questions import negatives

    uniq = [o for o in scene.objects if scene.count(o.shape) == 1]
    if index % 3 == 1 and uniq:
        o = uniq[int(rng.integers(len(uniq)))]
        return f"what color is the {o.shape}?", o.colour, CANDIDATES["colour"], "colour", scene.objects.index(o)
    if index % 3 == 2:
        cq = count_questions(scene, rng)
        qa = cq[int(rng.integers(len(cq)))]
        return qa.question, qa.answer, CANDIDATES["count"], "count", qa.obj_index
    if index % 2 == 0:
        o = scene.objects[int(rng.integers(len(scene.objects)))]
        return presence_question(o.colour, o.shape), "yes", CANDIDATES["presence"], "presence", scene.objects.index(o)
    pair = negatives(scene, rng, "random", 1)[0]
    return presence_question(*pair), "no", CANDIDATES["presence"], "presence", None


def audit_items(split: str, n: int, seed: int = 0) -> list[Item]:
    """One audit question per scene of ``n`` (:func:`audit_question`, drawn with the scene's own
    generator): what ``vlinterp audit`` asks on the shapes world."""
    out = []
    for s in make_split(split, n, seed):
        q, a, c, k, idx = audit_question(s, scene_rng(split, seed, s.index, 31), s.index)
        out.append(scene_item(s, q, a, k, candidates=c, obj_index=idx))
    return out


# What ``--dataset shapes:SPLIT:N:SEED:KIND`` gives per item kind (vlinterp.eval.datasets.shapes): kind -> f(split, n, seed)
ITEM_KINDS = {
    "scene": scenes_with_questions,
    "presence": partial(pope, neg_type="random"),
    "pope-random": partial(pope, neg_type="random"),
    "pope-popular": partial(pope, neg_type="popular"),
    "pope-adversarial": partial(pope, neg_type="adversarial"),
    "colour": colour,
    "colour-all": colour_all,
    "count": count,
    "caption": captions,
    "present": present_objects,
    "colour-count": colour_count,
    "probe": mixed_questions,
    "question": partial(pope, neg_type="random"),
    "mixed": caption_presence,
    "audit": audit_items,
}


# ------------------------------------------------ per-scene items (saliency benchmark)
def pair_name(pair: tuple[str, str]) -> str:
    """``("red", "circle")`` -> ``"red circle"`` (the name of the objects, the ViT label)."""
    return f"{pair[0]} {pair[1]}"


def pair_text(pair: tuple[str, str]) -> str:
    """``("red", "circle")`` -> ``"a red circle"`` (a CLIP caption, a diffusion prompt)."""
    return f"a {pair[0]} {pair[1]}"


def colour_items(scene: Scene) -> list[Item]:
    """``what color is the {shape}?`` for every object whose shape occurs once, in the scene's
    object order; ``meta``: ``target`` (the shape), ``obj_index``, ``candidates`` (the colours)."""
    return [scene_item(scene, colour_question(o.shape), o.colour, "colour", target=o.shape, obj_index=k,
                       candidates=CANDIDATES["colour"])
            for k, o in enumerate(scene.objects) if scene.count(o.shape) == 1]


def label_items(scene: Scene) -> list[Item]:
    """One image-only item per distinct colour-shape pair, in order of first occurrence: ``answer``
    the label (``"red circle"``), the GT its objects (``meta["label"]``; every object of the pair)."""
    return [scene_item(scene, None, pair_name(p), "class", label=pair_name(p)) for p in dict.fromkeys(scene.pairs())]


def caption_items(scene: Scene) -> list[Item]:
    """One item per distinct pair: ``prompt`` its caption ``"a {colour} {shape}"``, ``meta``:
    ``label``, ``texts`` (every caption of the scene, the texts shown with the image) and
    ``candidates`` (the captions of all 24 pairs)."""
    pairs = list(dict.fromkeys(scene.pairs()))
    texts = [pair_text(p) for p in pairs]
    return [scene_item(scene, texts[j], texts[j], "caption-match", label=pair_name(p), texts=texts,
                       candidates=[pair_text(q) for q in PAIRS]) for j, p in enumerate(pairs)]


def generation_item(scene: Scene, seed: int) -> Item:
    """A text-to-image item from the scene's first object: ``prompt`` ``"a {colour} {shape}"``, no
    image; ``meta``: ``colour``, ``shape``, ``seed`` (the sampler's). Objects are unknown until generated."""
    o = scene.objects[0]
    return Item(None, pair_text(o.pair), None, [], f"{scene.split}/{scene.seed}/{scene.index}", "generation",
                {"scene": scene, "colour": o.colour, "shape": o.shape, "seed": seed})


def label_mask(item: Item) -> "np.ndarray":
    """``[H, W]`` bool: the union of the item's objects named ``meta["label"]``."""
    import numpy as np

    return np.any([o.mask for o in item.objects if o.name == item.meta["label"]], 0)


__all__ = ["objects", "scene_item", "scenes", "scenes_with_questions", "ITEM_KINDS", "pope", "colour", "colour_all", "count",
           "captions", "colour_count", "mixed_questions", "present_objects", "caption_presence", "audit_question", "audit_items", "CANDIDATES", "pair_name", "pair_text",
           "colour_items", "label_items", "caption_items", "generation_item", "label_mask"]
