"""Activation store: harvest one adapter site over a dataset, with per-token modality, image grid
position, token id and sample id, in memory or streamed to disk as safetensors shards.

On disk a store is a directory with ``manifest.json`` and ``shard_00000.safetensors``, ...; each
shard holds whole samples, is written to a temp file and renamed (:mod:`vlinterp.core.io`, so the
directory's ``.vlinterp-manifest.json`` knows what vlinterp wrote), and the manifest (rewritten
atomically after every shard) lists only finished shards. A killed harvest, started again on the
same directory, drops the shards it wrote that the manifest does not list and continues at the
first sample no shard holds: no duplicated and no lost rows. Files vlinterp did not write are never
removed or replaced.

Items are :class:`~vlinterp.core.items.Item` (image or ``None``, ``prompt``, optional ``answer``:
with answers on every item of a LLaVA batch, the answer follows the prompt as the assistant's turn).

Row tensors (``N`` = tokens kept): ``acts`` ``[N, D]``, ``modality`` ``[N]`` (int8, the layout's
codes: image 2, text 1, special 3...), ``row``/``col`` ``[N]`` (int16, patch grid position; -1
off the image), ``token`` ``[N]`` (int32 token id; -1 for image patches), ``sample`` ``[N]``
(int64 dataset index), ``position`` ``[N]`` (int32 sequence position).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import ConfigError, LoadError, OutputError, PromptError, ShapeMismatchError
from ..core.io import atomic_path, write_json, written_by_vlinterp
from ..core.layout import IMAGE, PAD, TEXT

FIELDS = ("acts", "modality", "row", "col", "token", "sample", "position")
MANIFEST = "manifest.json"
TOKENS = ("all", "content", "image", "text", "answer")


def _save_shard(path: str, rows: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in rows.items()}, tmp)


def _drop_leftovers(out_dir: str, listed: set[str]) -> None:
    """Remove what a killed run of ours left: shards it wrote that the manifest does not list, and
    temp files of its writes (``.tmp-*`` holding a shard or the manifest: ``.safetensors``,
    ``.json``). Anything else is the user's and stays (a stray shard name is refused)."""
    for f in os.listdir(out_dir):
        path = os.path.join(out_dir, f)
        if f.startswith(".tmp-") and (".safetensors" in f or f.endswith(".json")) and os.path.isfile(path):
            os.remove(path)
        elif f.startswith("shard_") and f not in listed:
            if not written_by_vlinterp(path):
                raise OutputError(f"{out_dir}: {f} is not a shard this store lists and was not written by vlinterp; move it away")
            os.remove(path)


def _tokens(tokens: str | None, keep: str | None) -> str:
    """The token filter (``keep=`` is its earlier name)."""
    t = tokens if tokens is not None else (keep if keep is not None else "all")
    if t not in TOKENS:
        raise ConfigError(f"tokens must be one of {', '.join(TOKENS)}, got {t!r}")
    return t


