"""SAE-V analysis: which features are image-only, text-only or cross-modal, and how well each
image-text sample agrees in feature space.

- :func:`feature_stats`: per feature, activation mass on image vs text tokens (the modality
  profile), firing counts, and the top-activating rows.
- :func:`cross_modal_weights`: ``omega_k`` = for a feature whose top ``top`` activations include
  both image and text tokens, the mean cosine similarity between those top text-token and top
  image-token activations (the inputs, not the codes); 0 otherwise.
- :func:`sample_scores`: per sample, ``sum_k omega_k`` over the features active on both its image
  tokens and its text tokens: high when the text names what the image shows. Used to rank and
  filter image-text data (:func:`filter_auroc`). Optionally "active" means above a fraction of the
  feature's own scale in that modality (:func:`reference_activations`), ``omega`` takes each
  feature's top activations per modality (``balanced``), and the sum is divided by the ``omega``
  mass active on either side (``overlap``: a weighted Jaccard index).
- :func:`colour_features`: per colour (an attribute of the items' objects), the feature best
  detecting "this patch covers an object of that colour" (AUROC on image patches) and how it fires
  on the colour word.
- :func:`logit_effect`: the tokens a feature's decoder direction raises and lowers (LLaVA).

Items are :class:`~vlinterp.core.items.Item` (sample ``i`` of a store is ``items[i]``); patch
ground truth comes from their objects' masks.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.layout import IMAGE


@torch.no_grad()
def encode_rows(sae, acts: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Feature activations ``[N, d_sae]`` of the rows (float32)."""
    return torch.cat([sae.encode(acts[i:i + chunk].float()) for i in range(0, len(acts), chunk)]) if len(acts) else \
        torch.zeros(0, sae.cfg.d_sae)


def feature_stats(F: torch.Tensor, modality: torch.Tensor, top: int = 32) -> dict:
    """``image_mass`` ``[K]`` (share of a feature's activation mass on image tokens; NaN if it never
    fires), ``fires`` ``[K]``, ``top_rows`` ``[K, top]`` (row indices, best first)."""
    img = (modality == IMAGE).float()
    mass = F.sum(0)
    img_mass = (F * img[:, None]).sum(0)
    share = torch.where(mass > 0, img_mass / mass.clamp_min(1e-12), torch.full_like(mass, float("nan")))
    k = min(top, len(F))
    return {"image_mass": share.numpy(), "fires": (F > 0).sum(0).numpy(),
            "top_rows": torch.topk(F, k, dim=0).indices.T.numpy()}


def cross_modal_weights(F: torch.Tensor, acts: torch.Tensor, modality: torch.Tensor, top: int = 32,
                        balanced: bool = False) -> np.ndarray:
    """``omega`` ``[K]`` (see the module doc). ``balanced=True`` takes a feature's top ``top``
    activations within each modality instead of over all rows: it counts as cross-modal when all of
    them fire in both (image rows outnumber text rows ~7:1 in the shapes store and activation scales
    differ by modality, so the plain top ``top`` of a feature that does fire on both is often one
    modality only)."""
    x = torch.nn.functional.normalize(acts.float(), dim=-1)
    omega = np.zeros(F.shape[1])
    is_img = modality == IMAGE
    if balanced:
        Fi, Ft = F[is_img], F[~is_img]
        if not len(Fi) or not len(Ft):
            return omega
        vi, ri = torch.topk(Fi, min(top, len(Fi)), dim=0)  # [k, K]
        vt, rt = torch.topk(Ft, min(top, len(Ft)), dim=0)
        xi, xt = x[is_img], x[~is_img]
        for j in torch.nonzero((vi.min(0).values > 0) & (vt.min(0).values > 0)).squeeze(1).tolist():
            omega[j] = float((xt[rt[:, j]] @ xi[ri[:, j]].T).mean())
        return omega
    vals, rows = torch.topk(F, min(top, len(F)), dim=0)  # [k, K]
    for j in range(F.shape[1]):
        r = rows[:, j][vals[:, j] > 0]
        im, tx = r[is_img[r]], r[~is_img[r]]
        if len(im) and len(tx):
            omega[j] = float((x[tx] @ x[im].T).mean())
    return omega


