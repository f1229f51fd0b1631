"""CHAIR with CHAIR's COCO synonym list: a hand-counted 20-caption fixture, plurals, the special
phrases, and equality with the shapes-world CHAIR on shapes items."""
import json

import numpy as np
import pytest
from PIL import Image

from vlinterp.data.questions import caption
from vlinterp.eval import shapes as world
from vlinterp.eval.chair_vocab import (SYNONYMS_FILE, chair_items, chair_scores, coco_vocabulary, read_synonyms,
                                       shapes_vocabulary, singularize)
from vlinterp.eval.datasets import open_dataset

CATS = ["person", "bicycle", "car", "bus", "train", "truck", "bird", "cat", "dog", "motorcycle", "chair", "couch",
        "hot dog", "dining table", "toilet", "teddy bear", "knife", "fork", "sandwich"]
TRUTH = {1: ["person", "dog", "bicycle"], 2: ["cat", "chair"], 3: ["hot dog", "dining table"], 4: ["toilet", "bus"],
         5: ["bird", "car"]}
REFS = {1: ["A man rides a bike with his puppy."], 2: ["A kitten sleeping on a sofa."], 3: ["A hot dog on a plate."],
        4: ["A bus next to a public toilet."], 5: ["A seagull perched on a truck."]}
# four generated captions per image; the comments count (object mentions, hallucinated ones) by hand
CAPTIONS = {
    1: ["Two men walking their dogs next to bicycles.",      # person dog bicycle          3, 0
        "A woman with a puppy and a cat.",                   # person dog cat*             3, 1
        "A baby bird sits on a bike.",                       # bird* (not person) bicycle  2, 1
        "People riding motorbikes down the street."],        # person motorcycle*          2, 1
    2: ["A kitten on a chair.",                              # cat chair                   2, 0
        "Two cats on a sofa near a dining table.",           # cat couch(ref) table*       3, 1
        "A cat sitting on a toilet seat.",                   # cat toilet* (seat dropped)  2, 1
        "Kittens and a dog on the couch."],                  # cat dog* couch(ref)         3, 1
    3: ["A hot dog on a table.",                             # hot dog, dining table       2, 0
        "Two hot dogs and a knife on a desk.",               # hot dog knife* table(desk)  3, 1
        "A dog eating a sandwich.",                          # dog* sandwich*              2, 2
        "Hot dogs with ketchup."],                           # hot dog                     1, 0
    4: ["A bus parked by the road.",                         # bus                         1, 0
        "Buses and a teddy bear.",                           # bus teddy bear*             2, 1
        "A toilet seat in a bathroom.",                      # toilet                      1, 0
        "A passenger train next to two buses."],             # train* (no person) bus      2, 1
    5: ["Seagulls flying over trucks.",                      # bird truck(ref)             2, 0
        "A bird on a car.",                                  # bird car                    2, 0
        "Knives and forks.",                                 # knife* fork*                2, 2
        "An empty street."],                                 # -                           0, 0
}


