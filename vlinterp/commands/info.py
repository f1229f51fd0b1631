"""`vlinterp info MODEL [--format json] [--json PATH]`: hook sites and the token layout of a sample input."""
from __future__ import annotations

import argparse
import json

from ..cli import register
from . import args as A


def _info_add(p: argparse.ArgumentParser):
    p.add_argument("model", help="tiny:<family>, a zoo organism name, or a local model directory")
    A.add_load_options(p)
    A.add_format(p)
    A.add_json(p, help="also write the description as JSON to this file")


def _info_run(args) -> int:
    import vlinterp as vi

    from ..adapters.describe import describe, describe_text
    from ..core.io import write_json

    info = describe(vi.load(args.model, **A.load_kwargs(args)), args.model)
    print(json.dumps(info, indent=2) if args.format == "json" else describe_text(info))
    if args.json:
        write_json(args.json, info, flag="--json")
    return 0


register("info", "hook sites and the token layout of a sample input", _info_add, _info_run)
