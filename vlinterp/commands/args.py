"""What every command's arguments share: the parser class (one-line errors, exit 2, defaults shown
in help), argument types that validate while parsing (before any model load or work), and the
flags that mean the same on every command.

One meaning per flag name across commands:

* ``--model M``: ``tiny:<family>``, a zoo organism or a local model path.
* ``--out DIR``: an output **directory** (new, empty, or an earlier vlinterp output; files the user
  put there survive). ``--json PATH``: a JSON **file** to write. ``--plot PATH``: a PNG file.
* ``--n N`` / ``--seed K``: how many items, and the seed that draws them.
* ``--dataset SPEC``: where the items come from. ``--workers N`` / ``--address A``: Ray scale-out.
* ``--dtype`` / ``--device``: how the model is loaded (on a CPU the default never picks fp16).
"""
from __future__ import annotations

import argparse
import os
import sys

from ..core.errors import UsageError, VlinterpError


class Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors (``vlinterp prune bench: error: ...``, exit 2) and every
    option's default in its help. Sub-parsers inherit the class."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*a, **kw)

    def error(self, message: str):  # noqa: D401 - argparse's hook
        print(f"{self.prog}: error: {message} (see '{self.prog} -h')", file=sys.stderr)
        raise SystemExit(2)


def _type(fn, name: str):
    """An argparse type from ``fn(text) -> value`` that raises VlinterpError/ValueError on bad input."""

    def parse(text):
        try:
            return fn(text)
        except (VlinterpError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = name  # argparse names the type in "invalid <name> value" messages
    return parse


# ------------------------------------------------------------------ numbers
def _int(text) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{text!r} is not an integer") from None


def _float(text) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise UsageError(f"{text!r} is not a finite number")
    return v


def _positive_int(text) -> int:
    v = _int(text)
    if v < 1:
        raise UsageError(f"{text} must be a positive integer")
    return v


def _nonneg_int(text) -> int:
    v = _int(text)
    if v < 0:
        raise UsageError(f"{text} must be 0 or more")
    return v


def _positive_float(text) -> float:
    v = _float(text)
    if v <= 0:
        raise UsageError(f"{text} must be greater than 0")
    return v


def _nonneg_float(text) -> float:
    v = _float(text)
    if v < 0:
        raise UsageError(f"{text} must be 0 or more")
    return v


def _ratio(text) -> float:
    v = _float(text)
    if not 0.0 <= v <= 1.0:
        raise UsageError(f"{text} is not a ratio in [0, 1]")
    return v


def _open_ratio(text) -> float:
    v = _float(text)
    if not 0.0 < v <= 1.0:
        raise UsageError(f"{text} is not a ratio in (0, 1]")
    return v


def _ratios(text) -> list[float]:
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError("give at least one ratio, e.g. 0.25,0.5")
    return [_ratio(p) for p in parts]


def _ints(text) -> list[int]:
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UsageError("give at least one integer, e.g. 0,1")
    return [_int(p) for p in parts]


positive_int = _type(_positive_int, "positive integer")
nonneg_int = _type(_nonneg_int, "non-negative integer")
integer = _type(_int, "integer")
number = _type(_float, "number")
positive_float = _type(_positive_float, "positive number")
nonneg_float = _type(_nonneg_float, "non-negative number")
ratio = _type(_ratio, "ratio")
open_ratio = _type(_open_ratio, "ratio")
ratios = _type(_ratios, "ratio list")
int_list = _type(_ints, "integer list")


def names_in(registry_or_names, what: str | None = None):
    """A comma-separated list of names, each checked against a registry (or a list of names):
    returns the list. ``what`` names the kind in messages (default: the registry's)."""

    def parse(text):
        known = list(registry_or_names)
        kind = what or getattr(registry_or_names, "kind", "name")
        out = [p.strip() for p in str(text).split(",") if p.strip()]
        if not out:
            raise UsageError(f"give at least one {kind}")
        for n in out:
            base = n.split("[")[0].split(":")[0]
            if base not in known:
                from ..core.errors import UnknownNameError

                raise UnknownNameError(kind, base, known)
        return out

    return _type(parse, "list")


# -------------------------------------------------------------------- paths
def _file(text) -> str:
    if not os.path.exists(text):
        raise UsageError(f"{text!r} does not exist")
    if os.path.isdir(text):
        raise UsageError(f"{text!r} is a directory, not a file")
    if not os.access(text, os.R_OK):
        raise UsageError(f"{text!r} is not readable")
    return text


def _dir(text) -> str:
    if not os.path.exists(text):
        raise UsageError(f"{text!r} does not exist")
    if not os.path.isdir(text):
        raise UsageError(f"{text!r} is not a directory")
    return text


def _image(text) -> str:
    from ..core.images import load_image

    _file(text)
    load_image(text, name=text)  # raises ImageError in our words (unreadable, 1x1 ...)
    return text


def _out_dir(text) -> str:
    from ..core.io import check_output_dir

    return check_output_dir(text, "")


def _out_file(suffixes: tuple[str, ...]):
    def parse(text) -> str:
        from ..core.io import check_output_file

        if suffixes and not str(text).lower().endswith(suffixes):
            raise UsageError(f"{text!r} should end in {' or '.join(suffixes)}")
        return check_output_file(text, "")

    return parse


def _device(text) -> str:
    import re

    t = str(text).strip().lower()
    if not re.fullmatch(r"cpu|mps|(cuda|xpu)(:\d+)?", t):
        raise UsageError(f"{text!r} is not a device (cpu, cuda, cuda:1, mps)")
    if t.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        k = int(t.split(":")[1]) if ":" in t else 0
        if k >= n:
            raise UsageError(f"{text!r}: this machine has {n} CUDA device(s)" + ("" if n else "; use --device cpu"))
    return t


existing_file = _type(_file, "file")
device = _type(_device, "device")
existing_dir = _type(_dir, "directory")
image_file = _type(_image, "image")
out_dir = _type(_out_dir, "directory")
json_file = _type(_out_file((".json",)), "JSON path")
png_file = _type(_out_file((".png",)), "PNG path")
npy_file = _type(_out_file((".npy",)), "NPY path")


def out_file(*suffixes: str):
    """An output file path with one of ``suffixes`` that vlinterp may write (see core.io)."""
    return _type(_out_file(tuple(suffixes)), "path")


# -------------------------------------------------------------- shared flags
def add_model(p, default: str | None = "shapes-llava", required: bool = False, help: str | None = None):
    p.add_argument("--model", default=None if required else default, required=required, metavar="M",
                   help=help or "tiny:<family>, a zoo organism or a local model directory")


def add_load_options(p):
    """``--dtype`` and ``--device``, for every command that loads a model."""
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights' dtype; auto: the checkpoint's, except that on a CPU fp16 becomes bf16")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1 ... (unset: the CPU)")


