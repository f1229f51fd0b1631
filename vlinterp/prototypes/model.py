"""A trained prototype model: the frozen backbone's site, the head, the push record (source image
crops and cells), firing thresholds and the linear-probe baseline; saved as safetensors + JSON and
bound to its backbone by a parameter fingerprint."""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from ..core.errors import BackboneMismatchError, LoadError
from .features import cell_box, crop, fingerprint, patch_features
from .head import ProtoHead


class ProtoModel:
    def __init__(self, adapter, site: str, head: ProtoHead, classes: list[str], sources: dict | None = None,
                 thresholds: torch.Tensor | None = None, probe: torch.nn.Linear | None = None, info: dict | None = None):
        self.adapter, self.site, self.head, self.classes = adapter, site, head, list(classes)
        self.sources = sources or {}
        self.thresholds = thresholds
        self.probe = probe
        self.info = dict(info or {})

    # -------------------------------------------------------------- running
    def features(self, images, noise: float = 0.0, seed: int = 0):
        return patch_features(self.adapter, images, self.site, noise=noise, seed=seed)

    @torch.no_grad()
    def run(self, feats: torch.Tensor) -> dict:
        """Head outputs for features ``[n, R, C, D]`` (see :meth:`ProtoHead.forward`), in chunks."""
        outs = [self.head(feats[i:i + 256]) for i in range(0, len(feats), 256)]
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    def predict(self, images) -> torch.Tensor:
        """Class probabilities ``[n, K]``."""
        return torch.sigmoid(self.run(self.features(images).feats)["logits"])

    def fires(self, sim: torch.Tensor) -> torch.Tensor:
        """``[n, P]`` bool: similarity at or above each prototype's firing threshold."""
        return sim >= self.thresholds[None]

    # -------------------------------------------------------------- sources
    def record_sources(self, record: dict, images, pf) -> None:
        """Keep the push record with a crop of each source cell (``[P, 48, 48, 3]`` uint8) and, from a
        discriminative push, each source window's class AUROC (``[P]``)."""
        crops = []
        for j in range(self.head.n_prototypes):
            i = int(record["image"][j])
            r, c = record["cell"][j].tolist()
            crops.append(crop(images[i], cell_box(pf.boxes[i], pf.grid, r, c, int(record["scale"][j]))))
        self.sources = {"image": record["image"], "cell": record["cell"], "scale": record["scale"],
                        "crop": torch.from_numpy(np.stack(crops))}
        if "auroc" in record:  # discriminative push: how well the source window separates its class
            self.sources["auroc"] = record["auroc"].float()

    # -------------------------------------------------------------- save/load
    def save(self, out_dir: str) -> str:
        """Write ``prototypes.safetensors`` + ``prototypes.json`` as one output directory
        (:func:`vlinterp.core.io.output_dir`: files you put there stay)."""
        from safetensors.torch import save_file

        from ..core.io import output_dir, write_json

        tensors = {f"head.{k}": v.detach().contiguous() for k, v in self.head.state_dict().items()}
        tensors.update({f"sources.{k}": v.contiguous() for k, v in self.sources.items()})
        if self.thresholds is not None:
            tensors["thresholds"] = self.thresholds.contiguous()
        if self.probe is not None:
            tensors["probe.weight"], tensors["probe.bias"] = self.probe.weight.detach().contiguous(), self.probe.bias.detach().contiguous()
        cfg = {"format": "vlinterp-prototypes-1", "model": self.adapter.name, "site": self.site, "fingerprint": fingerprint(self.adapter),
               "classes": self.classes, "head": self.head.config(), "info": self.info}
        with output_dir(out_dir) as tmp:
            save_file(tensors, os.path.join(tmp, "prototypes.safetensors"))
            write_json(os.path.join(tmp, "prototypes.json"), cfg)
        return out_dir

    @classmethod
    def load(cls, path: str, adapter) -> "ProtoModel":
        """Load a saved model onto ``adapter``; raises :class:`BackboneMismatchError` when the
        adapter is not the backbone (or lacks the site) the head was trained on."""
        from safetensors.torch import load_file

        cfg_path = os.path.join(path, "prototypes.json")
        if not os.path.isfile(cfg_path):
            raise LoadError(f"{path}: no prototypes.json (not a saved prototype model)")
        with open(cfg_path) as f:
            cfg = json.load(f)
        if cfg.get("site") not in adapter.site_table:
            raise BackboneMismatchError(f"prototype head from {cfg.get('model')!r} at site {cfg.get('site')!r}: {adapter.name!r} has no such site")
        fp = fingerprint(adapter)
        if fp != cfg.get("fingerprint"):
            raise BackboneMismatchError(f"prototype head was trained on {cfg.get('model')!r} (fingerprint {cfg.get('fingerprint')}); "
                                        f"{adapter.name!r} is a different backbone (fingerprint {fp})")
        t = load_file(os.path.join(path, "prototypes.safetensors"))
        head = ProtoHead.from_config(cfg["head"])
        head.load_state_dict({k[5:]: v for k, v in t.items() if k.startswith("head.")})
        probe = None
        if "probe.weight" in t:
            probe = torch.nn.Linear(t["probe.weight"].shape[1], t["probe.weight"].shape[0])
            probe.load_state_dict({"weight": t["probe.weight"], "bias": t["probe.bias"]})
        sources = {k[8:]: v for k, v in t.items() if k.startswith("sources.")}
        return cls(adapter, cfg["site"], head, cfg["classes"], sources, t.get("thresholds"), probe, cfg.get("info"))


__all__ = ["ProtoModel"]
