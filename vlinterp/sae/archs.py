"""SAE architectures: one registry, :data:`SAE_ARCHS`, of thin entries over SAELens's training
classes, each with a dataclass ``Config`` of the options vlinterp exposes (``d_sae`` and the
architecture's own: ``k`` for the top-k kinds, ``l1`` for the ReLU-L1 ``standard`` SAE).

>>> SAE_ARCHS.create("topk", d_sae=512, k=32).build(d_in=128, seed=0)   # a SAELens TopKTrainingSAE
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ConfigError
from ..core.registry import Registry

SAE_ARCHS = Registry("SAE architecture", {
    "topk": "vlinterp.sae.archs:TopK",
    "batchtopk": "vlinterp.sae.archs:BatchTopK",
    "standard": "vlinterp.sae.archs:Standard",
    "jumprelu": "vlinterp.sae.archs:JumpReLU",
    "matryoshka": "vlinterp.sae.archs:Matryoshka",
})


class SAEArch:
    """An architecture: ``build(d_in, seed)`` makes a fresh SAELens training SAE from ``config``."""

    name = "base"
    training = cfg_class = ""  # SAELens class names

    @dataclass
    class Config:
        d_sae: int = 1024

        def validate(self) -> None:
            if self.d_sae < 1:
                raise ConfigError(f"d_sae must be >= 1, got {self.d_sae}")

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()
        self.config.validate()

    def options(self) -> dict:
        """SAELens config keywords beyond ``d_in`` / ``d_sae``."""
        return {}

    def build(self, d_in: int, seed: int = 0, **extra):
        import sae_lens
        import torch

        cls, cfg_cls = getattr(sae_lens, self.training), getattr(sae_lens, self.cfg_class)
        kw = {"d_in": int(d_in), "d_sae": int(self.config.d_sae), "dtype": "float32", "device": "cpu", **self.options(), **extra}
        torch.manual_seed(seed)
        return cls(cfg_cls(**kw))


class _TopKish(SAEArch):
    @dataclass
    class Config(SAEArch.Config):
        k: int = 16

        def validate(self) -> None:
            super().validate()
            if not 1 <= self.k <= self.d_sae:
                raise ConfigError(f"k must be in 1..d_sae ({self.d_sae}), got {self.k}")

    def options(self) -> dict:
        # the input scaling is folded into the weights after training; that is exact only when the
        # top-k choice does not rescale by decoder norms
        return {"k": int(self.config.k), "rescale_acts_by_decoder_norm": False}


class TopK(_TopKish):
    name, training, cfg_class = "topk", "TopKTrainingSAE", "TopKTrainingSAEConfig"


class BatchTopK(_TopKish):
    """Top-k over the whole batch in training; saved (and returned by ``train_sae``) as the JumpReLU
    SAE with the learned threshold that SAELens infers with."""

    name, training, cfg_class = "batchtopk", "BatchTopKTrainingSAE", "BatchTopKTrainingSAEConfig"


class Matryoshka(_TopKish):
    name, training, cfg_class = "matryoshka", "MatryoshkaBatchTopKTrainingSAE", "MatryoshkaBatchTopKTrainingSAEConfig"

    def options(self) -> dict:
        d = self.config.d_sae
        return {**super().options(), "matryoshka_widths": [d // 4, d // 2, d]}


class Standard(SAEArch):
    """ReLU SAE with an L1 sparsity penalty of ``l1``."""

    name, training, cfg_class = "standard", "StandardTrainingSAE", "StandardTrainingSAEConfig"

    @dataclass
    class Config(SAEArch.Config):
        l1: float = 5.0

        def validate(self) -> None:
            super().validate()
            if self.l1 < 0:
                raise ConfigError(f"l1 must be >= 0, got {self.l1}")

    def options(self) -> dict:
        return {"l1_coefficient": float(self.config.l1)}


class JumpReLU(SAEArch):
    name, training, cfg_class = "jumprelu", "JumpReLUTrainingSAE", "JumpReLUTrainingSAEConfig"


def arch_config(arch: str, d_sae: int, k: int = 16, l1: float = 5.0):
    """The ``Config`` of ``arch`` from the generic options (those it does not take are dropped)."""
    opts = {"d_sae": d_sae, "k": k, "l1": l1}
    return SAE_ARCHS.config(arch, **{n: v for n, v in opts.items() if n in SAE_ARCHS.options(arch)})


__all__ = ["SAE_ARCHS", "SAEArch", "TopK", "BatchTopK", "Matryoshka", "Standard", "JumpReLU", "arch_config"]