def add_n_seed(p, n: int, seed: int, what: str = "items"):
    p.add_argument("--n", type=positive_int, default=n, help=f"number of {what}")
    p.add_argument("--seed", type=integer, default=seed, help=f"seed that draws the {what}")


def add_workers(p):
    p.add_argument("--workers", type=positive_int, default=1, help="Ray workers, each with one model replica (needs vlinterp[scale])")
    p.add_argument("--address", default=None, help="an existing Ray cluster (ray://host:port or auto) instead of a local one")


def add_json(p, help: str = "also write the results as JSON to this file", required: bool = False):
    p.add_argument("--json", type=json_file, default=None, required=required, metavar="PATH", help=help)


def add_format(p, help: str = "what to print on stdout: text, or the result as JSON (--json PATH writes it to a file)"):
    p.add_argument("--format", choices=["text", "json"], default="text", help=help)


def add_out(p, help: str = "output directory (new, empty, or an earlier vlinterp output; your own files in it are kept)",
            required: bool = True):
    p.add_argument("--out", type=out_dir, required=required, default=None, metavar="DIR", help=help)


def load_kwargs(args) -> dict:
    """``vi.load`` keyword arguments from ``--dtype`` / ``--device`` (``auto`` / absent: none; ``vi.load``'s
    default is ``auto``: the checkpoint's dtype, fp16 -> bf16 on a CPU)."""
    kw = {}
    dtype = getattr(args, "dtype", None)
    if dtype and dtype != "auto":
        import torch

        kw["dtype"] = getattr(torch, dtype)
    if getattr(args, "device", None):
        kw["device"] = args.device
    return kw


__all__ = ["Parser", "positive_int", "nonneg_int", "integer", "number", "positive_float", "nonneg_float", "ratio",
           "open_ratio", "ratios", "int_list", "names_in", "existing_file", "existing_dir", "device", "image_file", "out_dir",
           "json_file", "png_file", "npy_file", "out_file", "add_model", "add_load_options", "add_n_seed", "add_workers",
           "add_json", "add_out", "load_kwargs"]
