"""CHAIR with a synonym vocabulary, the way Rohrbach et al. count object mentions.

``CHAIR_I`` = hallucinated object mentions / all object mentions, ``CHAIR_S`` = captions with a
hallucinated mention / all captions, ``coverage`` = the share of each image's distinct objects its
caption names (mean over captions). A caption's words are found as CHAIR's ``caption_to_words``
finds them (``github.com/LisaAnne/Hallucination``, ``utils/chair.py``): lower-cased tokens,
each singularised, two-word phrases joined (``hot dog``, ``teddy bear``; ``baby bird`` read as
``bird``, ``passenger jet`` as ``jet``, ``bow tie`` as ``tie``), ``seat`` dropped next to
``toilet``, and every remaining word in the vocabulary mapped to its canonical object. A mention is
hallucinated when the objects it can name (:attr:`Vocabulary.covers`; by default itself) are not
among the image's ground truth: the canonical objects of its annotated objects and, as CHAIR does,
the objects its reference captions mention.

:func:`coco_vocabulary` is CHAIR's MS-COCO list (shipped as ``eval/data/chair_synonyms.txt``);
:func:`shapes_vocabulary` reads the shapes world the way :func:`vlinterp.metrics.chair.chair` does
(``red circle`` names that pair, a bare ``circle`` any circle), so both give the same numbers on
shapes captions. Deviations from the original, all on words no COCO caption reaches differently:
tokens are runs of letters, digits and hyphens (NLTK's tokenizer is not a dependency), the list is
lower-cased (the original's ``iPhone`` never matched its lower-cased captions), and plurals are
singularised against the vocabulary (regular ``-s``/``-es``/``-ies``/``-ves`` and the irregular
plurals below) instead of by ``pattern.en``.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..core.errors import DataError, UsageError

IRREGULAR = {"people": "person", "children": "child", "men": "man", "women": "woman", "mice": "mouse",
             "geese": "goose", "teeth": "tooth", "feet": "foot", "oxen": "ox", "dice": "die", "cacti": "cactus"}
UNINFLECTED = frozenset({"sheep", "deer", "fish", "scissors", "series", "species", "bison", "cattle", "news", "moose",
                         "swine", "salmon", "trout"})

# utils/chair.py: phrases read as one word (``coco_double_words``), and qualifiers that are not people
COCO_DOUBLE_WORDS = ("motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
                     "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat",
                     "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear",
                     "hair drier", "potted plant", "bow tie", "laptop computer", "stove top oven", "hot dog", "teddy bear",
                     "home plate")
ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub")
VEHICLE_WORDS = ("jet", "train")

_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def singularize(word: str, known: Iterable[str] = ()) -> str:
    """The singular of a lower-case ``word``; a form in ``known`` (the vocabulary's words) wins, so
    ``benches`` -> ``bench``, ``horses`` -> ``horse``, ``puppies`` -> ``puppy``, ``knives`` ->
    ``knive`` (the COCO list's own spelling), ``policemen`` -> ``policeman``."""
    w = word.lower()
    known = known if isinstance(known, (set, frozenset)) else frozenset(known)
    if w in known or w in UNINFLECTED:
        return w
    if w in IRREGULAR:
        return IRREGULAR[w]
    cands = []
    if w.endswith("men") and len(w) > 3:
        cands.append(w[:-3] + "man")
    if w.endswith("children"):
        cands.append(w[:-3])
    if w.endswith("ies") and len(w) > 4:
        cands += [w[:-3] + "y", w[:-1]]
    if w.endswith("ves"):
        cands += [w[:-1], w[:-3] + "f", w[:-3] + "fe"]
    if w.endswith("s") and not w.endswith("ss"):
        cands.append(w[:-1])
    if w.endswith("es"):
        cands.append(w[:-2])
    for c in cands:
        if c in known:
            return c
    if w.endswith(("ss", "us", "is")) or len(w) < 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith(("ses", "xes", "zes", "ches", "shes")):
        return w[:-2]
    return w[:-1] if w.endswith("s") else w


@dataclass(eq=False)
class Vocabulary:
    """What counts as an object mention. ``synonyms``: word or phrase -> canonical object;
    ``double_words``: two-word phrase -> the word it is read as (itself, or ``baby bird`` ->
    ``bird``); ``covers``: canonical object -> the ground-truth objects it can name (default: itself;
    the shapes world's ``circle`` covers every coloured circle); ``drop_if``: ``(a, b)``: drop word
    ``b`` from a caption that has word ``a`` (``("toilet", "seat")``)."""

    synonyms: Mapping[str, str]
    double_words: Mapping[str, str] = field(default_factory=dict)
    covers: Mapping[str, frozenset] = field(default_factory=dict)
    drop_if: tuple[tuple[str, str], ...] = ()

    @functools.cached_property
    def known(self) -> frozenset:
        """Every word the vocabulary knows (alone or inside a phrase): singular forms to aim at."""
        words = set()
        for phrase in [*self.synonyms, *self.double_words]:
            words.update(phrase.split())
        return frozenset(words)

    def words(self, caption: str) -> list[str]:
        """The caption's words after CHAIR's preprocessing (singular, phrases joined, drops)."""
        toks = [singularize(t, self.known) for t in _TOKEN.findall(str(caption).lower())]
        out, i = [], 0
        while i < len(toks):
            pair = " ".join(toks[i:i + 2])
            if i + 1 < len(toks) and pair in self.double_words:
                out.append(self.double_words[pair])
                i += 2
            else:
                out.append(toks[i])
                i += 1
        for a, b in self.drop_if:
            if a in out and b in out:
                out = [w for w in out if w != b]
        return out

    def mentions(self, caption: str) -> list[tuple[str, str]]:
        """``(word, canonical object)`` per object mention, in caption order (repeats kept)."""
        return [(w, self.synonyms[w]) for w in self.words(caption) if w in self.synonyms]

    def canonical(self, name: str) -> str | None:
        """The canonical object of a name (``"dogs"`` -> ``"dog"``, ``"dining table"``), or None."""
        n = " ".join(str(name).lower().split())
        if n in self.synonyms:
            return self.synonyms[n]
        n = " ".join(singularize(t, self.known) for t in n.split())
        return self.synonyms.get(n)

    def names(self, canonical: str) -> frozenset:
        """The ground-truth objects a mention of ``canonical`` can name."""
        return self.covers.get(canonical, frozenset((canonical,)))

    def truth(self, object_names: Iterable[str], references: Iterable[str] = ()) -> set[str]:
        """An image's ground truth: its objects' canonical names (unknown names kept as they are)
        and the objects its reference captions mention."""
        out = {self.canonical(n) or str(n) for n in object_names}
        for ref in references:
            out.update(c for _, c in self.mentions(ref))
        return out


SYNONYMS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "chair_synonyms.txt")


def read_synonyms(path: str) -> dict[str, str]:
    """A synonym list (one object per line: its name, then its synonyms, comma-separated; ``#``
    comments) -> ``{word or phrase: canonical}`` (later lines win on a repeated word, as in CHAIR)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"synonym list {path!r} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    out: dict[str, str] = {}
    for ln, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = [" ".join(w.lower().split()) for w in line.split(",")]
        if not all(words):
            raise DataError(f"{path}:{ln}: an empty word in the synonym list")
        for w in words:
            out[w] = words[0]
    return out


@functools.lru_cache(maxsize=1)
def coco_vocabulary() -> Vocabulary:
    """CHAIR's MS-COCO vocabulary: the 80 categories with their synonyms, double words and rules."""
    double = {w: w for w in COCO_DOUBLE_WORDS}
    for a in ANIMAL_WORDS:
        double[f"baby {a}"] = a
        double[f"adult {a}"] = a
    for v in VEHICLE_WORDS:
        double[f"passenger {v}"] = v
    double["bow tie"] = "tie"
    double["toilet seat"] = "toilet"
    double["wine glas"] = "wine glass"
    return Vocabulary(read_synonyms(SYNONYMS_FILE), double, {}, (("toilet", "seat"),))


@functools.lru_cache(maxsize=1)
def shapes_vocabulary() -> Vocabulary:
    """The shapes world: ``"{colour} {shape}"`` pairs, and bare shapes covering every colour."""
    from ..data.shapes import COLOURS, SHAPES

    pairs = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    syn = {p: p for p in pairs} | {s: s for s in SHAPES}
    covers = {s: frozenset(f"{c} {s}" for c in COLOURS) for s in SHAPES}
    return Vocabulary(syn, {p: p for p in pairs}, covers)


def categories_vocabulary(categories: Iterable[tuple[str, str | None]]) -> Vocabulary:
    """A dataset's own vocabulary, from its ``(category name, supercategory or None)`` pairs (for
    categories that are not COCO's): each name is a canonical object (two-word names read as one
    word, as CHAIR's double words; longer names are not found in captions), and each supercategory
    that is not itself a category names any of its categories (``circle`` covers every coloured
    circle). On the shapes world's 24 pairs (supercategory the shape) it is :func:`shapes_vocabulary`."""
    names: dict[str, None] = {}
    supers: dict[str, set] = {}
    for name, sup in categories:
        n = " ".join(str(name).lower().split())
        if not n:
            continue
        names[n] = None
        if sup:
            supers.setdefault(" ".join(str(sup).lower().split()), set()).add(n)
    syn = {n: n for n in names}
    covers = {}
    for sup, members in supers.items():
        if sup not in syn:
            syn[sup] = sup
            covers[sup] = frozenset(members)
    double = {w: w for w in syn if len(w.split()) == 2}
    return Vocabulary(syn, double, covers)


def synonyms_vocabulary(synonyms: Mapping[str, str]) -> Vocabulary:
    """A user's synonym table ``{word or phrase: canonical object}`` (``--vocab``) as a vocabulary
    (two-word phrases read as one word)."""
    syn = {" ".join(str(k).lower().split()): str(v) for k, v in synonyms.items()}
    return Vocabulary(syn, {w: w for w in syn if len(w.split()) == 2})


def dataset_vocabulary(categories: Iterable[tuple[str, str | None]]) -> Vocabulary:
    """CHAIR's COCO list when every category name is one of its objects (or a synonym), else
    :func:`categories_vocabulary` of the dataset's own categories."""
    cats = list(categories)
    coco = coco_vocabulary()
    if cats and all(coco.canonical(n) is not None for n, _ in cats):
        return coco
    return categories_vocabulary(cats)


def chair_scores(captions: list[str], truths: list[Iterable[str]], vocabulary: Vocabulary,
                 details: bool = False) -> dict:
    """CHAIR of ``captions[i]`` against ``truths[i]`` (canonical objects in image ``i``):
    ``chair_s``, ``chair_i``, ``mentions`` (per caption, mean), ``coverage``; with ``details``
    also ``per_caption``: each caption's mentions and hallucinated words."""
    captions, truths = list(captions), list(truths)
    if len(captions) != len(truths):
        raise UsageError(f"chair: {len(captions)} captions but {len(truths)} ground truths")
    n_bad_caps = n_ment = n_bad = 0
    cover = 0.0
    per = []
    for cap, truth in zip(captions, truths):
        truth = set(truth)
        ments = vocabulary.mentions(cap)
        bad = [(w, c) for w, c in ments if not vocabulary.names(c) & truth]
        named = set()
        for _, c in ments:
            named |= vocabulary.names(c) & truth
        cover += len(named) / max(1, len(truth))
        n_ment += len(ments)
        n_bad += len(bad)
        n_bad_caps += bool(bad)
        if details:
            per.append({"caption": cap, "mentions": ments, "hallucinated": bad, "truth": sorted(truth)})
    n = len(captions)
    out = {"chair_s": n_bad_caps / max(1, n), "chair_i": n_bad / max(1, n_ment), "mentions": n_ment / max(1, n),
           "coverage": cover / max(1, n)}
    if details:
        out["per_caption"] = per
    return out


def item_truth(item, vocabulary: Vocabulary, references: bool = True) -> set[str]:
    """An item's CHAIR ground truth: its objects' names and (``references``) the objects its
    reference captions (``meta["references"]``, from the ``chair`` / ``coco`` readers) mention."""
    return vocabulary.truth(item.names(), item.meta.get("references", ()) if references else ())


def chair_items(captions: list[str], items, vocabulary: Vocabulary | None = None, references: bool = True,
                details: bool = False) -> dict:
    """CHAIR of one generated caption per item (default vocabulary: CHAIR's COCO list)."""
    vocab = vocabulary or coco_vocabulary()
    return chair_scores(captions, [item_truth(it, vocab, references) for it in items], vocab, details)


__all__ = ["Vocabulary", "singularize", "read_synonyms", "coco_vocabulary", "shapes_vocabulary", "categories_vocabulary",
           "synonyms_vocabulary", "dataset_vocabulary", "chair_scores",
           "item_truth", "chair_items", "SYNONYMS_FILE"]