def rows_from_batch(adapter, batch, site: str, sample_ids: Sequence[int], tokens: str = "all",
                    dtype=torch.float32, keep: str | None = None) -> dict[str, torch.Tensor]:
    """Run ``batch`` capturing ``site`` and return the row tensors of the chosen tokens
    (``tokens``: ``all`` non-padding tokens, ``content`` = image patches and text tokens without
    specials (BOS, role markers, image newlines), ``image``, ``text``, or ``answer`` = image patches
    and the teacher-forced answer's tokens: an image-caption pair without the instruction around it)."""
    keep = _tokens(tokens if keep is None else keep, None)
    stream = adapter.site_table[site].stream
    out = adapter.run(batch, capture=[site])
    a = out.cache[site]
    lay = batch.layouts[stream]
    if a.dim() != 3 or tuple(a.shape[:2]) != tuple(lay.shape):
        raise ShapeMismatchError(f"site {site!r} gives {tuple(a.shape)}, expected [rows, tokens, D] over the {stream} layout {lay.shape}")
    mod = np.asarray(lay.modality)
    mask = mod != PAD
    if keep == "image":
        mask &= mod == IMAGE
    elif keep == "text":
        mask &= (mod != IMAGE)
    elif keep == "content":
        mask &= (mod == IMAGE) | (mod == TEXT)
    elif keep == "answer":
        if "answer" not in lay.spans:
            raise PromptError("tokens='answer' needs items with answers: this batch has none")
        ans = np.zeros_like(mask)
        for r in range(mask.shape[0]):
            ans[r, lay.span("answer", r).numpy()] = True
        mask &= (mod == IMAGE) | (ans & (mod == TEXT))
    R, T = mask.shape
    row = np.full((R, T), -1, np.int16)
    col = np.full((R, T), -1, np.int16)
    for i, g in enumerate(lay.images):
        pos = lay.image_positions(i).numpy()
        rows, cols = g.tiles[0].grid
        k = np.arange(len(pos)) % (rows * cols)
        row[g.batch_row, pos] = k // cols
        col[g.batch_row, pos] = k % cols
    ids = batch.inputs.get("input_ids") if stream == "lm" else None
    token = np.full((R, T), -1, np.int32)
    if isinstance(ids, torch.Tensor) and tuple(ids.shape) == (R, T):
        token = np.where(mod == IMAGE, -1, ids.cpu().numpy()).astype(np.int32)
    sample = np.broadcast_to(np.asarray(sample_ids, np.int64)[:, None], (R, T))
    position = np.broadcast_to(np.arange(T, dtype=np.int32)[None, :], (R, T))
    mk = torch.as_tensor(mask)
    return {"acts": a[mk.to(a.device)].detach().to("cpu", dtype),
            "modality": torch.as_tensor(mod[mask].astype(np.int8)), "row": torch.as_tensor(row[mask]),
            "col": torch.as_tensor(col[mask]), "token": torch.as_tensor(token[mask]),
            "sample": torch.as_tensor(np.ascontiguousarray(sample[mask])),
            "position": torch.as_tensor(np.ascontiguousarray(position[mask]))}


def _cat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in FIELDS} if parts else {}


