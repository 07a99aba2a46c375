"""The ``dehazeddpm`` command line: ``download``, ``info``, ``dehaze``, ``eval`` and ``train``.

Layer: cli, the top. The only package that imports argparse; each command is a module with a
``register(subparsers)`` that adds its parser and sets ``func`` to a handler taking the parsed
arguments and returning an exit code. A user error is one ``error:`` line and a non-zero code.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Optional, Sequence

from . import dehaze, evaluate, hub, train
from .common import CommandError, say_error

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dehazeddpm",
        description="DehazeDDPM: two-stage single-image dehazing (physics-aware net + diffusion).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (hub, dehaze, evaluate, train):
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"dehazeddpm {args.command}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = one_line
        try:
            return int(args.func(args) or 0)
        except CommandError as exc:
            say_error(args.command, str(exc))
            return exc.code
        except (ValueError, OSError, RuntimeError) as exc:  # the package's expected errors: weights,
            # checkpoints, images, broken models, files; each says what went wrong in its message
            say_error(args.command, f"{exc}")
            return 1
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
