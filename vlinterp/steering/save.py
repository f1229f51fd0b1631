"""SAVE: steer along SAE features that separate correct from hallucinated answers.

Fit on probe items (yes/no questions with answers; POPE, adversarial negatives): encode the
last-token state at ``site`` with the SAE, score each feature by
``s_j = P(f_j > 0 | answered right) - P(f_j > 0 | hallucinated)``, keep the top ``n_features``
and steer along the sum of their unit decoder directions (weighted by ``s_j``): at every forward
(each decoding step) the last position's state gets ``alpha * |h| * d``. The SAE comes from
:mod:`vlinterp.sae` (pass one, or a small TopK SAE is trained on ``sae_items``: captions and
questions of the same kind of images, default the probe items).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import ConfigError, DataError, UnknownSiteError
from .base import SteeringMethod, progress_bar
from .common import add_direction


class SAVE(SteeringMethod):
    """``direction`` ``[D]`` (unit); ``features`` / ``scores``: the SAE features kept and their
    separation scores; ``config.site``: the residual site steered."""

    name = "save"
    strengths = ("alpha",)
    needs = ("presence",)

    @dataclass
    class Config:
        """``site``: default the SAE's own site, else the middle LM layer's residual; ``n_features``
        kept; ``alpha``: strength; ``sae_*``: the default SAE (TopK, ``sae_features`` wide, ``sae_k``
        active, ``sae_steps`` steps, seed ``sae_seed``) when none is given."""

        site: str | None = None
        n_features: int = 4
        alpha: float = 0.2
        sae_features: int = 512
        sae_k: int = 32
        sae_steps: int = 1500
        sae_seed: int = 0

        def validate(self):
            if self.n_features < 1:
                raise ConfigError("save: n_features must be at least 1")

    def __init__(self, direction: torch.Tensor, features=None, scores=None, config=None, meta=None, unit: bool = False,
                 **opts):
        """``unit``: ``direction`` is unit already (a loaded fit: normalising again would move its last bits)."""
        super().__init__(config, meta, **opts)
        self.direction = direction.float() if unit else torch.nn.functional.normalize(direction.float(), dim=0)
        self.features = [int(f) for f in (features or [])]
        self.scores = [float(s) for s in (scores or [])]

    @property
    def site(self) -> str:
        return self.config.site

    @property
    def alpha(self) -> float:
        return self.config.alpha

    @staticmethod
    def default_sae(adapter, site: str, items, steps: int = 1500, seed: int = 0, d_sae: int = 512, k: int = 32,
                    progress: bool = False):
        """A TopK SAE (``d_sae`` features, ``k`` active) trained on ``items``' states at ``site``."""
        from ..sae import ActivationStore
        from ..sae.train import train_sae

        st = ActivationStore.harvest(adapter, site, list(items), batch_size=32, progress=progress, tokens="content")
        return train_sae(st, d_sae=d_sae, k=k, steps=steps, batch_size=256, image_fraction=0.5, seed=seed, progress=progress)

    @classmethod
    def fit(cls, adapter, items, config=None, calib=None, progress: bool = False, sae=None, sae_items=None) -> "SAVE":
        """``items``: yes/no probe questions; ``sae``: an SAE reading ``site`` (default: trained on
        ``sae_items``, else on ``items``). ``calib`` is not used (``alpha`` is given)."""
        from ..sae.attach import _check_width

        cfg = cls.make_config(config)
        cls.check_kind(adapter)
        site = cfg.site or (getattr(sae, "vlinterp_meta", {}) or {}).get("site") or f"blocks.{adapter.num_layers('lm') // 2}.resid"
        if site not in adapter.site_table:
            raise UnknownSiteError(site, adapter.site_table.keys())
        if sae is None:
            sae = cls.default_sae(adapter, site, sae_items if sae_items is not None else items, cfg.sae_steps, cfg.sae_seed,
                                  cfg.sae_features, cfg.sae_k, progress)
        items = [it for it in items if it.answer in ("yes", "no") and it.prompt]
        ids = torch.tensor([adapter.token_id("yes"), adapter.token_id("no")])
        fired, right = [], []
        bar = progress_bar(progress, len(items), "fitting save: probe states")
        with torch.no_grad():
            for i in range(0, len(items), 32):
                ch = items[i:i + 32]
                b = adapter.prepare(images=[it.image for it in ch], text=[it.prompt for it in ch])
                out = adapter.run(b, capture=[site])
                rows = torch.arange(len(ch))
                last = torch.tensor([int(b.layout.span("last", r)[0]) for r in range(len(ch))])
                h = out.cache[site][rows, last].float()
                _check_width(sae, h, site)
                fired.append((sae.encode(h.to(sae.W_dec.device)) > 0).cpu())
                lg = out.logits[rows, last][:, ids]
                right += [("yes" if a > c else "no") == it.answer for (a, c), it in zip(lg.tolist(), ch)]
                bar.update(len(ch))
        bar.close()
        if not fired:
            raise DataError("SAVE needs yes/no probe questions with answers; the probe items have none")
        fired = torch.cat(fired).float()
        right = torch.tensor(right, dtype=torch.bool)
        if right.all() or (~right).all():
            raise DataError(f"the probe set has {'no hallucinated' if right.all() else 'no correct'} answers; use more items")
        s = fired[right].mean(0) - fired[~right].mean(0)
        top = torch.topk(s, cfg.n_features).indices
        W = torch.nn.functional.normalize(sae.W_dec.detach().float().cpu()[top], dim=-1)
        d = (s[top, None].clamp_min(0) * W).sum(0)
        if float(d.norm()) == 0:
            d = W[0]
        return cls(d, top.tolist(), s[top].tolist(), cls.make_config(cfg, site=site),
                   {"n": len(items), "right": float(right.float().mean())})

    def edits(self, adapter) -> dict:
        self.check(adapter)
        if self.config.site not in adapter.site_table:
            raise UnknownSiteError(self.config.site, adapter.site_table.keys())
        return {self.config.site: add_direction(self.direction, float(self.config.alpha))}

    def tensors(self) -> dict:
        return {"direction": self.direction}

    def state(self) -> dict:
        return {"features": self.features, "scores": self.scores}

    @classmethod
    def from_saved(cls, tensors, state, config, meta) -> "SAVE":
        return cls(tensors["direction"], state.get("features"), state.get("scores"), config, meta, unit=True)


__all__ = ["SAVE"]
