"""Captions and hard-negative captions for the ``shapes-clip`` recipe."""
from __future__ import annotations

import numpy as np

from ..data.questions import left_to_right, objects_phrase
from ..data.shapes import COLOURS, PAIR_INDEX, PAIRS, SHAPES, Scene


def scene_pairs(scene: Scene) -> list[tuple[str, str]]:
    """(colour, shape) of the objects, left to right (the caption's order)."""
    return [o.pair for o in left_to_right(scene)]


def caption_of(pairs: list[tuple[str, str]]) -> str:
    """Same string as :func:`vlinterp.data.questions.caption` for objects in this order."""
    return objects_phrase(pairs) + "."


def hard_negative(pairs: list[tuple[str, str]], rng: np.random.Generator) -> list[tuple[str, str]]:
    """A caption that differs from the true one in one binding: colours swapped between two
    objects of different colour and shape (when there are such), else one object's colour or
    shape replaced, or an object added / dropped. Returns the negative's pairs, in order."""
    pairs = list(pairs)
    swaps = [(i, j) for i in range(len(pairs)) for j in range(i + 1, len(pairs))
             if pairs[i][0] != pairs[j][0] and pairs[i][1] != pairs[j][1]]
    kind = rng.random()
    if swaps and kind < 0.5:
        i, j = swaps[int(rng.integers(len(swaps)))]
        (ci, si), (cj, sj) = pairs[i], pairs[j]
        pairs[i], pairs[j] = (cj, si), (ci, sj)
    elif kind < 0.9 or len(pairs) == 1 and kind < 0.95:
        k = int(rng.integers(len(pairs)))
        c, s = pairs[k]
        if rng.random() < 0.5:
            c = [x for x in COLOURS if x != c][int(rng.integers(len(COLOURS) - 1))]
        else:
            s = [x for x in SHAPES if x != s][int(rng.integers(len(SHAPES) - 1))]
        pairs[k] = (c, s)
    elif len(pairs) > 1 and rng.random() < 0.5:
        del pairs[int(rng.integers(len(pairs)))]
    else:
        new = (COLOURS[int(rng.integers(len(COLOURS)))], SHAPES[int(rng.integers(len(SHAPES)))])
        pairs.insert(int(rng.integers(len(pairs) + 1)), new)
    return pairs


def pair_vector(pairs: list[tuple[str, str]]) -> np.ndarray:
    """float32 [24] multi-hot over :data:`PAIRS` (like ``Scene.label_vector``)."""
    v = np.zeros(len(PAIRS), np.float32)
    for p in pairs:
        v[PAIR_INDEX[p]] = 1.0
    return v
