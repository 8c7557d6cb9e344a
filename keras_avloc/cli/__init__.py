"""The `avloc` command line: one module per subcommand, each exposing `register(subparsers)`.

Subcommand modules import TensorFlow lazily (inside their run functions) so `avloc --help` is instant.
"""

import argparse
import importlib
import os
import sys
import warnings

from keras_avloc import __version__

SUBCOMMAND_MODULES = [
    "info",
    "port_weights",
    "download",
    "data",
    "train",
    "evaluate",
    "localize",
    "demo",
]


class ExampleFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-wrapped examples in each subcommand's epilog."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="avloc",
        description="keras-avloc: audio-visual sound-source localisation in Keras 3.",
        formatter_class=ExampleFormatter,
        epilog="Examples:\n  avloc info\n  avloc demo\n  avloc train --help",
    )
    parser.add_argument("--version", action="version", version=f"keras-avloc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"keras_avloc.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the CLI
    # Keras warns about every finite tf.data epoch and about its own default shuffle flag: noise for our users.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    warnings.filterwarnings("ignore", message=".*shuffle=True. was passed")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("\nInterrupted. Finished work is kept; re-run the same command to resume.", file=sys.stderr)
        return 130
    except CliError as err:
        print(f"avloc {args.command}: error: {err}", file=sys.stderr)
        return 2


class CliError(Exception):
    """An error whose message tells the user what is wrong and how to fix it (no traceback)."""


if __name__ == "__main__":
    sys.exit(main())
