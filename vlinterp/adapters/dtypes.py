"""Which dtype a model loads in: ``dtype="auto"`` resolved from the checkpoint, never fp16 on a CPU.

``vi.load(path, dtype=...)`` takes a ``torch.dtype``, one of the names ``"float32"``,
``"bfloat16"``, ``"float16"`` (``"fp32"``/``"bf16"``/``"fp16"`` too), ``"auto"`` or ``None``
(= ``"auto"``). ``"auto"`` is the dtype the checkpoint stores (``config.json``'s ``dtype`` /
``torch_dtype``, else the floating dtype holding most elements in its safetensors weights), except
that fp16 becomes bf16 when the model goes to a CPU: published configs (llava-hf: ``float16``) would
otherwise make every CPU run 4-40x slower than bf16. An explicit dtype is always honoured.

:func:`resolve_dtype` returns ``None`` when the checkpoint says nothing; loaders then keep their
library's default (fp32).
"""
from __future__ import annotations

import glob
import json
import os
import struct

import torch

from ..core.errors import ConfigError

NAMES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
         "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
CHOICES = ("auto", "float32", "bfloat16", "float16")
_SAFETENSORS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def parse_dtype(dtype):
    """``torch.dtype`` / name / ``"auto"`` / ``None`` -> a floating ``torch.dtype`` or ``"auto"``
    (``None`` is ``"auto"``); :class:`ConfigError` for anything else."""
    if dtype is None or (isinstance(dtype, str) and dtype.strip().lower() == "auto"):
        return "auto"
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating dtype, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.strip().lower().removeprefix("torch.") in NAMES:
        return NAMES[dtype.strip().lower().removeprefix("torch.")]
    raise ConfigError(f"unknown dtype {dtype!r}; one of {', '.join(CHOICES)} (or a torch dtype)")


def on_cpu(device) -> bool:
    """True when ``device`` (``None`` = the loaders' default) is the CPU."""
    return device is None or torch.device(device).type == "cpu"


def _config_dtype(cfg: dict):
    for key in ("dtype", "torch_dtype"):
        v = cfg.get(key)
        if isinstance(v, str) and v.removeprefix("torch.") in NAMES:
            return NAMES[v.removeprefix("torch.")]
    for sub in ("text_config", "vision_config"):
        if isinstance(cfg.get(sub), dict):
            got = _config_dtype(cfg[sub])
            if got is not None:
                return got
    return None


def safetensors_dtype(path: str):
    """The floating dtype holding most elements in a ``.safetensors`` file (read from its header
    only), or ``None``."""
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error):
        return None
    count: dict = {}
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        dt = _SAFETENSORS.get(info.get("dtype"))
        if dt is not None:
            size = 1
            for s in info.get("shape", []):
                size *= int(s)
            count[dt] = count.get(dt, 0) + size
    return max(count, key=count.get) if count else None


def _weights_dtype(d: str):
    files = sorted(glob.glob(os.path.join(d, "*.safetensors")))
    return safetensors_dtype(files[0]) if files else None


def stored_dtype(path) -> torch.dtype | None:
    """The dtype a checkpoint directory (or file) stores, or ``None`` when it does not say.

    HF directories: ``config.json``'s ``dtype`` / ``torch_dtype`` (top level, else the text or
    vision config's), else the weights; diffusers pipelines (``model_index.json``): the UNet's
    weights (else its config), the largest part; open_clip / timm directories: their weights."""
    p = os.fspath(path)
    if os.path.isfile(p):
        return safetensors_dtype(p) if p.endswith(".safetensors") else None
    if os.path.isfile(os.path.join(p, "model_index.json")):
        for part in ("unet", "transformer", "text_encoder"):
            d = os.path.join(p, part)
            got = _weights_dtype(d) if os.path.isdir(d) else None
            if got is None and os.path.isfile(os.path.join(d, "config.json")):
                got = _read_config(os.path.join(d, "config.json"))
            if got is not None:
                return got
        return None
    cfg = os.path.join(p, "config.json")
    if os.path.isfile(cfg) and not os.path.isfile(os.path.join(p, "open_clip_config.json")):
        got = _read_config(cfg)
        if got is not None:
            return got
    return _weights_dtype(p)


def _read_config(path: str):
    try:
        with open(path) as f:
            return _config_dtype(json.load(f))
    except (OSError, ValueError):
        return None


def resolve_dtype(dtype, path=None, device=None) -> torch.dtype | None:
    """The dtype to load ``path`` with on ``device``: an explicit dtype as given; ``"auto"`` /
    ``None``: :func:`stored_dtype` with fp16 -> bf16 on a CPU, or ``None`` when unknown (the
    library's default)."""
    dt = parse_dtype(dtype)
    if dt != "auto":
        return dt
    got = stored_dtype(path) if path is not None else None
    if got == torch.float16 and on_cpu(device):
        return torch.bfloat16
    return got


def uniform(model: torch.nn.Module, dtype: torch.dtype | None, device=None) -> torch.nn.Module:
    """Move ``model`` to ``device`` and, with a ``dtype``, cast every floating parameter and buffer
    to it (no mixed precision left behind)."""
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


_MATMUL = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.MultiheadAttention)


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype ``model``'s matrices compute in: the floating dtype holding most elements of its
    linear / convolution / attention-projection weights (under a mixed-precision load, norms and
    embeddings stay fp32 and are not counted), else of all its parameters; float32 for none."""
    count: dict = {}
    for m in model.modules():
        if isinstance(m, _MATMUL):
            for p in m.parameters(recurse=False):
                if p.is_floating_point() and p.dim() > 1:
                    count[p.dtype] = count.get(p.dtype, 0) + p.numel()
    if not count:
        for p in model.parameters():
            if p.is_floating_point():
                count[p.dtype] = count.get(p.dtype, 0) + p.numel()
    return max(count, key=count.get) if count else torch.float32


__all__ = ["parse_dtype", "resolve_dtype", "stored_dtype", "safetensors_dtype", "uniform", "model_dtype", "on_cpu", "CHOICES"]
