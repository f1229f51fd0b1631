"""``shapes[:SPLIT[:N[:SEED[:KIND]]]]``: the procedural shapes world (:mod:`vlinterp.eval.shapes`).

The spec names the split (default ``test``), its number of scenes and its seed. Left out, ``N`` and
``SEED`` come from the command's ``--n`` / ``--seed`` (``items(n=, seed=)``): ``shapes`` with
``--n 64 --seed 11`` is split ``test`` of 64 scenes, seed 11, the items every command drew before
datasets had specs. Given in the spec, the split is fixed and ``n``/``seed`` sample from it like
from any file. Kinds: ``scene`` (scenes with all their questions in ``meta["questions"]``),
``presence`` (= ``pope-random``), ``pope-random|popular|adversarial``, ``colour``, ``colour-all``,
``count``, ``caption`` (see :data:`vlinterp.eval.shapes.ITEM_KINDS`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ...core.errors import ConfigError
from ...core.items import Item
from .. import shapes as world
from .base import Dataset, subsample

DEFAULT_N = 64


class ShapesDataset(Dataset):
    name = "shapes"
    kinds = tuple(world.ITEM_KINDS)
    positional = ("split", "n", "seed", "kind")

    @dataclass
    class Config:
        split: str = "test"
        n: int | None = None         # scenes in the split (None: the command's --n, else 64)
        seed: int | None = None      # the split's seed (None: the command's --seed, else 0)
        kind: str | None = None      # default item kind

        def validate(self):
            if not self.split:
                raise ConfigError("shapes: the split name is empty")
            if self.n is not None and self.n < 1:
                raise ConfigError(f"shapes: N must be a positive integer, got {self.n}")
            if self.kind is not None and self.kind not in world.ITEM_KINDS:
                raise ConfigError(f"shapes: unknown item kind {self.kind!r}; kinds: {', '.join(world.ITEM_KINDS)}")

    @classmethod
    def spec_parts(cls, parts: list[str]) -> tuple[list[str], dict[str, str]]:
        """``SPLIT[:N[:SEED]][:KIND]``: an item kind may follow the split or any number (the older
        spellings ``shapes:SPLIT:KIND`` and ``shapes:SPLIT:N:SEED:KIND`` read the same)."""
        extra = {}
        if len(parts) > 1 and parts[-1] in world.ITEM_KINDS and len(parts) <= len(cls.positional):
            parts, extra = parts[:-1], {"kind": parts[-1]}
        if len(parts) <= len(cls.positional) - 1:
            for p in parts[1:]:
                if p.strip() and not p.strip().lstrip("-").isdigit():
                    from ...core.errors import UnknownNameError

                    raise UnknownNameError("shapes item kind", p, list(world.ITEM_KINDS))
        return parts, extra

    def _open(self) -> None:
        self.config = self.config or self.Config()
        self._cache: dict[tuple, list[Item]] = {}

    def describe(self) -> str:
        c = self.config
        return self.spec or f"shapes:{c.split}" + (f":{c.n}" if c.n else "") + (f":{c.seed}" if c.seed is not None else "")

    def resolved(self, n: int | None, seed: int | None) -> str:
        """``shapes:SPLIT:N:SEED`` of the split a request with ``n`` / ``seed`` reads (the spec's own
        N and SEED when it has them)."""
        scenes, sseed, _, _ = self._split(n, seed)
        return f"shapes:{self.config.split}:{scenes}:{sseed}"

    def split_items(self, kind: str, n: int, seed: int) -> list[Item]:
        """Every item of ``kind`` on ``n`` scenes of the split with ``seed`` (cached)."""
        key = (kind, n, seed)
        if key not in self._cache:
            self._cache[key] = world.ITEM_KINDS[kind](self.config.split, n, seed)
        return self._cache[key]

    def _split(self, n, seed) -> tuple[int, int, int | None, int | None]:
        """``(scenes, split seed, n to take, seed to sample)`` for a request."""
        c = self.config
        if c.n is None:  # the request's n/seed define the split
            return (n or DEFAULT_N), (c.seed if c.seed is not None else (seed if seed is not None else 0)), None, None
        return c.n, (c.seed if c.seed is not None else 0), n, seed

    def _records(self, kind: str):
        scenes, sseed, _, _ = self._split(None, None)
        return self.split_items(kind, scenes, sseed)

    def _load(self, record, kind: str) -> Item:
        return record

    def size(self, kind: str | None = None) -> int:
        return len(self._records(self.check_kind(kind)))

    def iter(self, kind: str | None = None, n: int | None = None, seed: int | None = None) -> Iterator[Item]:
        k = self.check_kind(kind)
        if n is None and self.take is not None:
            n, seed = self.take, self.take_seed
        scenes, sseed, take, tseed = self._split(n, seed)
        recs = self.split_items(k, scenes, sseed)
        for i in subsample(len(recs), take, tseed):
            yield recs[i]


__all__ = ["ShapesDataset", "DEFAULT_N"]
