"""Grounding over object names (COCO categories): name matching and the yes/no rule.

Over names that are the colour-shape pairs' own ("red circle"), a probe over names must steer yes/no
answers exactly as the pairs probe does with its caption rule off; a prompt naming no object is left
alone; multi-token names are found in a real BPE tokenizer's ids.
"""
import pytest
import torch

import vlinterp as vi
from vlinterp.core.errors import ConfigError
from vlinterp.data.shapes import COLOURS, PAIRS, SHAPES
from vlinterp.steering import Grounding
from vlinterp.steering.ground_objects import last_mention, name_token_ids

PROMPTS = ["is there a red circle in the image?", "is there a blue square in the image?",
           "what color is the circle?", "is there a green cross and a red triangle in the image?"]


@pytest.fixture(scope="module")
def llava():
    return vi.load("tiny:llava")


def _pair(W, b, **kw):
    return Grounding(W, b, Grounding.Config(layer=1, alpha=3.0, beta=0.0, gate=0.0, colours=tuple(COLOURS),
                                            shapes=tuple(SHAPES), **kw))


def _names(W, b, **kw):
    return Grounding(W, b, Grounding.Config(layer=1, alpha=3.0, objects=tuple(f"{c} {s}" for c, s in PAIRS), **kw))


def _logits(m, g, batch):
    if g is None:
        return m.run(batch).logits
    with g.applied(m):
        return m.run(batch).logits


def test_names_steer_yes_no_as_the_pairs_probe(llava, tmp_path):
    m = llava
    D = m.model.config.text_config.hidden_size
    gen = torch.Generator().manual_seed(0)
    W, b = torch.randn(len(PAIRS) + 1, D, generator=gen), torch.randn(len(PAIRS) + 1, generator=gen)
    from PIL import Image

    img = Image.new("RGB", (48, 64), (200, 30, 30))
    batch = m.prepare(images=[img] * len(PROMPTS), text=PROMPTS)
    plain, pairs, names = (_logits(m, g, batch) for g in (None, _pair(W, b), _names(W, b)))
    assert torch.equal(pairs, names)
    last = [int(batch.layout.span("last", r)[0]) for r in range(len(PROMPTS))]
    yes, no = m.token_id("yes"), m.token_id("no")
    moved = [float((names[r, last[r], yes] - names[r, last[r], no]) - (plain[r, last[r], yes] - plain[r, last[r], no]))
             for r in range(len(PROMPTS))]
    assert abs(moved[0]) > 1e-3 and abs(moved[1]) > 1e-3 and abs(moved[3]) > 1e-3  # a named pair: yes - no moved
    assert torch.equal(names[2], plain[2])  # "the circle" alone names no object
    # the last mention wins: row 3 follows "red triangle"'s log-odds, not "green cross"'s
    names_ = [f"{c} {s}" for c, s in PAIRS]
    for name, same in (("green cross", True), ("red triangle", False)):
        W2 = W.clone()
        W2[names_.index(name)] += 5.0
        again = _logits(m, _names(W2, b), batch)
        assert torch.equal(again[3], names[3]) == same, name
    # saved and loaded: the same edits; generation runs with them
    g = _names(W, b)
    g.save(tmp_path / "fit")
    from vlinterp.steering import load

    back = load(tmp_path / "fit")
    assert back.config.objects == g.config.objects and torch.equal(_logits(m, back, batch), names)
    with back.applied(m):
        out = m.generate(m.prepare(images=[img], text=PROMPTS[0]), max_new_tokens=2)
    assert out.new_tokens.shape[1] >= 1

def test_names_config_is_checked():
    W, b = torch.zeros(3, 8), torch.zeros(3)
    with pytest.raises(ConfigError, match="beta must be 0"):
        Grounding(W, b, Grounding.Config(layer=0, alpha=1.0, beta=1.0, objects=("dog", "cat")))
    with pytest.raises(ConfigError, match="not both"):
        Grounding(W, b, Grounding.Config(layer=0, alpha=1.0, objects=("dog", "cat"), colours=("red",), shapes=("x",)))


def _bpe():
    """A byte-level BPE tokenizer (GPT-2 / Qwen style: a leading space is part of the word's token),
    trained here on a few sentences so that "traffic light" and "hair drier" are several tokens."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    text = ["is there a dog in the image?", "a dog and a cat", "the traffic is heavy", "a light in the dark",
            "her hair is long", "is there a dog? yes, a dog."] * 20
    bpe.train_from_iterator(text, vocab_size=300, min_frequency=2, show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, unk_token=None)


def test_multi_token_names_in_a_bpe_tokenizer():
    """Names of several tokens are found from a prompt's ids (codes: index into the names' tokens),
    after a space and at the text's start; the longer name wins where two end together."""
    tok = _bpe()
    names = ["dog", "traffic light", "hair drier", "light"]
    seqs_ids = [(k, ids) for k, n in enumerate(names) for ids in name_token_ids(tok, n)]
    assert any(len(ids) > 1 for k, ids in seqs_ids if k == 1) and len({ids for k, ids in seqs_ids if k == 0}) == 2
    uniq = sorted({i for _, ids in seqs_ids for i in ids})
    where = {i: u for u, i in enumerate(uniq)}
    seqs = [(k, torch.tensor([where[i] for i in ids])) for k, ids in seqs_ids]

    def found(text):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        codes = torch.tensor([[where.get(i, -1) for i in ids]])
        return int(last_mention(codes, seqs)[0])

    assert found("Is there a traffic light in the image?") == 1  # not "light", which ends there too
    assert found("Is there a dog in the image?") == 0
    assert found("dog") == 0  # at the text's start: the name's other token sequence
    assert found("A dog. Is there a hair drier in the image?") == 2
    assert found("Is there a light?") == 3
    assert found("Is there a cat in the image?") == -1
