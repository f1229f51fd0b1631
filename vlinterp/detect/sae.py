"""An SAE-feature detector: a logistic probe on SAE-V features of the claim.

The SAE (SAE-V: trained on image patches and text tokens together, :mod:`vlinterp.sae`) encodes
the residual state at ``site`` of each position predicting a claimed token (mean over the claim's
tokens, ``[d_sae]``) and, with ``image=True``, the maximum of each feature over the claim's image
patches (``[d_sae]``: what the image holds, in the same dictionary); a logistic regression
(:func:`vlinterp.steering.probe.fit_logistic`, features standardised, L2 ``l2``) fitted on labelled
claims of a separate split gives the hallucination log-odds: ``[B, 1]``, higher = more likely
hallucinated.

``sae``: a saved SAE directory (:func:`vlinterp.sae.attach.save_sae`; its site from its metadata
unless ``layer`` is given), or ``None``: a TopK SAE (``d_sae``, ``k``, ``steps``) is trained on the
fit claims' own activations (image and text tokens, half each per batch) before the probe.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, LayerRangeError
from ..core.items import Item
from .base import Detector, _answer_text, has_labels, labels, read_claims
from .ground import image_patches


class SAELogistic(Detector):
    name = "sae"
    per_layer = False
    trained = True

    @dataclass
    class Config:
        """``sae``: a saved SAE directory, or ``None`` (train one on the fit claims); ``layer``: the LM
        residual layer (``None``: a loaded SAE's own site, else the middle layer); ``d_sae`` / ``k`` /
        ``steps`` / ``seed``: the trained SAE; ``image``: add the image patches' max features;
        ``l2``: the probe's penalty."""

        sae: str | None = None
        layer: int | None = None
        d_sae: int = 512
        k: int = 32
        steps: int = 2000
        seed: int = 0
        image: bool = True
        l2: float = 1e-3

        def validate(self):
            if self.d_sae < 1 or self.k < 1 or self.steps < 1:
                raise ConfigError("sae: d_sae, k and steps must be positive")
            if self.l2 < 0:
                raise ConfigError(f"sae: l2 must be 0 or more, got {self.l2}")

    def __init__(self, config=None, **opts):
        super().__init__(config, **opts)
        self.sae = None
        self.site: str | None = None
        self.W: torch.Tensor | None = None
        self.b: torch.Tensor | None = None

    def _site(self, adapter) -> str:
        L = adapter.num_layers("lm")
        if self.config.layer is not None:
            if not -L <= int(self.config.layer) < L:
                raise LayerRangeError(f"sae: layer {self.config.layer} out of range (0..{L - 1})")
            return f"blocks.{int(self.config.layer) % L}.resid"
        if self.sae is not None and getattr(self.sae, "vlinterp_meta", {}).get("site"):
            return self.sae.vlinterp_meta["site"]
        return f"blocks.{L // 2}.resid"

    def sites(self, adapter) -> list[str]:
        return [self.site or self._site(adapter)]

    def text_sites(self, adapter) -> list[str]:
        return []

    # --------------------------------------------------------------------- fit
    def fit(self, adapter, claims, progress: bool = False, values=None) -> "SAELogistic":
        """Load or train the SAE, then fit the probe on the labelled ``claims``."""
        from ..steering.probe import fit_logistic

        self.check(adapter)
        if not has_labels(claims):
            raise DataError("sae: the probe needs labelled fit claims (meta['hallucinated'])")
        y = labels(claims)
        if y.all() or not y.any():
            raise DataError(f"sae: the fit claims need both hallucinated and grounded ones (got {int(y.sum())} of {len(y)})")
        if self.config.sae is not None:
            from ..sae.attach import load_sae

            self.sae = load_sae(self.config.sae)
            self.site = self._site(adapter)
        else:
            self.site = self._site(adapter)
            self.sae = self.train(adapter, claims, progress)
        d_in = int(self.sae.cfg.d_in)
        width = int(adapter.run(adapter.prepare(images=[claims[0].image], text=[claims[0].prompt]),
                                capture=[self.site]).cache[self.site].shape[-1])
        if d_in != width:
            raise ConfigError(f"sae: the SAE reads width {d_in}, but {self.site} is {width} wide")
        self.W = None
        X = torch.as_tensor(read_claims(adapter, claims, {self.name: self}, progress=progress,
                                        desc="sae: claim features")[self.name], dtype=torch.float32)
        keep = X.std(0) > 0  # features that never fire on the fit claims carry nothing
        self.keep = keep
        W, b = fit_logistic(X[:, keep], torch.as_tensor(y, dtype=torch.float32)[:, None], l2=self.config.l2)
        self.W, self.b = W, b
        self.meta.update(site=self.site, features=int(keep.sum()), fit_claims=len(claims), d_sae=int(self.sae.cfg.d_sae))
        return self

    def train(self, adapter, claims, progress: bool = False):
        """A TopK SAE on the image and text tokens of the fit claims (answers teacher-forced)."""
        from ..sae.store import ActivationStore
        from ..sae.train import train_sae

        items = [Item(c.image, c.prompt, _answer_text(c), c.objects, c.id, c.kind) for c in claims]
        store = ActivationStore.harvest(adapter, self.site, items, batch_size=16, tokens="content", progress=progress)
        c = self.config
        return train_sae(store, "topk", d_sae=c.d_sae, k=c.k, steps=c.steps, batch_size=256, image_fraction=0.5, seed=c.seed,
                         progress=progress)

    # ------------------------------------------------------------------- score
    @torch.no_grad()
    def features(self, run) -> torch.Tensor:
        """``[B, F]``: the claim tokens' mean features (and the image patches' max features)."""
        h = run.cache[self.site]
        dev = self.sae.W_dec.device
        out = []
        for r, p in enumerate(run.positions):
            f = self.sae.encode(h[r, p.to(h.device)].float().to(dev)).mean(0)
            if self.config.image:
                pos = torch.cat([q for q, _ in image_patches(run.batch.layout, r)])
                img = self.sae.encode(h[run.batch.layout.image_row(r), pos.to(h.device)].float().to(dev)).max(0).values
                f = torch.cat([f, img])
            out.append(f.float().cpu())
        return torch.stack(out)

    def read(self, run, text_run) -> np.ndarray:
        if self.sae is None:
            raise ConfigError("sae: fit the detector first (detector.fit(adapter, claims))")
        F = self.features(run)
        if self.W is None:  # fitting: the features themselves
            return F.numpy()
        z = F[:, self.keep] @ self.W.T + self.b
        return z.numpy()