def reference_activations(F: torch.Tensor, modality: torch.Tensor, top: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per feature, the mean of its top ``top`` activations on image rows and on text rows:
    ``(ref_image [K], ref_text [K])``, the scales :func:`sample_scores`'s ``min_rel`` is relative to."""
    is_img = modality == IMAGE
    out = []
    for rows in (F[is_img], F[~is_img]):
        out.append(torch.topk(rows, min(top, len(rows)), dim=0).values.mean(0) if len(rows) else torch.zeros(F.shape[1]))
    return out[0], out[1]


def sample_scores(F: torch.Tensor, modality: torch.Tensor, sample: torch.Tensor, omega: np.ndarray,
                  ref: tuple[torch.Tensor, torch.Tensor] | None = None, min_rel: float = 0.0,
                  overlap: bool = False) -> dict[int, float]:
    """``{sample id: sum of omega_k over features active on both its image and its text tokens}``.

    ``overlap=True`` divides that sum by the ``omega`` mass of the features active on either
    (an omega-weighted Jaccard index of the two active sets, in [0, 1]; 0 when none is active): the
    plain sum grows with how much a scene and its caption hold, whatever they say, while a caption
    that names what is not there adds text features with no image support.

    Active: some token of that modality has activation > 0 or, with ``ref`` (from
    :func:`reference_activations`) and ``min_rel > 0``, above ``min_rel`` times the feature's
    reference activation in that modality. A TopK SAE gives every token exactly ``k`` active
    features, most of them weak; the relative threshold keeps those that really fire."""
    om = torch.as_tensor(omega, dtype=torch.float32)
    out = {}
    is_img = modality == IMAGE
    th_i = th_t = torch.zeros(F.shape[1])
    if ref is not None and min_rel > 0:
        th_i, th_t = min_rel * ref[0], min_rel * ref[1]
    for s in torch.unique(sample).tolist():
        m = sample == s
        fi = (F[m & is_img] > th_i).any(0)
        ft = (F[m & ~is_img] > th_t).any(0)
        both = float(om[fi & ft].sum())
        if overlap:
            either = float(om[fi | ft].sum())
            both = both / either if either > 0 else 0.0
        out[int(s)] = both
    return out


def auroc(scores, labels) -> float:
    """Area under the ROC curve (ties count half); ``labels`` boolean."""
    s = np.asarray(scores, float)
    y = np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    # average ranks for ties
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _values(items, attr: str) -> list[str]:
    return list(dict.fromkeys(o.attrs[attr] for it in items for o in it.objects if attr in o.attrs))


def patch_colour_labels(store, items, min_cover: float = 0.5, colours=None, attr: str = "colour") -> np.ndarray:
    """``[N]`` index (into ``colours``, default: the items' colours in order of appearance) of the
    colour of the object covering each image row's patch by ``min_cover`` or more (-1: background,
    mixed or not an image row). ``items[i]`` is the item of sample ``i``; objects carry
    ``attrs[attr]``."""
    from ..metrics.coverage import item_coverage

    colours = list(colours) if colours is not None else _values(items, attr)
    rows = store.rows
    out = np.full(len(store), -1, np.int64)
    img = (rows["modality"] == IMAGE).numpy()
    grid = (int(rows["row"][img].max()) + 1, int(rows["col"][img].max()) + 1) if img.any() else (1, 1)
    cache = {}
    for n in np.nonzero(img)[0]:
        s = int(rows["sample"][n])
        if s not in cache:
            cache[s] = item_coverage(items[s], grid)
        cov = cache[s][:, int(rows["row"][n]), int(rows["col"][n])]
        if len(cov) and cov.max() >= min_cover:
            out[n] = colours.index(items[s].objects[int(cov.argmax())].attrs[attr])
    return out


def colour_features(F: torch.Tensor, store, items, tokenizer=None, colours=None) -> dict:
    """Per colour (``colours``, default: the items' objects' colours): the feature with the best patch
    AUROC (patch covers that colour vs every other image patch), its AUROC, and (with
    ``tokenizer``) the same feature's AUROC on text tokens for "this token is the colour word";
    ``cross_modal`` counts colours whose best patch feature has patch AUROC >= 0.9 and colour-word
    AUROC >= 0.9."""
    colours = list(colours) if colours is not None else _values(items, "colour")
    lab = patch_colour_labels(store, items, colours=colours)
    img = (store.rows["modality"] == IMAGE).numpy()
    txt = ~img
    tok = store.rows["token"].numpy()
    Fn = F.numpy()
    out = {}
    n_cross = 0
    for ci, c in enumerate(colours):
        y = lab[img] == ci
        if not y.any():
            continue
        Fi = Fn[img]
        # rank features by a fast separation proxy, then exact AUROC on the best few
        mu1, mu0 = Fi[y].mean(0), Fi[~y].mean(0)
        cand = np.argsort(-(mu1 - mu0))[:8]
        scored = sorted(((auroc(Fi[:, k], y), int(k)) for k in cand), reverse=True)
        a, k = scored[0]
        row = {"feature": k, "patch_auroc": a}
        if tokenizer is not None and txt.any():
            wid = {tokenizer.convert_tokens_to_ids(w) for w in (c, "▁" + c, "Ġ" + c)} - {tokenizer.unk_token_id, None}
            yt = np.isin(tok[txt], list(wid))
            if yt.any():
                row["word_auroc"] = auroc(Fn[txt][:, k], yt)
                # the best feature for the word among all, for reference
                best_word = sorted(((auroc(Fn[txt][:, j], yt), int(j)) for j in np.argsort(-(Fn[txt][yt].mean(0) - Fn[txt][~yt].mean(0)))[:8]), reverse=True)[0]
                row["best_word_feature"], row["best_word_auroc"] = best_word[1], best_word[0]
                if a >= 0.9 and row["word_auroc"] >= 0.9:
                    n_cross += 1
        out[c] = row
    return {"colours": out, "cross_modal": n_cross}


def colour_alignment(store, items, tokenizer, colours=None) -> dict[str, float]:
    """Per colour: cosine between the colour's direction on image patches (mean over patches of
    that colour minus mean over object patches) and on text (mean over that colour word's tokens
    minus mean over text tokens), in the raw activations. Near 1: one direction could serve both
    modalities (a cross-modal feature is possible); near 0: the model keeps them apart."""
    colours = list(colours) if colours is not None else _values(items, "colour")
    lab = patch_colour_labels(store, items, colours=colours)
    X = store.acts.float()
    img = (store.rows["modality"] == IMAGE).numpy()
    tok = store.rows["token"].numpy()
    out = {}
    for ci, c in enumerate(colours):
        wid = tokenizer.convert_tokens_to_ids(c)
        pm, wm = torch.as_tensor(lab == ci), torch.as_tensor(tok == wid)
        if not pm.any() or not wm.any():
            continue
        p = X[pm].mean(0) - X[torch.as_tensor(img & (lab >= 0))].mean(0)
        w = X[wm].mean(0) - X[torch.as_tensor(~img)].mean(0)
        out[c] = float(torch.nn.functional.cosine_similarity(p, w, dim=0))
    return out


def logit_effect(adapter, sae, k: int, n: int = 8) -> tuple[list[str], list[str]]:
    """Tokens whose logits the decoder direction ``W_dec[k]`` raises / lowers most (LLaVA)."""
    if adapter.kind != "vlm" or "logits" not in adapter.site_table:
        return [], []
    head = adapter.module("logits")
    with torch.no_grad():
        v = head(sae.W_dec[k].to(head.weight.device, head.weight.dtype)).float().cpu()
    tok = adapter.tokenizer
    up = [tok.convert_ids_to_tokens(int(i)) for i in torch.topk(v, n).indices]
    down = [tok.convert_ids_to_tokens(int(i)) for i in torch.topk(-v, n).indices]
    return up, down


def filter_auroc(sample_score: dict[int, float], mismatched: set[int]) -> float:
    """AUROC of the sample score separating matched (positive) from mismatched pairs."""
    ids = sorted(sample_score)
    return auroc([sample_score[i] for i in ids], [i not in mismatched for i in ids])


__all__ = ["encode_rows", "feature_stats", "cross_modal_weights", "reference_activations", "sample_scores", "auroc", "patch_colour_labels",
           "colour_features", "colour_alignment", "filter_auroc", "logit_effect"]
