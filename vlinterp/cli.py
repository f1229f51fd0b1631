"""The ``vlinterp`` command line: a thin layer over the Python API.

Subcommands register in ``COMMANDS`` (name -> (help, add_arguments, run)); heavy libraries
are imported only inside the command that needs them, so ``vlinterp --help`` stays fast.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

COMMANDS: dict[str, tuple[str, Callable, Callable]] = {}


def register(name: str, help: str, add_args: Callable, run: Callable) -> None:
    """Add a subcommand: ``add_args(parser)`` declares its options, ``run(args) -> int`` does it."""
    COMMANDS[name] = (help, add_args, run)


def _load_commands() -> None:
    """Import the command modules; each calls :func:`register` for its subcommands."""
    from .commands import ask, audit, bench, explain, info, protos, prune, sae, steer, trace, zoo  # noqa: F401


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    p = argparse.ArgumentParser(prog="vlinterp", description="Look inside vision-language models.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, (help_, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, description=help_))
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from .core.errors import VlinterpError

    try:
        return COMMANDS[args.cmd][2](args) or 0
    except VlinterpError as e:
        print(f"vlinterp {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # run as a script: use the importable module so commands register there
    from vlinterp.cli import main as _main

    sys.exit(_main())
