"""The ``dehazeddpm`` command line.

Each sub-command lives beside the code it drives: a module in ``_COMMAND_MODULES`` defines
``register_cli(subparsers)``, which adds its parsers and sets ``func`` to a handler taking the
parsed arguments and returning an exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

_COMMAND_MODULES = (
    "dehazeddpm.weights",   # download, info
    "dehazeddpm.commands",  # dehaze, eval
    "dehazeddpm.train",     # train
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dehazeddpm",
        description="DehazeDDPM: two-stage single-image dehazing (physics-aware net + diffusion).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name != name:
                raise
            continue
        module.register_cli(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
