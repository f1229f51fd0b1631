"""Activation store: harvest one adapter site over a dataset, with per-token modality, image grid
position, token id and sample id, in memory or streamed to disk as safetensors shards.

On disk a store is a directory with ``manifest.json`` and ``shard_00000.safetensors``, ...; each
shard holds whole samples, is written to a temp file and renamed, and the manifest (rewritten
atomically after every shard) lists only finished shards. A killed harvest, started again on the
same directory, drops anything not in the manifest and continues at the first sample no shard
holds: no duplicated and no lost rows.

Row tensors (``N`` = tokens kept): ``acts`` ``[N, D]``, ``modality`` ``[N]`` (int8, the layout's
codes: image 2, text 1, special 3...), ``row``/``col`` ``[N]`` (int16, patch grid position; -1
off the image), ``token`` ``[N]`` (int32 token id; -1 for image patches), ``sample`` ``[N]``
(int64 dataset index), ``position`` ``[N]`` (int32 sequence position).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.errors import LoadError, PromptError, ShapeMismatchError
from ..core.layout import IMAGE, PAD, TEXT
from ..zoo.common import write_json_atomic

FIELDS = ("acts", "modality", "row", "col", "token", "sample", "position")
MANIFEST = "manifest.json"


def _save_shard(path: str, rows: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in rows.items()}, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def rows_from_batch(adapter, batch, site: str, sample_ids: Sequence[int], keep: str = "all",
                    dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Run ``batch`` capturing ``site`` and return the row tensors of the kept tokens
    (``keep``: ``all`` non-padding tokens, ``content`` = image patches and text tokens without
    specials (BOS, role markers, image newlines), ``image``, ``text``, or ``answer`` = image patches
    and the teacher-forced answer's tokens: an image-caption pair without the instruction around it)."""
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
            raise PromptError("keep='answer' needs (image, text, answer) items: this batch has no answers")
        ans = np.zeros_like(mask)
        for r in range(mask.shape[0]):
            ans[r, lay.span("answer", r).numpy()] = True
        mask &= (mod == IMAGE) | (ans & (mod == TEXT))
    elif keep != "all":
        raise ValueError(f"keep must be all, content, image, text or answer, got {keep!r}")
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
    """Rows of one site (see the module doc). ``meta``: site, model, d, samples, keep..."""

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
                shard_samples: int = 256, keep: str = "all", dtype=torch.float32, progress: bool = True,
                stop_after: int | None = None, dataset: str | None = None) -> "ActivationStore":
        """Harvest ``site`` over ``items`` (sequence of ``(image or None, text[, answer])``; sample id =
        index). With ``out_dir``: shards of ``shard_samples`` samples, resumable; without: in
        memory. ``stop_after``: stop after that many new shards (to test resuming); ``dataset``:
        the items' spec (:func:`items_from_spec`), kept in the manifest."""
        if site not in adapter.site_table:
            from ..core.errors import UnknownSiteError

            raise UnknownSiteError(site, adapter.site_table.keys())
        meta = {"site": site, "model": adapter.name, "family": adapter.family, "keep": keep, "n_items": len(items),
                "dtype": str(dtype).replace("torch.", ""), "shards": [], "samples_done": 0, "dataset": dataset}
        start = 0
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            mpath = os.path.join(out_dir, MANIFEST)
            if os.path.exists(mpath):
                with open(mpath) as f:
                    old = json.load(f)
                for k in ("site", "model", "keep", "n_items", "dtype"):
                    if old.get(k) != meta[k]:
                        raise LoadError(f"{out_dir} holds a harvest with {k}={old.get(k)!r}, not {meta[k]!r}; use another directory")
                meta = old
                start = int(old["samples_done"])
            listed = {s["file"] for s in meta["shards"]}
            for f in os.listdir(out_dir):  # leftovers of a killed run
                if (f.startswith("shard_") and f not in listed) or f.startswith(".tmp-"):
                    os.remove(os.path.join(out_dir, f))
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
            write_json_atomic(os.path.join(out_dir, MANIFEST), meta)
            pending = []

        i = start
        with torch.no_grad():
            while i < len(items):
                chunk = list(range(i, min(i + batch_size, len(items))))
                if out_dir is not None:  # never split a shard boundary inside a batch
                    boundary = (i // shard_samples + 1) * shard_samples
                    chunk = [j for j in chunk if j < boundary]
                b = _prepare(adapter, [items[j] for j in chunk])
                r = rows_from_batch(adapter, b, site, chunk, keep, dtype)
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
            write_json_atomic(os.path.join(out_dir, MANIFEST), meta)
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
        parts = [load_file(os.path.join(path, s["file"])) for s in meta["shards"]]
        return cls(_cat(parts), meta)


def _prepare(adapter, items):
    """``(image or None, text[, answer])`` items -> one batch (LLaVA: the answer follows the
    prompt as the assistant's turn)."""
    imgs = [it[0] for it in items]
    texts = [it[1] for it in items]
    kw = {"answer": [it[2] for it in items]} if adapter.kind == "vlm" and all(len(it) > 2 for it in items) else {}
    if adapter.kind in ("vit",):
        return adapter.prepare(images=imgs)
    if all(im is None for im in imgs):
        return adapter.prepare(text=texts, **kw)
    if any(im is None for im in imgs):
        raise ShapeMismatchError("a harvest batch mixes items with and without images; keep them in separate datasets")
    return adapter.prepare(images=imgs, text=texts, **kw)


def shapes_items(split: str = "sae", n: int = 512, seed: int = 0, kind: str = "caption") -> list:
    """``(image, text, answer)`` items from the shapes world: ``caption`` (``describe the image.``
    answered by the scene's caption, so text tokens name the colours and shapes), ``question``
    (POPE presence questions with their answers, half yes, half no) or ``mixed`` (alternating;
    the questions' negatives adversarial). Sample ``i`` shows scene ``i`` of the split."""
    from ..data.questions import caption
    from ..data.shapes import make_split

    from ..data.questions import pope_split

    if kind == "caption":
        return [(s.pil(), "describe the image.", caption(s)) for s in make_split(split, n, seed)]
    if kind == "question":
        return [(s.pil(), qa.question, qa.answer) for s, qa in pope_split(split, n, seed, "random")]
    if kind == "mixed":  # even samples captions, odd samples presence questions (POPE-style)
        qs = pope_split(split, n, seed, "adversarial")
        return [(s.pil(), "describe the image.", caption(s)) if i % 2 == 0 else (s.pil(), qa.question, qa.answer)
                for i, (s, qa) in enumerate(qs)]
    raise ValueError(f"kind must be caption, question or mixed, got {kind!r}")


def items_from_spec(spec: str) -> list:
    """Dataset items from a spec string (recorded in a store's manifest so dashboards can find
    the images again): ``shapes:SPLIT:N[:SEED[:KIND]]`` (:func:`shapes_items`) or
    ``jsonl:PATH`` (one ``{"image": path or null, "text": ..., "answer": ...}`` per line)."""
    from ..core.errors import PromptError

    kind, _, rest = spec.partition(":")
    if kind == "shapes":
        parts = rest.split(":")
        if len(parts) < 2:
            raise PromptError(f"dataset spec {spec!r}: expected shapes:SPLIT:N[:SEED[:KIND]]")
        return shapes_items(parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else 0,
                            parts[3] if len(parts) > 3 else "caption")
    if kind == "jsonl":
        from ..data.jsonl import read_jsonl

        return [(img, d["text"], d["answer"]) if d.get("answer") is not None else (img, d["text"])
                for d, img in read_jsonl(rest, ("text",))]
    raise PromptError(f"unknown dataset spec {spec!r}: shapes:SPLIT:N[:SEED[:KIND]] or jsonl:PATH")


__all__ = ["ActivationStore", "rows_from_batch", "shapes_items", "items_from_spec", "FIELDS"]