@dataclass
class ActivationStore:
    """Rows of one site (see the module doc). ``meta``: site, model, d, samples, tokens..."""

    rows: dict[str, torch.Tensor]
    meta: dict

    def __len__(self) -> int:
        return int(self.rows["acts"].shape[0]) if self.rows else 0

    @property
    def d(self) -> int:
        return int(self.rows["acts"].shape[1])

    @property
    def acts(self) -> torch.Tensor:
        return self.rows["acts"]

    def where(self, modality: str) -> torch.Tensor:
        """Row indices of ``image`` or ``text`` (every non-image) tokens."""
        m = self.rows["modality"]
        return torch.nonzero(m == IMAGE if modality == "image" else m != IMAGE)[:, 0]

    # ---------------------------------------------------------------- harvest
    @classmethod
    def harvest(cls, adapter, site: str, items: Sequence, out_dir: str | None = None, batch_size: int = 16,
                shard_samples: int = 256, tokens: str | None = None, dtype=torch.float32, progress: bool = True,
                stop_after: int | None = None, dataset: str | None = None, keep: str | None = None) -> "ActivationStore":
        """Harvest ``site`` over ``items`` (:class:`~vlinterp.core.items.Item`; sample id = index) keeping
        the ``tokens`` rows (see :func:`rows_from_batch`; ``keep=`` is its earlier name). With
        ``out_dir``: shards of ``shard_samples`` samples, resumable; without: in memory.
        ``stop_after``: stop after that many new shards (to test resuming); ``dataset``: the items'
        spec (:func:`vlinterp.eval.sae_data.items_from_spec`), kept in the manifest."""
        tokens = _tokens(tokens, keep)
        if site not in adapter.site_table:
            from ..core.errors import UnknownSiteError

            raise UnknownSiteError(site, adapter.site_table.keys())
        meta = {"site": site, "model": adapter.name, "family": adapter.family, "tokens": tokens, "n_items": len(items),
                "dtype": str(dtype).replace("torch.", ""), "shards": [], "samples_done": 0, "dataset": dataset}
        start = 0
        if out_dir is not None:
            meta, start = resume_manifest(out_dir, meta, ("site", "model", "tokens", "n_items", "dtype"))
        parts, pending, new_shards = [], [], 0
        bar = tqdm(total=len(items), initial=start, desc=f"harvest {site}", disable=not progress)

        def flush():
            nonlocal pending
            if out_dir is None or not pending:
                return
            rows = _cat(pending)
            name = f"shard_{len(meta['shards']):05d}.safetensors"
            _save_shard(os.path.join(out_dir, name), rows)
            first, last = int(rows["sample"].min()), int(rows["sample"].max())
            meta["shards"].append({"file": name, "rows": int(rows["acts"].shape[0]), "samples": [first, last]})
            meta["samples_done"] = last + 1
            meta["d"] = int(rows["acts"].shape[1])
            write_json(os.path.join(out_dir, MANIFEST), meta)
            pending = []

        i = start
        with torch.no_grad():
            while i < len(items):
                chunk = list(range(i, min(i + batch_size, len(items))))
                if out_dir is not None:  # never split a shard boundary inside a batch
                    boundary = (i // shard_samples + 1) * shard_samples
                    chunk = [j for j in chunk if j < boundary]
                b = _prepare(adapter, [items[j] for j in chunk])
                r = rows_from_batch(adapter, b, site, chunk, tokens, dtype)
                if not torch.isfinite(r["acts"]).all():
                    from ..core.errors import NaNError

                    raise NaNError(f"non-finite activations at {site} for samples {chunk[0]}..{chunk[-1]}")
                (pending if out_dir is not None else parts).append(r)
                i = chunk[-1] + 1
                bar.update(len(chunk))
                if out_dir is not None and (i % shard_samples == 0 or i == len(items)):
                    flush()
                    new_shards += 1
                    if stop_after is not None and new_shards >= stop_after and i < len(items):
                        bar.close()
                        return cls.open(out_dir)
        bar.close()
        if out_dir is not None:
            meta["complete"] = True
            write_json(os.path.join(out_dir, MANIFEST), meta)
            return cls.open(out_dir)
        rows = _cat(parts)
        meta.update({"samples_done": len(items), "complete": True, "d": int(rows["acts"].shape[1]) if rows else 0})
        return cls(rows, meta)

    @classmethod
    def open(cls, path: str) -> "ActivationStore":
        """Load the finished shards of a store directory."""
        from safetensors.torch import load_file

        mpath = os.path.join(path, MANIFEST)
        if not os.path.exists(mpath):
            raise LoadError(f"{path} is not an activation store (no {MANIFEST})")
        with open(mpath) as f:
            meta = json.load(f)
        if "tokens" not in meta and "keep" in meta:  # stores written before the rename
            meta["tokens"] = meta["keep"]
        parts = [load_file(os.path.join(path, s["file"])) for s in meta["shards"]]
        return cls(_cat(parts), meta)


def resume_manifest(out_dir: str, meta: dict, same: tuple[str, ...]) -> tuple[dict, int]:
    """``(meta, first sample to harvest)`` for a harvest into ``out_dir``: a new directory starts at
    0; an earlier harvest with the same ``same`` fields continues where it stopped (its unlisted
    shards and temp files removed); another harvest there is refused (:class:`LoadError`)."""
    os.makedirs(out_dir, exist_ok=True)
    mpath = os.path.join(out_dir, MANIFEST)
    start = 0
    if os.path.exists(mpath):
        with open(mpath) as f:
            old = json.load(f)
        old.setdefault("tokens", old.get("keep"))
        for k in same:
            if old.get(k) != meta[k]:
                raise LoadError(f"{out_dir} holds a harvest with {k}={old.get(k)!r}, not {meta[k]!r}; use another directory")
        meta, start = old, int(old["samples_done"])
    _drop_leftovers(out_dir, {s["file"] for s in meta["shards"]})
    return meta, start


def _prepare(adapter, items):
    """Items -> one batch (LLaVA: with answers on every item, the answer follows the prompt as the
    assistant's turn)."""
    imgs = [it.image for it in items]
    texts = [it.prompt for it in items]
    kw = {"answer": [it.answer for it in items]} if adapter.kind == "vlm" and all(it.answer is not None for it in items) else {}
    if adapter.kind in ("vit",):
        return adapter.prepare(images=imgs)
    if all(im is None for im in imgs):
        return adapter.prepare(text=texts, **kw)
    if any(im is None for im in imgs):
        raise ShapeMismatchError("a harvest batch mixes items with and without images; keep them in separate datasets")
    return adapter.prepare(images=imgs, text=texts, **kw)


__all__ = ["ActivationStore", "rows_from_batch", "resume_manifest", "FIELDS", "TOKENS", "MANIFEST"]
