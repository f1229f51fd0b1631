"""Grounding over object names (``Grounding.Config.objects``): the yes/no rule for names of any
number of tokens ("dog", "traffic light", "red circle").

Each name is looked for as the token sequence the tokenizer gives it after a space and at the start
of a text (both, where they differ). In the prompt's forward the ``embed`` hook reads which of those
tokens each position holds by comparing the embedded rows with what the embedding module gives the
names' tokens (exact rows: candidates by their first 8 values, then every value), and keeps per row
the name whose last mention ends last. ``blocks.{layer}.resid`` gives the probe's presence log-odds
``d`` ``[B, K]`` (max over the row's images, clipped), and at the prompt's last position ``logits``
gets ``yes += alpha * d[k] / 2``, ``no -= alpha * d[k] / 2``. Decoding steps are left alone.
"""
from __future__ import annotations

import torch

from ..core.errors import PromptError
from .common import last_index


def name_token_ids(tokenizer, name: str) -> list[tuple[int, ...]]:
    """The token-id sequences ``name`` takes in running text: after a space and at a text's start
    (distinct, without a leading lone-space token or unknown tokens)."""
    out: list[tuple[int, ...]] = []
    space = tokenizer(" ", add_special_tokens=False)["input_ids"]
    for text in (" " + name, name):
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if text.startswith(" ") and space and ids[: len(space)] == list(space) and len(ids) > len(space):
            ids = ids[len(space):]
        if ids and tokenizer.unk_token_id not in ids and tuple(ids) not in out:
            out.append(tuple(ids))
    if not out:
        raise PromptError(f"object name {name!r} has no tokens in this model's vocabulary")
    return out


def _codes(x: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``[B, T]``: index into ``R`` ``[U, D]`` of the row each position of ``x`` ``[B, T, D]`` holds
    exactly (-1: none)."""
    R = R.to(x.device, x.dtype)
    k = min(8, x.shape[-1])
    cand = (x[..., None, :k] == R[:, :k]).all(-1).nonzero()  # [n, 3]: b, t, u
    full = (x[cand[:, 0], cand[:, 1]] == R[cand[:, 2]]).all(-1)
    cand = cand[full]
    out = torch.full(x.shape[:2], -1, dtype=torch.long, device=x.device)
    out[cand[:, 0], cand[:, 1]] = cand[:, 2]
    return out


def last_mention(codes: torch.Tensor, seqs: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """``[B]``: per row the class ``k`` of the sequence (``seqs``: ``(k, codes [n])``) whose last
    occurrence in ``codes`` ``[B, T]`` ends last (-1: none); at equal ends the longer sequence wins."""
    B, T = codes.shape
    best = torch.full((B,), -1, dtype=torch.long)
    end = torch.full((B,), -1, dtype=torch.long)
    size = torch.zeros(B, dtype=torch.long)
    c = codes.cpu()
    for k, seq in seqs:
        n = len(seq)
        if n > T:
            continue
        hit = torch.ones(B, T - n + 1, dtype=torch.bool)
        for j in range(n):
            hit &= c[:, j: T - n + 1 + j] == seq[j]
        for r in torch.nonzero(hit.any(1)).flatten().tolist():
            e = int(torch.nonzero(hit[r]).max()) + n - 1
            if e > end[r] or (e == end[r] and n > size[r]):
                best[r], end[r], size[r] = k, e, n
    return best


def object_edits(g, adapter) -> dict:
    """The ``embed`` / ``blocks.{layer}.resid`` / ``logits`` edits of grounding ``g`` over object names."""
    a = float(g.alpha)
    tok = adapter.tokenizer
    names = list(g.config.objects)
    seqs_ids = [(k, ids) for k, name in enumerate(names) for ids in name_token_ids(tok, name)]
    uniq = sorted({i for _, ids in seqs_ids for i in ids})
    where = {i: u for u, i in enumerate(uniq)}
    seqs = [(k, torch.tensor([where[i] for i in ids])) for k, ids in seqs_ids]
    yn = torch.tensor([adapter.token_id("yes"), adapter.token_id("no")])
    E = adapter.model.get_input_embeddings()
    with torch.no_grad():  # [U, D]: what the embedding module gives those tokens (Gemma 3 scales its rows)
        R = E(torch.tensor(uniq, device=E.weight.device)[None])[0].detach()
    st: dict = {}

    def on_embed(t, layout):
        if t.shape[1] == 1:  # decoding: the prompt's object is not asked about again
            st["obj"] = None
            return t
        obj = last_mention(_codes(t, R), seqs)
        st["obj"], st["d"] = (obj if bool((obj >= 0).any()) else None), None
        return t

    def on_resid(t, layout):
        if t.shape[1] > 1 and layout is not None and layout.num_images and layout.shape[1] == t.shape[1]:
            d = g._image_scores(t, layout)
            st["d"] = torch.where(torch.isinf(d), torch.full_like(d, -g.clip), d).clamp(-g.clip, g.clip)
        return t

    def on_logits(t, layout):
        obj, d = st.get("obj"), st.get("d")
        if obj is None or d is None or not a or t.shape[1] == 1:
            return t
        r = torch.nonzero(obj >= 0).flatten()
        idx = last_index(t, layout).to(t.device)[r]
        v = d[r.to(d.device), obj[r].to(d.device)].to(t.device)
        t = t.clone()
        yi = yn.to(t.device)
        z = t[r, idx].float()
        z[:, yi[0]] += a * v / 2
        z[:, yi[1]] -= a * v / 2
        t[r, idx] = z.to(t.dtype)
        return t

    return {"embed": on_embed, f"blocks.{g.layer}.resid": on_resid, "logits": on_logits}


__all__ = ["object_edits", "name_token_ids", "last_mention"]
