"""SAVE: steer along SAE features that separate correct from hallucinated answers.

Fit on a probe set of object-presence questions (POPE, adversarial negatives): encode the
last-token state at ``site`` with the SAE, score each feature by
``s_j = P(f_j > 0 | answered right) - P(f_j > 0 | hallucinated)``, keep the top ``n_features``
and steer along the sum of their unit decoder directions (weighted by ``s_j``): at every forward
(each decoding step) the last position's state gets ``alpha * |h| * d``. The SAE comes from
:mod:`vlinterp.sae` (pass one, or a small one is trained on shapes captions and questions).
"""
from __future__ import annotations

import torch

from ..core.errors import PromptError, UnsupportedError
from .common import Steerer, add_direction, load_tensors, save_tensors


class SAVE(Steerer):
    def __init__(self, direction: torch.Tensor, site: str, alpha: float = 0.2, features=None, scores=None, meta=None):
        self.direction = torch.nn.functional.normalize(direction.float(), dim=0)
        self.site, self.alpha = site, float(alpha)
        self.features = [int(f) for f in (features or [])]
        self.scores = [float(s) for s in (scores or [])]
        self.meta = meta or {}

    @staticmethod
    def default_sae(adapter, site: str, n: int = 400, steps: int = 1500, seed: int = 0):
        """A TopK SAE (512 features, k = 32) trained on ``n`` shapes scenes' captions and questions."""
        from ..eval.sae_data import shapes_items
        from ..sae import ActivationStore
        from ..sae.train import train_sae

        st = ActivationStore.harvest(adapter, site, shapes_items("save-sae", n, seed, "mixed"), batch_size=32,
                                     progress=False, tokens="content")
        return train_sae(st, d_sae=512, k=32, steps=steps, batch_size=256, image_fraction=0.5, seed=seed, progress=False)

    @classmethod
    def fit(cls, adapter, sae=None, site: str | None = None, n: int = 256, split: str = "steer-probe", seed: int = 0,
            n_features: int = 4, alpha: float = 0.2) -> "SAVE":
        from ..data.questions import pope_split
        from ..sae.attach import _check_width

        if adapter.kind != "vlm":
            raise UnsupportedError(f"SAVE steers LLaVA models, not {adapter.family}")
        site = site or (getattr(sae, "vlinterp_meta", {}) or {}).get("site") or f"blocks.{adapter.num_layers('lm') // 2}.resid"
        sae = sae if sae is not None else cls.default_sae(adapter, site)
        items = pope_split(split, n, seed, "adversarial")
        ids = torch.tensor([adapter.token_id("yes"), adapter.token_id("no")])
        fired, right = [], []
        with torch.no_grad():
            for i in range(0, len(items), 32):
                ch = items[i:i + 32]
                b = adapter.prepare(images=[s.pil() for s, _ in ch], text=[qa.question for _, qa in ch])
                out = adapter.run(b, capture=[site])
                rows = torch.arange(len(ch))
                last = torch.tensor([int(b.layout.span("last", r)[0]) for r in range(len(ch))])
                h = out.cache[site][rows, last].float()
                _check_width(sae, h, site)
                fired.append((sae.encode(h.to(sae.W_dec.device)) > 0).cpu())
                lg = out.logits[rows, last][:, ids]
                right += [("yes" if a > c else "no") == qa.answer for (a, c), (_, qa) in zip(lg.tolist(), ch)]
        fired = torch.cat(fired).float()
        right = torch.tensor(right)
        if right.all() or (~right).all():
            raise PromptError(f"the probe set has {'no hallucinated' if right.all() else 'no correct'} answers; use more items")
        s = fired[right].mean(0) - fired[~right].mean(0)
        top = torch.topk(s, n_features).indices
        W = torch.nn.functional.normalize(sae.W_dec.detach().float().cpu()[top], dim=-1)
        d = (s[top, None].clamp_min(0) * W).sum(0)
        if float(d.norm()) == 0:
            d = W[0]
        return cls(d, site, alpha, top.tolist(), s[top].tolist(),
                   {"n": n, "split": split, "seed": seed, "right": float(right.float().mean())})

    def edits(self, adapter, alpha: float | None = None) -> dict:
        if self.site not in adapter.site_table:
            from ..core.errors import UnknownSiteError

            raise UnknownSiteError(self.site, adapter.site_table.keys())
        return {self.site: add_direction(self.direction, self.alpha if alpha is None else float(alpha))}

    def save(self, path: str) -> None:
        """``path`` + ``.safetensors`` (the direction) and ``.json`` (site, alpha, features, scores)."""
        save_tensors(path, {"direction": self.direction}, {"site": self.site, "alpha": self.alpha, "features": self.features,
                                                           "scores": self.scores, "meta": self.meta})

    @classmethod
    def load(cls, path: str) -> "SAVE":
        t, d = load_tensors(path)
        return cls(t["direction"], d["site"], d["alpha"], d["features"], d["scores"], d["meta"])


__all__ = ["SAVE"]