@pytest.fixture
def chair_fixture(tmp_path):
    img_dir = tmp_path / "val2014"
    img_dir.mkdir()
    images, anns, caps = [], [], []
    for i, names in TRUTH.items():
        Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(img_dir / f"COCO_val2014_{i:012d}.jpg")
        images.append({"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 24, "height": 20})
        for n in names:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": CATS.index(n) + 1, "bbox": [1, 1, 5, 5],
                         "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]], "iscrowd": 0, "area": 25})
        caps += [{"id": len(caps) + 1, "image_id": i, "caption": c} for c in REFS[i]]
    (tmp_path / "instances_val2014.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CATS)]}))
    (tmp_path / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": caps}))
    return f"chair:{tmp_path / 'captions_val2014.json'}:{tmp_path / 'instances_val2014.json'}:{img_dir}"


def _twenty(spec):
    by_id = {int(it.id): it for it in open_dataset(spec).items()}
    items = [by_id[i] for i in CAPTIONS for _ in CAPTIONS[i]]
    return [c for i in CAPTIONS for c in CAPTIONS[i]], items


def test_chair_on_twenty_hand_counted_captions(chair_fixture):
    caps, items = _twenty(chair_fixture)
    assert items[0].kind == "caption" and items[0].meta["references"] == REFS[1]
    r = chair_items(caps, items)
    # 40 mentions, 13 hallucinated, 11 of 20 captions hallucinate; coverage by hand: 10.5 / 20
    assert r == {"chair_s": pytest.approx(11 / 20), "chair_i": pytest.approx(13 / 40), "mentions": pytest.approx(2.0),
                 "coverage": pytest.approx(10.5 / 20)}
    # without the reference captions, sofa / couch / trucks are hallucinations too (CHAIR needs both truths)
    r = chair_items(caps, items, references=False)
    assert (r["chair_s"], r["chair_i"]) == (pytest.approx(12 / 20), pytest.approx(16 / 40))
    d = chair_items(caps, items, details=True)["per_caption"]
    assert d[2]["hallucinated"] == [("bird", "bird")] and d[15]["hallucinated"] == [("train", "train")]
    assert d[18]["hallucinated"] == [("knive", "knife"), ("fork", "fork")]


def test_mentions_plurals_and_special_phrases():
    v = coco_vocabulary()
    assert v.mentions("two hot dogs and three dogs") == [("hot dog", "hot dog"), ("dog", "dog")]
    assert v.mentions("a teddy bear, a bear and a baby") == [("teddy bear", "teddy bear"), ("bear", "bear"), ("baby", "person")]
    assert v.mentions("the seat of the toilet") == [("toilet", "toilet")]
    assert v.mentions("a bow tie") == [("tie", "tie")] and v.mentions("wine glasses") == [("wine glass", "wine glass")]
    assert [c for _, c in v.mentions("benches, buses, ponies, policemen, children, mice, calves, skis")] == \
        ["bench", "bus", "horse", "person", "person", "mouse", "cow", "skis"]
    assert v.canonical("Dining Tables") == "dining table" and v.canonical("unicorn") is None


def test_every_vocabulary_word_is_found_in_the_plural():
    v = coco_vocabulary()

    def plural(w):
        if w.endswith("y") and w[-2:-1] not in "aeiou":
            return w[:-1] + "ies"
        return w + ("es" if w.endswith(("s", "x", "ch", "sh")) else "s")

    words = [w for w in v.synonyms if " " not in w and w not in ("sheep", "cattle", "bison", "scissors", "people",
                                                                  "children", "oxen", "skis")]
    missed = [w for w in words if [c for _, c in v.mentions(f"two {plural(w)}")] != [v.synonyms[w]]]
    assert not missed


def test_synonym_list_is_chairs():
    syn = read_synonyms(SYNONYMS_FILE)
    assert len(set(syn.values())) == 80
    assert syn["puppy"] == "dog" and syn["sofa"] == "couch" and syn["motor bike"] == "motorcycle" and syn["iphone"] == "cell phone"
    assert sum(1 for ln in open(SYNONYMS_FILE) if ln.strip() and not ln.startswith("#")) == 80
    assert singularize("suitcases", syn) == "suitcase" and singularize("glasses") == "glass" and singularize("bus") == "bus"


def _native_shapes_chair(captions, scenes):
    """The shapes world's own CHAIR (vlinterp.metrics.chair; its API moves to eval.chair on another branch)."""
    try:
        from vlinterp.eval.chair import shapes_chair
    except ImportError:
        from vlinterp.metrics.chair import chair

        return chair(captions, scenes)
    return shapes_chair(captions, scenes)


def test_equals_the_shapes_world_chair_on_shapes_items():
    items = world.scenes("chair-vocab", 40, 3)
    scenes = [it.meta["scene"] for it in items]
    colours, shapes = ["red", "green", "blue", "yellow", "purple", "orange"], ["circle", "square", "triangle", "cross"]
    caps = []
    for k, s in enumerate(scenes):
        truth = caption(s)
        o = s.objects[0]
        absent = next(f"{c} {h}" for c in colours for h in shapes if not s.has(c, h))
        missing_shape = next((h for h in shapes if s.count(h) == 0), "circle")
        # plurals of circle / square / triangle ("crosses" is missed by the shapes metric, found here: below)
        many = f"two {o.colour} {o.shape}s" if o.shape != "cross" else f"one {o.colour} {o.shape}"
        caps.append([truth, f"{truth[:-1]} and a {absent}.", f"{many} and a {missing_shape}.",
                     f"a {o.shape}, a {o.shape} and a {o.colour} {o.shape}.", "nothing here.",
                     f"a {absent}, {o.colour}, {o.shape}"][k % 6])
    want = _native_shapes_chair(caps, scenes)
    got = chair_items(caps, items, shapes_vocabulary())
    assert got == pytest.approx(want)
    assert 0 < want["chair_s"] < 1 and 0 < want["coverage"] < 1
    assert got == pytest.approx(chair_scores(caps, [{o.name for o in it.objects} for it in items], shapes_vocabulary()))
    assert shapes_vocabulary().mentions("two red crosses and a blue crosses") == [("red cross", "red cross"),
                                                                                ("blue cross", "blue cross")]
