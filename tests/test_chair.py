import pytest

from vlinterp.core.errors import ConfigError
from vlinterp.data.questions import caption
from vlinterp.data.shapes import make_split
from vlinterp.eval.chair import shapes_chair as chair_scenes, shapes_mentions
from vlinterp.metrics.chair import attribute_mentions, chair, vocabulary_mentions


def test_chair_on_shapes_captions():
    scenes = make_split("chair-test", 20, 0)
    truth = [caption(s) for s in scenes]
    assert chair_scenes(truth, scenes) == {"chair_s": 0.0, "chair_i": 0.0, "mentions": pytest.approx(sum(len(s) for s in scenes) / 20),
                                  "coverage": 1.0}
    s = scenes[0]
    absent = next((c, sh) for c in ("red", "green", "blue", "yellow", "purple", "orange")
                  for sh in ("circle", "square", "triangle", "cross") if not s.has(c, sh))
    wrong = f"{caption(s)[:-1]} and a {absent[0]} {absent[1]} ."
    r = chair_scenes([wrong], [s])
    assert r["chair_s"] == 1.0 and r["chair_i"] == pytest.approx(1 / (len(s) + 1))
    # naming one present object twice is clean but covers only that object
    two = next(x for x in scenes if len({(o.colour, o.shape) for o in x.objects}) == 2)
    o = two.objects[0]
    r = chair_scenes([f"a {o.colour} {o.shape} and a {o.colour} {o.shape} ."], [two])
    assert r == {"chair_s": 0.0, "chair_i": 0.0, "mentions": 2.0, "coverage": 0.5}
    assert shapes_mentions("two red circles and a cross") == [("red", "circle"), (None, "cross")]


def test_chair_takes_its_words_from_the_caller():
    """The metric knows no world: nouns and attributes (or a vocabulary) come in; a bare noun counts
    against the nouns present and names each of their pairs."""
    truth = [{("big", "dog"), ("small", "cat")}]
    assert attribute_mentions("a big dog and cats", {"dog", "cat"}, {"big", "small"}) == [("big", "dog"), (None, "cat")]
    r = chair(["a big dog and cats"], truth, nouns={"dog", "cat"}, attributes={"big", "small"})
    assert r == {"chair_s": 0.0, "chair_i": 0.0, "mentions": 2.0, "coverage": 1.0}
    r = chair(["a small dog"], truth, nouns={"dog", "cat"}, attributes={"big", "small"})
    assert r["chair_s"] == 1.0 and r["coverage"] == 0.0
    with pytest.raises(ConfigError, match="exactly one"):
        chair(["a dog"], truth)


def test_chair_with_a_synonym_vocabulary():
    vocab = {"dog": "dog", "puppy": "dog", "hot dog": "hot dog", "man": "person", "person": "person"}
    assert sorted(vocabulary_mentions("A man eats a hot dog near a puppy", vocab)) == ["dog", "hot dog", "person"]
    r = chair(["A man eats a hot dog", "a puppy"], [{"person", "hot dog"}, {"cat"}], vocabulary=vocab)
    assert r["chair_s"] == 0.5 and r["chair_i"] == pytest.approx(1 / 3) and r["coverage"] == 0.5
