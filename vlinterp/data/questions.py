"""Captions and questions about shapes-world scenes, with exact answers.

Grammar (exact strings):

* presence: ``is there a {colour} {shape}?`` -> ``"yes"`` / ``"no"``
* colour:   ``what color is the {shape}?`` -> colour word (only asked when the
  shape occurs exactly once in the scene)
* count:    ``how many {shape}s are there?`` -> ``"zero"`` .. ``"four"``
  (``crosses`` for cross)
* caption:  ``describe the image.`` -> :func:`caption`

Negatives for presence questions follow POPE: ``random`` (any absent pair),
``popular`` (absent pairs, most frequent in training first) and
``adversarial`` (the prior partner of a present object when absent; fallback:
an absent pair sharing the colour or shape of a present object). :func:`pope_split`'s
adversarial negatives are always absent partners (it picks scenes that have one).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..core.errors import ArgumentError

from .shapes import (NUM_WORDS, PAIRS, SHAPES, Obj, Scene, make_scene, pair_frequencies,
                     partner, scene_rng)

__all__ = ["QA", "KINDS", "NEG_TYPES", "plural", "object_phrase", "objects_phrase",
           "caption", "presence_question", "colour_question", "count_question",
           "CAPTION_QUESTION", "presence_questions", "negatives", "make_questions",
           "pope_split", "partner_scenes", "positive_presence", "popular_order"]

KINDS = ("presence", "colour", "count", "caption")
NEG_TYPES = ("random", "popular", "adversarial")
CAPTION_QUESTION = "describe the image."


@dataclass
class QA:
    kind: str                     # "presence" | "colour" | "count" | "caption"
    question: str
    answer: str
    target: tuple[str, str] | str | None = None   # (colour, shape) / shape / None
    neg_type: str | None = None   # "random" | "popular" | "adversarial" | None
    obj_index: int | None = None  # object the question is about, when present

    def to_dict(self) -> dict:
        d = asdict(self)
        if isinstance(self.target, tuple):
            d["target"] = list(self.target)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QA":
        d = dict(d)
        if isinstance(d.get("target"), list):
            d["target"] = tuple(d["target"])
        return cls(**d)


def plural(shape: str) -> str:
    return shape + "es" if shape.endswith(("s", "x", "ch", "sh")) else shape + "s"


def object_phrase(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"


def objects_phrase(objs: Sequence[Obj] | Sequence[tuple[str, str]]) -> str:
    """"a red circle", "a red circle and a blue square", "a, b and c"."""
    words = [object_phrase(*(o.pair if isinstance(o, Obj) else o)) for o in objs]
    if not words:
        return "nothing"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def left_to_right(scene: Scene) -> list[Obj]:
    """Objects sorted by bbox x0 (ties: y0, then original index)."""
    order = sorted(range(len(scene.objects)),
                   key=lambda k: (scene.objects[k].bbox[0], scene.objects[k].bbox[1], k))
    return [scene.objects[k] for k in order]


def caption(scene: Scene) -> str:
    """E.g. "a red circle, a blue square and a green cross." (left to right)."""
    return objects_phrase(left_to_right(scene)) + "."


def presence_question(colour: str, shape: str) -> str:
    return f"is there a {colour} {shape}?"


def colour_question(shape: str) -> str:
    return f"what color is the {shape}?"


def count_question(shape: str) -> str:
    return f"how many {plural(shape)} are there?"


def popular_order() -> list[tuple[str, str]]:
    """PAIRS sorted by empirical training frequency (2000 scenes), most frequent first."""
    freq = pair_frequencies()
    return sorted(PAIRS, key=lambda p: (-freq[p], PAIRS.index(p)))


def _first_index(scene: Scene, pair: tuple[str, str]) -> int | None:
    for k, o in enumerate(scene.objects):
        if o.pair == pair:
            return k
    return None


def negatives(scene: Scene, rng: np.random.Generator, neg_type: str,
              k: int) -> list[tuple[str, str]]:
    """``k`` distinct absent (colour, shape) pairs chosen POPE-style."""
    if neg_type not in NEG_TYPES:
        raise ArgumentError(f"neg_type must be one of {NEG_TYPES}, got {neg_type!r}")
    present = set(scene.pairs())
    absent = [p for p in PAIRS if p not in present]
    if neg_type == "random":
        idx = rng.permutation(len(absent))
        return [absent[i] for i in idx[:k]]
    if neg_type == "popular":
        return [p for p in popular_order() if p not in present][:k]
    # adversarial: prior partners of present objects first (left to right) ...
    out: list[tuple[str, str]] = []
    for o in left_to_right(scene):
        q = partner(*o.pair)
        if q is not None and q not in present and q not in out:
            out.append(q)
    # ... then absent pairs sharing colour or shape with a present object ...
    colours = {c for c, _ in present}
    shapes = {s for _, s in present}
    near = [p for p in absent if p not in out and (p[0] in colours or p[1] in shapes)]
    out += [near[i] for i in rng.permutation(len(near))]
    # ... then anything absent (never needed with <= 4 objects, kept for safety).
    rest = [p for p in absent if p not in out]
    out += [rest[i] for i in rng.permutation(len(rest))]
    return out[:k]


def presence_questions(scene: Scene, rng: np.random.Generator,
                       neg_type: str = "random") -> list[QA]:
    """One "yes" question per distinct present pair, then as many "no" questions."""
    pos = list(dict.fromkeys(scene.pairs()))
    qas = [QA("presence", presence_question(*p), "yes", p, None, _first_index(scene, p))
           for p in pos]
    for p in negatives(scene, rng, neg_type, len(pos)):
        qas.append(QA("presence", presence_question(*p), "no", p, neg_type, None))
    return qas


def colour_questions(scene: Scene) -> list[QA]:
    """One question per shape that occurs exactly once."""
    out = []
    for shape in SHAPES:
        idx = [k for k, o in enumerate(scene.objects) if o.shape == shape]
        if len(idx) == 1:
            o = scene.objects[idx[0]]
            out.append(QA("colour", colour_question(shape), o.colour, shape, None, idx[0]))
    return out


def count_questions(scene: Scene, rng: np.random.Generator) -> list[QA]:
    """Counts for every present shape plus one absent shape (answer "zero")."""
    present = [s for s in SHAPES if scene.count(s) > 0]
    absent = [s for s in SHAPES if scene.count(s) == 0]
    shapes = present + ([absent[int(rng.integers(len(absent)))]] if absent else [])
    out = []
    for s in shapes:
        n = scene.count(s)
        idx = [k for k, o in enumerate(scene.objects) if o.shape == s]
        out.append(QA("count", count_question(s), NUM_WORDS[n], s, None,
                      idx[0] if n == 1 else None))
    return out


def make_questions(scene: Scene, rng: np.random.Generator,
                   kinds: Sequence[str] = KINDS, neg_type: str = "random") -> list[QA]:
    """All questions of the requested ``kinds`` about ``scene`` (in KINDS order)."""
    for k in kinds:
        if k not in KINDS:
            raise ArgumentError(f"unknown question kind {k!r}")
    out: list[QA] = []
    if "presence" in kinds:
        out += presence_questions(scene, rng, neg_type)
    if "colour" in kinds:
        out += colour_questions(scene)
    if "count" in kinds:
        out += count_questions(scene, rng)
    if "caption" in kinds:
        out.append(QA("caption", CAPTION_QUESTION, caption(scene)))
    return out


ADV_STREAM = 1_000_000  # first scene index of pope_split's adversarial-negative stream


def partner_scenes(name: str, seed: int = 0, prior: bool = True):
    """Scenes ``ADV_STREAM, ADV_STREAM + 1, ...`` of ``name``/``seed`` that hold an object whose prior
    partner is absent (about one scene in eight with the prior on); an endless generator."""
    j = ADV_STREAM
    while True:
        s = make_scene(name, seed, j, prior)
        j += 1
        present = set(s.pairs())
        if {partner(*p) for p in present} - {None} - present:
            yield s


def pope_split(name: str, n: int, seed: int = 0, neg_type: str = "random",
               prior: bool = True) -> list[tuple[Scene, QA]]:
    """POPE-style benchmark, half "yes", half "no": item i asks one presence question.

    Even i: scene i of ``name``/``seed`` and a random present pair ("yes"). Odd i, ``random`` /
    ``popular``: scene i and its first negative of that type. Odd i, ``adversarial``: the absent prior
    partner of a present object, asked on the next scene of :func:`partner_scenes` (a stream starting at
    index 10**6, so it never meets the positives' scenes). POPE's adversarial negative is the absent object
    that co-occurs most with what is present; in this world that is the partner, and most scenes have no
    absent partner (a fallback to other absent pairs would measure binding errors, not the prior)."""
    out = []
    stream = partner_scenes(name, seed, prior) if neg_type == "adversarial" else None
    for i in range(n):
        scene = next(stream) if (stream is not None and i % 2) else make_scene(name, seed, i, prior)
        rng = scene_rng(name, seed, scene.index, NEG_TYPES.index(neg_type) + 1, 7)
        if i % 2 == 0:
            pos = list(dict.fromkeys(scene.pairs()))
            p = pos[int(rng.integers(len(pos)))]
            qa = QA("presence", presence_question(*p), "yes", p, None,
                    _first_index(scene, p))
        else:
            p = negatives(scene, rng, neg_type, 1)[0]
            qa = QA("presence", presence_question(*p), "no", p, neg_type, None)
        out.append((scene, qa))
    return out


def positive_presence(name: str, n: int, seed: int = 0) -> list[tuple[Scene, QA]]:
    """The first ``n`` "yes" presence questions of :func:`pope_split` (random negatives) on
    ``name``/``seed``: one per even scene, ``qa.obj_index`` the object asked about."""
    return [(s, qa) for s, qa in pope_split(name, 2 * n, seed, "random") if qa.answer == "yes"][:n]
