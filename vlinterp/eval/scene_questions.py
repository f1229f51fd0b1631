"""Questions asked about scene items (an image and its objects) from any dataset, computed only from
what every format keeps: the image, the objects' names, boxes, masks and ``attrs``, and the item's
position in the list. Commands use them when a dataset gives scenes (COCO instances, an exported
``scene`` subset) where they would otherwise ask the shapes world's own questions, so a shapes split
read back from COCO, JSON lines or a Hugging Face folder gives the same questions as the native
``shapes:SPLIT:N:SEED:scene`` items.

* :func:`scene_view`: the :class:`~vlinterp.data.shapes.Scene` an item shows, rebuilt from its
  objects (``attrs`` colour / shape / rgb, box, mask); ``None`` for other data (real photographs).
* :func:`derive`: question items per scene item: ``presence`` (one "yes" about a random object, one
  "no" about a random absent name of the vocabulary), ``present`` (the "yes" only), ``colour`` and
  ``count`` (shapes-world scenes only), ``audit`` (:func:`vlinterp.eval.shapes.audit_question`).
  Scene ``i`` draws with ``numpy.random.default_rng([seed, i, stream])``.
"""
from __future__ import annotations

import numpy as np

from ..core.items import Item
from . import shapes

DERIVED = ("presence", "present", "colour", "count", "audit")
_STREAM = {"presence": 7, "present": 7, "colour": 99, "count": 99, "audit": 31}


def scene_view(item: Item, index: int = 0):
    """The shapes :class:`~vlinterp.data.shapes.Scene` of ``item`` (index ``index``), rebuilt from its
    image and objects; ``None`` when the item has no image or no objects, or an object lacks
    ``colour`` / ``shape`` / ``rgb`` attrs, a box or a mask."""
    from ..data.shapes import Obj, Scene

    if item.image is None or not item.objects:
        return None
    objs = []
    for o in item.objects:
        a = o.attrs or {}
        if not all(k in a for k in ("colour", "shape", "rgb")) or o.box is None or o.mask is None:
            return None
        objs.append(Obj(str(a["shape"]), str(a["colour"]), tuple(int(v) for v in a["rgb"]),
                        tuple(int(round(v)) for v in o.box), np.asarray(o.mask, bool)))
    img = np.asarray(item.image.convert("RGB"))
    free = ~np.any([o.mask for o in objs], 0)
    background = int(img[free][0, 0]) if free.any() else 0
    return Scene(img, background, objs, 0, "", int(index))


def asked_object(item: Item):
    """The object a question is about: ``objects[meta["obj_index"]]`` when the item says which
    (``None``: no object, e.g. a "no" answer), else the object named ``meta["target"]``, else the
    only object."""
    if "obj_index" in item.meta:
        k = item.meta["obj_index"]
        return item.objects[int(k)] if k is not None and 0 <= int(k) < len(item.objects) else None
    target = item.meta.get("target")
    if isinstance(target, (list, tuple)):
        target = " ".join(map(str, target))
    named = [o for o in item.objects if target is not None and o.name.lower() == str(target).lower()]
    if named:
        return named[0]
    return item.objects[0] if len(item.objects) == 1 else None


def vocabulary(items: list[Item]) -> list[str]:
    """Object names questions may ask about: the 24 colour-shape pairs when every item is a shapes
    scene, else every object name of ``items`` in first-seen order."""
    names = list(dict.fromkeys(o.name for it in items for o in it.objects))
    pairs = [shapes.pair_name(p) for p in shapes.PAIRS]
    return pairs if names and set(names) <= set(pairs) else names


def _presence_prompt(name: str, view) -> str:
    if view is not None:
        from ..data.questions import presence_question

        return presence_question(*name.split(" ", 1))
    from .datasets.coco import presence_prompt

    return presence_prompt(name)


def _q(item: Item, i: int, tag: str, prompt: str, answer: str, kind: str, **meta) -> Item:
    return Item(item.image, prompt, answer, item.objects, f"{item.id}/{tag}", kind, meta, item.source)


def _presence(item, view, rng, vocab, i, positive_only=False) -> list[Item]:
    names = list(dict.fromkeys(item.names()))
    if not names:
        return []
    yes = names[int(rng.integers(len(names)))]
    out = [_q(item, i, "yes", _presence_prompt(yes, view), "yes", "presence", target=yes,
              obj_index=item.names().index(yes), candidates=shapes.CANDIDATES["presence"])]
    absent = [n for n in vocab if n not in names]
    if absent and not positive_only:
        no = absent[int(rng.integers(len(absent)))]
        out.append(_q(item, i, "no", _presence_prompt(no, view), "no", "presence", target=no, obj_index=None,
                      candidates=shapes.CANDIDATES["presence"]))
    return out


def _colour(item, view, rng, i) -> list[Item]:
    once = [o for o in view.objects if view.count(o.shape) == 1]
    if not once:
        return []
    o = once[int(rng.integers(len(once)))]
    return [_q(item, i, "colour", f"what color is the {o.shape}?", o.colour, "colour", target=o.shape,
               obj_index=view.objects.index(o), candidates=shapes.CANDIDATES["colour"])]


def _count(item, view, rng, i) -> list[Item]:
    cq = shapes.count_questions(view, rng)
    qa = cq[int(rng.integers(len(cq)))]
    return [_q(item, i, "count", qa.question, qa.answer, "count", target=qa.target, obj_index=qa.obj_index,
               candidates=shapes.CANDIDATES["count"])]


def _audit(item, view, rng, vocab, i) -> list[Item]:
    if view is None:  # other data: presence, yes on even scenes and no on odd ones
        qs = _presence(item, None, rng, vocab, i)
        return [qs[min(i % 2, len(qs) - 1)]] if qs else []
    q, a, c, k, idx = shapes.audit_question(view, rng, i)
    return [_q(item, i, "audit", q, a, k, candidates=c, obj_index=idx)]


def derive(items: list[Item], kinds=("presence", "colour", "count"), seed: int = 0, vocab: list[str] | None = None) -> list[Item]:
    """Question items about each scene item of ``items``, per scene in the order of ``kinds`` (see the
    module doc); ``colour`` / ``count`` are left out for items that are not shapes scenes. ``vocab``:
    the names negatives are drawn from (default :func:`vocabulary` of ``items``)."""
    from ..core.errors import ConfigError

    bad = [k for k in kinds if k not in DERIVED]
    if bad:
        raise ConfigError(f"cannot derive {', '.join(bad)} questions from scenes; kinds: {', '.join(DERIVED)}")
    vocab = vocabulary(items) if vocab is None else vocab
    out: list[Item] = []
    for i, it in enumerate(items):
        view = scene_view(it, i)
        for k in kinds:
            rng = np.random.default_rng([int(seed), i, _STREAM[k]])
            if k in ("presence", "present"):
                out += _presence(it, view, rng, vocab, i, positive_only=k == "present")
            elif k == "audit":
                out += _audit(it, view, rng, vocab, i)
            elif view is not None:
                out += _colour(it, view, rng, i) if k == "colour" else _count(it, view, rng, i)
    return out


__all__ = ["scene_view", "asked_object", "vocabulary", "derive", "DERIVED"]
