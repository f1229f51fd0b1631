"""Relevancy's explained scalar (``score``: logit or log-probability) and its propagation rule.

LLaVA explains the answer token's log-probability by default, ViT/CLIP keep the logit; the
maps must equal Chefer's rule computed by hand from the model's own attention and gradients.
"""
import numpy as np
import pytest
import torch
from PIL import Image

import vlinterp as vi
from vlinterp import saliency
from vlinterp.core.errors import ConfigError, PromptError
from vlinterp.core.hooks import count_hooks
from vlinterp.saliency.base import attention_with_grad, site_module, with_pixel_grad
from vlinterp.saliency.relevancy import chefer_relevance, explained_scores
from vlinterp.saliency.targets import Targets


@pytest.fixture(scope="module")
def img():
    a = np.full((48, 64, 3), 40, np.uint8)
    a[8:24, 8:28], a[28:44, 36:60] = (220, 40, 40), (40, 80, 220)
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def llava():
    return vi.load("tiny:llava")


# ------------------------------------------------------------- hand-computed
def test_chefer_relevance_two_layers_by_hand():
    # layer 1: one head; (G*A)^+ keeps only positive products
    A1 = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    G1 = torch.tensor([[[1.0, 2.0], [2.0, -4.0]]])  # G*A = [[1, 0], [1, -2]] -> clamp -> [[1, 0], [1, 0]]
    # layer 2: two heads, averaged AFTER the clamp (at [1, 1]: head 0 gives -1, head 1 gives +2)
    A2 = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.5, 0.5]]])
    G2 = torch.tensor([[[2.0, 0.0], [0.0, -1.0]], [[0.0, 4.0], [0.0, 4.0]]])  # heads -> [[2,0],[0,0]], [[0,4],[0,2]]
    R = chefer_relevance([A1, A2, A1], [G1, G2, None])  # a None gradient (unused layer) is skipped
    R1 = torch.eye(2) + torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # [[2, 0], [1, 1]]
    Abar2 = torch.tensor([[1.0, 2.0], [0.0, 1.0]])  # clamping the head mean instead would give [1, 1] = 0.5
    expect = R1 + Abar2 @ R1  # [[2, 0], [1, 1]] + [[4, 2], [1, 1]]
    torch.testing.assert_close(R, expect)
    torch.testing.assert_close(R, torch.tensor([[6.0, 2.0], [2.0, 2.0]]))


def _targets(select, queries):
    return Targets(batch=None, stream="lm", layout=None, image_index=0, row=0, labels=["a"] * len(queries),
                   queries=queries, spec=None, select=select)


def test_explained_scores_by_hand():
    # language model: logits [B=1, T=3, V=3]; targets: token 2 at position 1, token 0 at position 2
    logits = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, float(np.log(3.0)), 0.0]]])
    t = _targets(lambda lg: lg[:, [1, 2], [2, 0]], [1, 2])
    torch.testing.assert_close(explained_scores(t, logits, "logit"), torch.tensor([[3.0, 0.0]]))
    lse1 = float(np.log(np.exp(1) + np.exp(2) + np.exp(3)))
    expect = torch.tensor([[3.0 - lse1, -float(np.log(5.0))]])  # position 2: log(1 / (1 + 3 + 1))
    torch.testing.assert_close(explained_scores(t, logits, "logprob"), expect)
    # class logits [B=1, C=2]: logsumexp over the classes
    t2 = _targets(lambda lg: lg[:, [1]], [0])
    torch.testing.assert_close(explained_scores(t2, torch.tensor([[0.0, 0.0]]), "logprob"), torch.tensor([[-float(np.log(2.0))]]))
    with pytest.raises(PromptError, match="score must be one of"):
        explained_scores(t, logits, "prob")


# ------------------------------------------------------------- tiny LLaVA
def _manual(m, rel, b, target, logprob: bool) -> np.ndarray:
    """Chefer's rule by hand: grads of the answer token's (log-)probability at its predicting position."""
    t = rel.resolve(b, target)
    layers = sorted(m.attention_sites("lm"))
    with attention_with_grad(m, layers, "lm") as probs:
        logits = m.run(with_pixel_grad(t.batch), grad=True).logits
    q, tok = t.queries[0], t.meta["answer_ids"][0]
    y = logits[0, q].float().log_softmax(-1)[tok] if logprob else logits[0, q, tok].float()
    As = [probs[l] for l in layers]
    grads = torch.autograd.grad(y, As, allow_unused=True)
    R = chefer_relevance([A[0].detach() for A in As], [None if g is None else g[0] for g in grads])
    return R[q, t.patches].numpy()


def test_llava_default_is_logprob_and_matches_hand(llava, img):
    m = llava
    b = m.prepare(images=[img], text="what color is the circle?")
    attn_mods = [site_module(m, s) for s in m.attention_sites("lm").values()]
    impl = [mod.config._attn_implementation for mod in attn_mods]
    n_hooks = count_hooks(m.model)
    rel = saliency.get("relevancy")(m)
    assert rel.score == "logprob"
    res = rel.attribute(b, target="red")
    n_patches = len(b.layouts["lm"].image_positions(0))
    assert res.scores.shape == (1, n_patches) and res.heatmap(0).shape == (48, 64)
    assert res.meta["score"] == "logprob" and res.meta["options"]["score"] is None
    assert count_hooks(m.model) == n_hooks  # every hook removed after the run
    assert [mod.config._attn_implementation for mod in attn_mods] == impl  # eager switch undone
    np.testing.assert_allclose(res.scores[0], _manual(m, rel, b, "red", logprob=True), rtol=1e-4, atol=1e-7)
    logit = saliency.get("relevancy")(m, score="logit").attribute(b, target="red")
    assert logit.meta["score"] == "logit"
    np.testing.assert_allclose(logit.scores[0], _manual(m, rel, b, "red", logprob=False), rtol=1e-4, atol=1e-7)
    assert not np.allclose(res.scores, logit.scores)  # the log-partition's gradient changes the map
    # causal LM: the first token's map is the same whether or not more answer tokens follow
    two = rel.attribute(b, target="red circle")
    np.testing.assert_allclose(two.scores[0], res.scores[0], rtol=1e-4, atol=1e-7)


def test_vit_clip_keep_the_logit(img):
    for name, kw in (("tiny:vit", {}), ("tiny:clip", {"text": ["a red circle", "a blue square"]})):
        m = vi.load(name)
        b = m.prepare(images=[img], **kw)
        rel = saliency.get("relevancy")(m)
        assert rel.score == "logit"
        np.testing.assert_array_equal(rel.attribute(b, target=0).scores, saliency.get("relevancy")(m, score="logit").attribute(b, target=0).scores)


def test_bad_score_option(llava):
    with pytest.raises(ConfigError, match="score must be one of"):
        saliency.get("relevancy")(llava, score="softmax")
    with pytest.raises(ConfigError, match="unknown option"):
        saliency.get("relevancy")(llava, scroe="logit")
