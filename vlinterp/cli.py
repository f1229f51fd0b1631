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
    from .commands import ask, audit, bench, data, detect, explain, info, protos, prune, sae, serve, steer, trace, zoo  # noqa: F401


def build_parser() -> argparse.ArgumentParser:
    from .commands.args import Parser

    _load_commands()
    p = Parser(prog="vlinterp", description="Look inside vision-language models.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", title="commands")
    for name, (help_, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, description=help_))
    return p


def _prog(args) -> str:
    """``vlinterp sae train``: the command and its sub-command, for error lines."""
    words = ["vlinterp", args.cmd]
    sub = next((v for k, v in vars(args).items() if k.endswith("_cmd") and isinstance(v, str)), None)
    return " ".join(words + ([sub] if sub else []))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .core.errors import VlinterpError

    try:
        args = build_parser().parse_args(argv)
    except VlinterpError as e:  # an argument type that raised our error directly
        print(f"vlinterp: error: {e}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.cmd][2](args) or 0
    except VlinterpError as e:
        print(f"{_prog(args)}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{_prog(args)}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # run as a script: use the importable module so commands register there
    from vlinterp.cli import main as _main

    sys.exit(_main())
